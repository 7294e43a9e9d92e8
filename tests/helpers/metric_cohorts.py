"""Small programmatic cohorts for the metric tests (no real data): `make_cohort` draws a seeded
cohort over a few variables, codes and phenotypes; `shift` moves its values, so two cohorts can
be alike or not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synehrgy_assets.core.cohort import StagedCohort

VARIABLES = ["heart_rate", "lactate", "temperature", "glucose", "gcs_total", "capillary_refill_rate"]
DIAGNOSES = [f"{400 + i:03d}{i % 10}" for i in range(60)]
PROCEDURES = [f"{3000 + 7 * i}" for i in range(20)]
PHENOTYPES = ["Septicemia (sepsis)", "Acute renal failure", "Shock", "Pneumonia", "Essential hypertension"]


def make_cohort(n_patients: int, seed: int, shift: float = 0.0, id_offset: int = 0) -> StagedCohort:
    """A toy hospital: a latent severity drives mortality, a 'sepsis' code, lactate and heart rate.

    `shift` moves the continuous measurements by `shift` real standard deviations.
    """
    rng = np.random.default_rng(seed)
    n_visits_per = rng.choice([1, 1, 1, 2, 3], size=n_patients)
    subject = np.repeat(np.arange(n_patients) + id_offset + 1, n_visits_per)
    n = len(subject)
    visit_index = np.concatenate([np.arange(k) for k in n_visits_per])
    icustay = np.arange(n) + id_offset * 10 + 1
    severity = rng.normal(size=n)
    los = np.exp(rng.normal(3.8, 0.6, size=n))
    intime = pd.Timestamp("2150-01-01") + pd.to_timedelta(rng.integers(0, 10_000, n) * 24 + visit_index * 2000, "h")
    prev = np.where(visit_index > 0, rng.exponential(900, n), np.nan)
    mortality = (rng.random(n) < 1 / (1 + np.exp(-(-2.2 + 1.6 * severity)))).astype(int)
    age = np.clip(rng.normal(65, 15, n), 18, 90)
    visits = pd.DataFrame({
        "subject_id": subject, "hadm_id": icustay + 500_000, "icustay_id": icustay, "visit_index": visit_index,
        "intime": intime, "outtime": intime + pd.to_timedelta(los, "h"), "los_hours": los,
        "hours_since_previous_visit": prev, "age_years": age, "age_is_capped": age >= 90,
        "gender": rng.choice(["M", "F"], n), "ethnicity_group": rng.choice(["WHITE", "BLACK", "HISPANIC", "ASIAN"], n),
        "insurance": rng.choice(["Medicare", "Private", "Medicaid"], n),
        "admission_type": rng.choice(["EMERGENCY", "ELECTIVE", "URGENT"], n, p=[0.7, 0.2, 0.1]),
        "first_careunit": rng.choice(["MICU", "SICU", "CCU", "CSRU", "TSICU"], n),
        "mortality_inhospital": mortality,
    })

    # Codes: Zipf-like background + a severity-driven sepsis diagnosis.
    weights_d = 1 / np.arange(1, len(DIAGNOSES) + 1)
    weights_p = 1 / np.arange(1, len(PROCEDURES) + 1)
    n_d, n_p = rng.poisson(6, n) + 1, rng.poisson(2, n)
    d_rows = np.repeat(np.arange(n), n_d)
    p_rows = np.repeat(np.arange(n), n_p)
    d_codes = rng.choice(DIAGNOSES, size=len(d_rows), p=weights_d / weights_d.sum())
    p_codes = rng.choice(PROCEDURES, size=len(p_rows), p=weights_p / weights_p.sum())
    septic = np.flatnonzero(rng.random(n) < 1 / (1 + np.exp(-(-1.5 + 2.0 * severity))))
    codes = pd.concat([
        pd.DataFrame({"row": d_rows, "code_type": "diagnosis", "icd9_code": d_codes}),
        pd.DataFrame({"row": septic, "code_type": "diagnosis", "icd9_code": "99591"}),
        pd.DataFrame({"row": p_rows, "code_type": "procedure", "icd9_code": p_codes}),
    ]).drop_duplicates(["row", "code_type", "icd9_code"])
    codes["seq_num"] = codes.groupby(["row", "code_type"]).cumcount() + 1
    codes["subject_id"], codes["icustay_id"] = subject[codes["row"]], icustay[codes["row"]]
    visit_codes = codes[["subject_id", "icustay_id", "code_type", "icd9_code", "seq_num"]].reset_index(drop=True)

    ph_rows, ph_idx = np.nonzero(rng.random((n, len(PHENOTYPES))) < np.array([0.3, 0.2, 0.1, 0.15, 0.4]))
    phenotypes = pd.DataFrame({"subject_id": subject[ph_rows], "icustay_id": icustay[ph_rows],
                               "phenotype": np.array(PHENOTYPES)[ph_idx]})

    # Hourly rows over the first min(los, 60) hours; each variable observed with its own probability.
    n_hours = np.minimum(np.ceil(los), 60).astype(int)
    rows = np.repeat(np.arange(n), n_hours)
    hours = np.concatenate([np.arange(k) for k in n_hours]) + rng.random(len(rows)) * 0.5
    sev = severity[rows]
    means = {"heart_rate": (85 + 12 * sev, 14.0), "lactate": (np.exp(0.4 + 0.35 * sev), 0.3),
             "temperature": (37 + 0.3 * sev, 0.5), "glucose": (130 + 15 * sev, 30.0)}
    observe = {"heart_rate": 0.9, "lactate": 0.15, "temperature": 0.3, "glucose": 0.2,
               "gcs_total": 0.25, "capillary_refill_rate": 0.05}
    parts = []
    for var, prob in observe.items():
        seen = rng.random(len(rows)) < prob
        r = rows[seen]
        if var in means:
            mean, sd = means[var]
            value = mean[seen] + rng.normal(0, sd, seen.sum()) + shift * sd * 2
            text = None
        elif var == "gcs_total":
            value = np.clip(np.round(14 - 2.5 * np.maximum(sev[seen], 0) + rng.normal(0, 1, seen.sum())), 3, 15)
            text = value.astype(int).astype(str)
        else:
            value = (rng.random(seen.sum()) < 0.2).astype(float)
            text = np.where(value > 0, "Abnormal", "Normal")
        parts.append(pd.DataFrame({"subject_id": subject[r], "icustay_id": icustay[r], "hours": hours[seen],
                                   "variable": var, "value": value, "value_text": text}))
    measurements = pd.concat(parts, ignore_index=True).sort_values(["icustay_id", "hours"], ignore_index=True)
    return StagedCohort(visits, visit_codes, phenotypes, measurements)
