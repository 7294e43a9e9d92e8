"""Gates measure on any dataset: one visit per patient, a fixed stay length and a variable with a
single value are measured (a KS against a constant is well defined), and a gate names every failing
quantity, also beside an unmeasured one."""

import math

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.metrics import evaluate
from synehrgy_assets.core.release_gates import GateThresholds, all_verdicts, marginal_gate, structure_gate


def cohort(n: int, seed: int, *, one_visit: bool, fixed_los: bool, constant_hr: bool, base_id: int = 0) -> StagedCohort:
    """n patients; every patient one visit (or 1-3), every stay 48 h (or 12-200 h), heart rate always
    80 (or 60-120), sodium-free: glucose varies."""
    rng = np.random.default_rng(seed)
    n_visits = np.ones(n, int) if one_visit else rng.integers(1, 4, n)
    subject = np.repeat(np.arange(base_id, base_id + n), n_visits)
    m = len(subject)
    icustay = np.arange(base_id * 10, base_id * 10 + m)
    visit_index = np.concatenate([np.arange(k) for k in n_visits])
    los = np.full(m, 48.0) if fixed_los else rng.uniform(12, 200, m)
    visits = pd.DataFrame({
        "subject_id": subject, "hadm_id": icustay + 10**6, "icustay_id": icustay, "visit_index": visit_index,
        "intime": pd.NaT, "outtime": pd.NaT, "los_hours": los,
        "hours_since_previous_visit": np.where(visit_index == 0, np.nan, 500.0),
        "age_years": rng.uniform(20, 90, m), "age_is_capped": False, "gender": rng.choice(["M", "F"], m),
        "ethnicity_group": "WHITE", "insurance": "Medicare", "admission_type": "EMERGENCY",
        "first_careunit": "MICU", "mortality_inhospital": (rng.random(m) < 0.3).astype(int)})
    codes = pd.DataFrame({"subject_id": subject, "icustay_id": icustay, "code_type": "diagnosis",
                          "icd9_code": rng.choice(["4019", "4280", "5849", "25000", "41401"], m), "seq_num": 1})
    hours = np.tile([1.0, 6.0, 12.0], m)
    stay = np.repeat(icustay, 3)
    hr = np.full(3 * m, 80.0) if constant_hr else rng.uniform(60, 120, 3 * m)
    measurements = pd.concat([
        pd.DataFrame({"subject_id": np.repeat(subject, 3), "icustay_id": stay, "hours": hours,
                      "variable": "heart_rate", "value": hr, "value_text": None}),
        pd.DataFrame({"subject_id": np.repeat(subject, 3), "icustay_id": stay, "hours": hours,
                      "variable": "glucose", "value": rng.uniform(80, 200, 3 * m), "value_text": None}),
    ], ignore_index=True)
    phenotypes = pd.DataFrame({"subject_id": pd.Series([], dtype="int64"),
                               "icustay_id": pd.Series([], dtype="int64"), "phenotype": pd.Series([], dtype=str)})
    return StagedCohort(visits, codes, phenotypes, measurements)


DEGENERATE = {"one visit per patient": dict(one_visit=True, fixed_los=False, constant_hr=False),
              "a fixed stay length": dict(one_visit=False, fixed_los=True, constant_hr=False),
              "a single value": dict(one_visit=False, fixed_los=False, constant_hr=True)}


def _evaluate(real_kind: dict, synthetic_kind: dict):
    train = cohort(200, 1, **real_kind)
    test = cohort(80, 2, **real_kind, base_id=10_000)
    synthetic = cohort(200, 3, **synthetic_kind, base_id=20_000)
    return evaluate(train, test, synthetic, variables=["heart_rate", "glucose"], seed=0)


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_a_degenerate_real_distribution_is_measured(case):
    kind = DEGENERATE[case]
    same = _evaluate(kind, kind)  # a synthetic cohort as degenerate as the real one
    varied = _evaluate(kind, dict(one_visit=False, fixed_los=False, constant_hr=False))
    t = GateThresholds()
    if case == "a single value":
        for report in (same, varied):
            row = report.tables["fidelity_marginals"].set_index("variable").loc["heart_rate"]
            assert math.isfinite(row["wasserstein_normalized"]) and row["scale_kind"] == "valid_range"
        judged = [marginal_gate(r.metrics, t, r.tables["fidelity_marginals"], r.tables["fidelity_baseline_marginals"])
                  for r in (same, varied)]
        assert judged[0].passed, judged[0].reason
        assert "share of 2 variables" in judged[1].rows[0]["quantity"]  # heart rate counted, not dropped
        assert judged[1].rows[0]["measured"] == 0.5 and not judged[1].passed
        return
    quantity = "visits_per_patient" if case == "one visit per patient" else "los_hours"
    for report in (same, varied):
        assert f"fidelity/structure/{quantity}_ks" in report.metrics, report.errors
        assert f"fidelity_baseline/structure/{quantity}_ks" in report.metrics
    assert same.metrics[f"fidelity/structure/{quantity}_ks"] == 0.0
    assert structure_gate(same.metrics, t).passed, structure_gate(same.metrics, t).reason
    verdict = structure_gate(varied.metrics, t)
    assert not verdict.passed and "not measured" not in verdict.reason
    assert verdict.reason.startswith(f"KS {quantity} ")


def test_a_failure_beside_an_unmeasured_quantity_is_named():
    """The structure record of a real ICU dataset: two quantities unmeasured and one measured
    failure; the verdict names all three."""
    m = {f"fidelity/structure/{q}_ks": 0.05 for q in ("visits_per_patient", "codes_per_visit",
                                                      "diagnoses_per_visit", "measurement_rows_per_visit", "los_hours")}
    m.update({k.replace("fidelity/", "fidelity_baseline/"): 0.05 for k in list(m)})
    m["fidelity/structure/measurement_rows_per_visit_ks"] = 0.134
    m["fidelity_baseline/structure/measurement_rows_per_visit_ks"] = 0.0655
    del m["fidelity/structure/visits_per_patient_ks"], m["fidelity/structure/los_hours_ks"]
    verdict = structure_gate(m, GateThresholds())
    assert not verdict.passed
    assert verdict.reason.startswith("KS measurement_rows_per_visit 0.134 (needs <= 0.131)")
    assert "not measured: KS visits_per_patient, KS los_hours" in verdict.reason


def test_every_gate_names_every_failing_quantity():
    """A gate with several quantities failing lists each, whatever the gate."""
    verdicts = {v.name: v for v in all_verdicts({
        "privacy/mia_auroc": 0.9, "privacy/codes_mia_auroc": 0.8, "privacy/domias_mia_auroc": 0.7})}
    reason = verdicts["privacy_membership_gate"].reason
    assert all(f"{label} MIA AUROC" in reason for label in ("distance (features)", "distance (code sets)",
                                                             "density ratio (DOMIAS)")), reason
