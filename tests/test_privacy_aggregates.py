"""k-anonymous aggregates (core/privacy_aggregates.py), the vocabulary and evaluation tables built
on them, and the leak scan that checks every stored number from the outside (tests/leak_scan.py).

The crafted cohorts hold one extreme patient: the rule before (each quantile the mean of 10 order
statistics, codes counted by rows) stores that patient's values; the k-anonymous one does not.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.metrics.fidelity import marginal_histograms, structure_stats
from synehrgy_assets.core.privacy_aggregates import (
    k_anonymous_quantiles,
    k_anonymous_range,
    merge_bins_to_patients,
)
from synehrgy_assets.core.tokens import TokenVocabulary, VocabularyConfig
from tests.leak_scan import (
    RealSample,
    histogram_dependencies,
    k_anonymity_leaks,
    real_samples,
    stored_number_dependencies,
    vocabulary_dependencies,
)
from tests.helpers.toy_cohort import synthetic_cohort

K = 10
LEVELS = np.linspace(0, 1, 11)


def old_rule(values: np.ndarray, levels, t: int = 10) -> list[float]:
    """The rule before: each quantile the mean of the t order statistics around its rank."""
    v = np.sort(values)
    start = np.clip(np.rint(np.asarray(levels) * (len(v) - 1) - (t - 1) / 2).astype(int), 0, len(v) - t)
    return [float(v[s:s + t].mean()) for s in start]


def one_extreme_patient(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """30 patients with 20 values around 50, and patient 999 with 40 values in the thousands."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([np.round(rng.normal(50, 8, 600), 1), np.round(rng.uniform(3000, 5000, 40), 1)])
    patients = np.concatenate([np.repeat(np.arange(30), 20), np.full(40, 999)])
    return values, patients


def test_old_rule_stores_one_patients_mean_new_rule_k_patients():
    values, patients = one_extreme_patient()
    real = RealSample(values, patients)
    top = old_rule(values, [1.0])[0]
    assert top == pytest.approx(np.sort(values[patients == 999])[-10:].mean())
    assert real.patients_behind(top)[0] == 1  # the scan sees it
    new = k_anonymous_quantiles(values, patients, LEVELS, k=K)
    assert all(np.diff(new) >= 0)
    behind = [real.patients_behind(x)[0] for x in new]
    assert min(behind) >= K, behind
    assert max(new) < 3000  # nothing of patient 999's range


@settings(max_examples=40, deadline=None)
@given(st.integers(10, 40), st.integers(1, 30), st.sampled_from([3, 5, 10]), st.integers(0, 10_000))
def test_each_quantile_depends_on_k_patients(n_patients, per_patient, k, seed):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), rng.integers(1, per_patient + 1, n_patients))
    scale = rng.choice([1.0, 1.0, 50.0], n_patients)[patients]  # some patients far out
    values = np.round(rng.normal(0, 1, len(patients)) * scale, 1)
    out = k_anonymous_quantiles(values, patients, LEVELS, k=k)
    if n_patients < k:
        assert out is None
        return
    rng_ = k_anonymous_range(values, patients, k)
    if out is None:
        assert rng_ is None
        return
    real = RealSample(values, patients)
    for x in out:
        n, why = real.patients_behind(x)
        assert n >= k, (x, n, why)
    assert np.all(np.diff(out) >= 0) and rng_[0] <= out[0] and out[-1] <= rng_[1]
    # Independent of the row order.
    order = rng.permutation(len(values))
    assert k_anonymous_quantiles(values[order], patients[order], LEVELS, k=k) == out


def test_too_few_patients_give_nothing_and_bad_input_is_named():
    values, patients = np.arange(90.0), np.repeat(np.arange(9), 10)
    assert k_anonymous_quantiles(values, patients, [0.5], k=10) is None
    assert k_anonymous_range(values, patients, k=10) is None
    with pytest.raises(ValueError, match="NaN"):
        k_anonymous_quantiles([1.0, np.nan], [1, 2], [0.5], k=1)
    with pytest.raises(ValueError, match="same length"):
        k_anonymous_quantiles([1.0, 2.0], [1], [0.5], k=1)
    with pytest.raises(ValueError, match="levels"):
        k_anonymous_quantiles([1.0, 2.0], [1, 2], [1.5], k=1)


def test_merged_bins_hold_k_patients_top_bin_included():
    values, patients = one_extreme_patient()
    order = np.lexsort((patients, values))
    v, p = values[order], patients[order]
    inner = merge_bins_to_patients(v, p, [40.0, 50.0, 60.0, 1000.0], K)
    assert 1000.0 not in inner  # the top bin held patient 999 alone
    bins = np.searchsorted(inner, v, side="right")
    assert min(len(set(p[bins == b])) for b in range(len(inner) + 1)) >= K


# ----------------------------------------------------------------------------------------------
# The vocabulary


@pytest.fixture(scope="module")
def crafted() -> StagedCohort:
    """300 synthetic patients, plus one patient with 40 extreme heart rates and code 'V440' in
    9 rows (the demo's cases)."""
    base = synthetic_cohort(300, seed=3)
    visits, codes, phen, meas = base.frames()
    one = visits.iloc[[0]].copy()
    sid, stay = 999_999, 999_999
    one[["subject_id", "icustay_id", "hadm_id"]] = [sid, stay, stay]
    one["visit_index"] = 0
    one["hours_since_previous_visit"] = np.nan
    rows = pd.DataFrame({"subject_id": sid, "icustay_id": stay, "hours": np.arange(40.0),
                         "variable": "heart_rate", "value": np.linspace(300.0, 340.0, 40), "value_text": None})
    v440 = pd.DataFrame({"subject_id": sid, "icustay_id": stay, "code_type": "diagnosis",
                         "icd9_code": "V440", "seq_num": np.arange(1, 10)})
    meas = pd.concat([meas, rows.astype(meas.dtypes.to_dict())], ignore_index=True)
    codes = pd.concat([codes, v440.astype(codes.dtypes.to_dict())], ignore_index=True)
    return StagedCohort(pd.concat([visits, one], ignore_index=True), codes, phen, meas)


@pytest.fixture(scope="module")
def warehouse(crafted, tmp_path_factory):
    """The crafted cohort as the marts of a warehouse, for the leak scan."""
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        for name, frame in zip(("visits", "visit_codes", "visit_phenotypes", "measurements"), crafted.frames()):
            con.register("f", frame)
            con.execute(f"create table main.{name} as select * from f")
            con.unregister("f")
    return path


def test_vocabulary_numbers_depend_on_k_patients_and_fail_with_k_1(crafted, warehouse):
    samples = real_samples(warehouse)
    new = TokenVocabulary.fit(crafted, VocabularyConfig())
    deps = vocabulary_dependencies(new.to_dict(), samples)
    assert len(deps) > 1000 and k_anonymity_leaks(deps) == []
    assert "V440" not in new.codes["diagnosis"]
    hr = new.variable("heart_rate").bins
    assert max(max(q) for q in hr.quantiles if q) < 300 and hr.edges[-2] < 300
    # min_patients=1 keeps the row rules alone: the extreme patient's values and code are stored.
    old = TokenVocabulary.fit(crafted, VocabularyConfig(min_patients=1))
    assert "V440" in old.codes["diagnosis"]
    leaks = k_anonymity_leaks(vocabulary_dependencies(old.to_dict(), samples))
    assert leaks and "on one" in leaks[0], leaks
    bad = vocabulary_dependencies(old.to_dict(), samples).set_index("what")["patients"]
    one = set(bad[bad <= 1].index)
    assert "diagnosis code V440" in one
    assert any(w.startswith("heart_rate bin") for w in one), sorted(one)[:10]


def test_format_1_vocabulary_is_refused_with_a_clear_error(crafted, tmp_path):
    content = TokenVocabulary.fit(crafted).to_dict()
    content["format"] = "synehrgy-token-vocabulary/1"
    path = tmp_path / "token_vocabulary.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="min_patients.*refit"):
        TokenVocabulary.from_json(path)


def test_leak_scan_fails_on_a_crafted_one_patient_value(crafted, warehouse, tmp_path):
    home = tmp_path / "home"
    logged = home / "mlartifacts" / "1" / "vocabulary"
    logged.mkdir(parents=True)
    content = TokenVocabulary.fit(crafted).to_dict()
    (logged / "token_vocabulary.json").write_text(json.dumps(content))
    assert k_anonymity_leaks(stored_number_dependencies(home, warehouse)) == []
    # One stored number: the mean of the extreme patient's 10 highest heart rates.
    extreme = float(np.linspace(300.0, 340.0, 40)[-10:].mean())
    var = next(v for v in content["variables"] if v["name"] == "heart_rate")
    q = next(q for q in reversed(var["bins"]["quantiles"]) if q)
    q[-1] = extreme
    (logged / "token_vocabulary.json").write_text(json.dumps(content))
    leaks = k_anonymity_leaks(stored_number_dependencies(home, warehouse))
    assert len(leaks) == 1 and "1 stored value(s)" in leaks[0] and f"{extreme:g}" in leaks[0], leaks
    # A code of one patient.
    content["codes"]["diagnosis"].append("V440")
    (logged / "token_vocabulary.json").write_text(json.dumps(content))
    deps = stored_number_dependencies(home, warehouse)
    assert deps.set_index("what").loc["diagnosis code V440", "patients"] == 1


# ----------------------------------------------------------------------------------------------
# Evaluation tables


def test_histogram_axes_and_bins_are_k_anonymous(crafted, warehouse):
    synthetic = synthetic_cohort(200, seed=4)
    hist = marginal_histograms(crafted, synthetic, ["heart_rate", "temperature"])
    deps = histogram_dependencies(hist, real_samples(warehouse))
    assert len(deps) > 4 and k_anonymity_leaks(deps) == []
    hr = hist[hist["variable"] == "heart_rate"]
    assert hr["right"].max() < 300
    # The rule before (the raw 99.5th percentile) ends the axis inside the extreme patient's values.
    values = crafted.measurements.query("variable == 'heart_rate'")
    before = hist.copy()
    end = float(np.quantile(values["value"].dropna(), 0.995))
    before.loc[before["variable"] == "heart_rate", "right"] = np.where(
        hr["bin"] == hr["bin"].max(), end, hr["right"])
    assert "heart_rate axis end" in " ".join(k_anonymity_leaks(histogram_dependencies(before, real_samples(warehouse))))


def test_structure_medians_are_no_one_patients_value():
    real = synthetic_cohort(60, seed=5)
    table = structure_stats(real, synthetic_cohort(60, seed=6)).set_index("quantity")
    los = RealSample(real.visits["los_hours"], real.visits["subject_id"])
    median = table.loc["los_hours", "median_real"]
    assert los.patients_behind(median)[0] >= 10
    plain = float(np.median(real.visits["los_hours"]))
    if len(real.visits) % 2:  # an odd count: the plain median is one visit's value
        assert los.patients_behind(plain)[0] < 10


def test_token_length_summary_is_no_patients_length():
    from synehrgy_assets.defs.tokens import _clipped_to_k_anonymous_range, _k_anonymous_median

    lengths = np.concatenate([np.arange(100, 1000, 30), [90_000]])  # one very long patient
    real = RealSample(lengths, np.arange(len(lengths)))
    assert real.patients_behind(_k_anonymous_median(lengths))[0] >= K
    clipped = _clipped_to_k_anonymous_range(lengths)
    assert min(real.patients_behind(x)[0] for x in (clipped.min(), clipped.max())) >= K
    assert _k_anonymous_median(lengths[:5]) is None and len(_clipped_to_k_anonymous_range(lengths[:5])) == 0
