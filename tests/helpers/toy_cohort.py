"""A random marts-shaped cohort (numpy only, seeded) and the value lists it draws from: the toy
data of the tokenizer, sampler, privacy and context tests and of the benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.tokens import load_variables

VARIABLES = load_variables()
CATEGORIES = {  # categorical variable -> (value_text, score) pairs used by the generator
    "capillary_refill_rate": [("Normal <3 secs", 0.0), ("Abnormal >3 secs", 1.0)],
    "gcs_eye_opening": [(f"{i} eye", float(i)) for i in range(1, 5)],
    "gcs_motor_response": [(f"{i} motor", float(i)) for i in range(1, 7)],
    "gcs_total": [(str(i), float(i)) for i in range(3, 16)],
    "gcs_verbal_response": [(f"{i} verbal", float(i)) for i in range(1, 6)],
}
GENDERS = np.array(["F", "M"], dtype=object)
ETHNICITIES = np.array(["WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER", "UNKNOWN"], dtype=object)
INSURANCES = np.array(["Medicare", "Private", "Medicaid", "Government", "Self Pay"], dtype=object)
ADMISSIONS = np.array(["EMERGENCY", "ELECTIVE", "URGENT"], dtype=object)
CAREUNITS = np.array(["MICU", "SICU", "CCU", "CSRU", "TSICU"], dtype=object)
PHENOTYPES = np.array([f"Phenotype {i:02d}" for i in range(25)], dtype=object)


def _strings(values: np.ndarray, codes: np.ndarray) -> pd.Series:
    """A text column like duckdb returns (arrow-backed str), built fast from codes."""
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                         pa.array(list(values), type=pa.string()))
    return pd.Series(pd.array(arr.cast(pa.large_string()), dtype="str"))


def synthetic_cohort(
    n_patients: int,
    seed: int = 0,
    min_visits: int = 1,
    max_visits: int = 3,
    rows_per_visit: int = 12,
    value_prob: float = 0.15,
    n_dx_codes: int = 300,
    n_px_codes: int = 80,
    codes_per_visit: int = 12,
) -> StagedCohort:
    """A random marts-shaped cohort, built with numpy only (no Python loop over rows)."""
    rng = np.random.default_rng(seed)
    n_visits_p = rng.integers(min_visits, max_visits + 1, n_patients)
    n_v = int(n_visits_p.sum())
    subject = np.repeat(np.arange(n_patients, dtype=np.int64) * 7 + 11, n_visits_p)
    first = np.ones(n_v, dtype=bool)
    first[1:] = subject[1:] != subject[:-1]
    visit_index = np.arange(n_v) - np.maximum.accumulate(np.where(first, np.arange(n_v), 0))
    icustay = 200000 + rng.permutation(n_v).astype(np.int64)  # not chronological, like MIMIC
    age = rng.uniform(15, 95, n_v)
    capped = age > 89.5
    age = np.where(capped, 90.0, age)
    gap = np.where(first, np.nan, rng.exponential(2000.0, n_v))
    visits = pd.DataFrame({
        "subject_id": subject, "hadm_id": icustay - 100000, "icustay_id": icustay,
        "visit_index": visit_index.astype(np.int32),
        "intime": pd.NaT, "outtime": pd.NaT, "admittime": pd.NaT, "dischtime": pd.NaT,
        "los_hours": rng.uniform(5, 400, n_v), "hours_since_previous_visit": gap,
        "age_years": age, "age_is_capped": capped,
        "gender": _strings(GENDERS, rng.integers(0, 2, n_v)),
        "ethnicity_group": _strings(ETHNICITIES, rng.integers(0, 6, n_v)),
        "insurance": _strings(INSURANCES, rng.integers(0, 5, n_v)),
        "admission_type": _strings(ADMISSIONS, rng.integers(0, 3, n_v)),
        "first_careunit": _strings(CAREUNITS, rng.integers(0, 5, n_v)),
        "icu_database": _strings(["carevue", "metavision"], rng.integers(0, 2, n_v)),
        "mortality_inhospital": rng.integers(0, 2, n_v).astype(np.int32),
    })
    # Codes: Zipf-like so that some are rare (UNK) and some frequent.
    n_codes = rng.integers(0, 2 * codes_per_visit, n_v)
    c_visit = np.repeat(np.arange(n_v), n_codes)
    is_px = rng.random(len(c_visit)) < 0.25
    pool = np.where(is_px, n_px_codes, n_dx_codes)
    code_num = np.minimum(rng.zipf(1.3, len(c_visit)) - 1, pool - 1)
    dx_names = np.array([f"{i:04d}" for i in range(n_dx_codes)], dtype=object)
    px_names = np.array([f"{i:04d}" for i in range(n_px_codes)], dtype=object)  # overlap dx names
    names = np.where(is_px, px_names[np.minimum(code_num, n_px_codes - 1)], dx_names[code_num])
    c_first = np.ones(len(c_visit), dtype=bool)
    c_first[1:] = c_visit[1:] != c_visit[:-1]
    seq = np.arange(len(c_visit)) - np.maximum.accumulate(np.where(c_first, np.arange(len(c_visit)), 0)) + 1
    codes = pd.DataFrame({
        "subject_id": subject[c_visit], "icustay_id": icustay[c_visit],
        "code_type": np.where(is_px, "procedure", "diagnosis").astype(object),
        "icd9_code": names, "seq_num": seq.astype(np.int64),
    })
    # Phenotypes: each visit has each phenotype with probability 0.12.
    ph_v, ph_k = np.nonzero(rng.random((n_v, len(PHENOTYPES))) < 0.12)
    phenos = pd.DataFrame({"subject_id": subject[ph_v], "icustay_id": icustay[ph_v],
                           "phenotype": PHENOTYPES[ph_k]})
    # Measurements: rows at irregular hours, each variable present with probability value_prob.
    n_rows_v = rng.integers(0, 2 * rows_per_visit + 1, n_v)
    r_visit = np.repeat(np.arange(n_v), n_rows_v)
    step = np.where(rng.random(len(r_visit)) < 0.6, 1.0, rng.exponential(2.0, len(r_visit)))
    r_first = np.ones(len(r_visit), dtype=bool)
    r_first[1:] = r_visit[1:] != r_visit[:-1]
    csum = np.cumsum(step)
    start = np.maximum.accumulate(np.where(r_first, np.arange(len(r_visit)), 0))
    r_hours = csum - csum[start] + rng.uniform(-0.5, 3.0, n_v)[r_visit]
    names_sorted = VARIABLES["variable"].to_numpy()
    m_row, m_var = [], []
    for a in range(0, len(r_visit), 100_000):  # chunks keep the random matrix small
        rows, cols = np.nonzero(rng.random((min(100_000, len(r_visit) - a), len(names_sorted)),
                                           dtype=np.float32) < value_prob)
        m_row.append(rows + a)
        m_var.append(cols)
    m_row, m_var = np.concatenate(m_row), np.concatenate(m_var)
    low = VARIABLES["valid_low"].to_numpy()[m_var]
    high = VARIABLES["valid_high"].to_numpy()[m_var]
    center = low + (high - low) * 0.1
    value = np.clip(center + rng.normal(0, 1, len(m_var)) * (high - low) * 0.03, low, high)
    value = np.round(value, 2)
    text_codes = np.full(len(m_var), -1, dtype=np.int64)
    text_values: list[str] = []
    for name, cats in CATEGORIES.items():
        j = int(np.flatnonzero(names_sorted == name)[0])
        rows = np.flatnonzero(m_var == j)
        pick = rng.integers(0, len(cats), len(rows))
        value[rows] = np.array([s for _, s in cats])[pick]
        text_codes[rows] = len(text_values) + pick
        text_values.extend(t for t, _ in cats)
    text_arr = pa.DictionaryArray.from_arrays(
        pa.array(text_codes.astype(np.int32), mask=text_codes < 0), pa.array(text_values))
    measurements = pd.DataFrame({
        "subject_id": subject[r_visit][m_row], "icustay_id": icustay[r_visit][m_row],
        "hours": r_hours[m_row], "variable": _strings(names_sorted, m_var),
        "value": value,
        "value_text": pd.Series(pd.array(text_arr.cast(pa.large_string()), dtype="str")),
    })
    # The marts loader's order: subject, icustay, hours, variable.
    measurements = measurements.sort_values(["subject_id", "icustay_id", "hours", "variable"],
                                            kind="stable").reset_index(drop=True)
    return StagedCohort(visits, codes, phenos, measurements)
