"""The utility panel (core/metrics/utility.py): task labels, bootstrap intervals over real test
patients, the utility gate that decides on the interval, and the real test share of the split."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.metrics import (
    GATED_TASKS,
    MIN_GATE_POSITIVES,
    bootstrap_weights,
    choose_test_fraction,
    evaluate,
    los_labels,
    phenotype_labels,
    prepare_cohort,
    utility_gate_rows,
    weighted_auroc,
)
from synehrgy_assets.core.release_gates import GateThresholds, utility_gate
from tests.helpers.metric_cohorts import VARIABLES, make_cohort


@pytest.fixture(scope="module")
def cohorts() -> dict[str, StagedCohort]:
    return {"train": make_cohort(400, seed=1), "test": make_cohort(400, seed=2, id_offset=100_000),
            "independent": make_cohort(400, seed=3, id_offset=200_000)}


def _evaluate(train, test, synthetic, **kwargs):
    return evaluate(train, test, synthetic, VARIABLES, seed=0, top_k_codes=50, n_threads=1, strict=True,
                    n_resamples=100, **kwargs)


@pytest.fixture(scope="module")
def report(cohorts):
    return _evaluate(cohorts["train"], cohorts["test"], cohorts["independent"])


# ---------------------------------------------------------------- labels


def test_los_labels_threshold_and_eligibility():
    visits = pd.DataFrame({"los_hours": [10.0, 30.0, 72.0, 72.5, 168.0, 200.0]})
    cohort = StagedCohort(visits, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    y3, eligible = los_labels(cohort, 3, min_hours=30.0)
    assert y3.tolist() == [0, 0, 0, 1, 1, 1]  # strictly over 72 h
    assert eligible.tolist() == [False, True, True, True, True, True]  # window 24 h + gap 6 h
    y7, _ = los_labels(cohort, 7, min_hours=30.0)
    assert y7.tolist() == [0, 0, 0, 0, 0, 1]
    bad = StagedCohort(pd.DataFrame({"los_hours": [5.0, -1.0]}), *(pd.DataFrame(),) * 3)
    with pytest.raises(ValueError, match="'visits' column 'los_hours' has 1 negative"):
        los_labels(bad, 3, 30.0, "real_test")


def test_phenotype_labels_are_the_visit_phenotypes(cohorts):
    prep = prepare_cohort(cohorts["test"], "real_test")
    names = ["Shock", "Pneumonia", "Not in this cohort"]
    y = phenotype_labels(prep, names)
    assert y.shape == (prep.n_visits, 3) and y[:, 2].sum() == 0
    ph = cohorts["test"].visit_phenotypes
    shocked = set(ph.loc[ph["phenotype"] == "Shock", "icustay_id"])
    assert set(prep.index[y[:, 0] == 1]) == shocked


def test_mortality_task_matches_the_utility_keys(report):
    m = report.metrics
    assert m["utility_panel/mortality_inhospital/trtr_auroc"] == pytest.approx(m["utility/trtr_auroc"])
    assert m["utility_panel/mortality_inhospital/auroc_ratio"] == pytest.approx(m["utility/auroc_ratio"])


# ---------------------------------------------------------------- the interval


def test_weighted_auroc_is_the_auroc_with_ties_and_replicated_cases():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    score = np.round(rng.normal(size=300) + y, 1)  # many ties
    assert weighted_auroc(y, score)[0] == pytest.approx(roc_auc_score(y, score))
    w = rng.integers(0, 3, size=(4, 300)).astype(float)
    for row in w:
        rep = np.repeat(np.arange(300), row.astype(int))
        assert weighted_auroc(y, score, row)[0] == pytest.approx(roc_auc_score(y[rep], score[rep]))
    assert np.isnan(weighted_auroc(np.zeros(5), np.arange(5.0))[0])  # one class: undefined


def test_bootstrap_resamples_patients_not_visits():
    subjects = np.array([1, 1, 2, 3, 3, 3, 4])
    w = bootstrap_weights(subjects, 50, seed=0)
    assert w.shape == (50, 7)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()  # a patient's visits move together
    first = w[:, [0, 2, 3, 6]]  # one column per patient: each resample draws 4 patients
    assert (first.sum(axis=1) == 4).all()
    assert (bootstrap_weights(subjects, 50, seed=0) == w).all() and (bootstrap_weights(subjects, 50, seed=1) != w).any()


def test_panel_intervals_contain_the_estimate_and_shrink_with_the_test_size(cohorts, report):
    m = report.metrics
    for task in ("mortality_inhospital", "los_gt_3d", "phenotypes_macro"):
        lo, point, hi = (m[f"utility_panel/{task}/auroc_ratio{s}"] for s in ("_ci_low", "", "_ci_high"))
        assert lo < point < hi, task
        assert m[f"utility_panel/{task}/gated"] == 1.0
    assert m["utility_panel/mortality_inhospital/n_test_positive"] >= MIN_GATE_POSITIVES
    table = report.tables["utility_panel"]
    assert {"mortality_inhospital", "los_gt_3d", "los_gt_7d", "phenotypes_macro", "decompensation_48h"} <= set(
        table["task"])
    assert "no time of death" in table.set_index("task").loc["decompensation_48h", "note"]
    # A quarter of the test patients: a wider mortality interval.
    test = cohorts["test"]
    small = test.subset(test.visits["subject_id"].drop_duplicates().iloc[::4])
    smaller = _evaluate(cohorts["train"], small, cohorts["independent"]).metrics

    def width(metrics):
        return (metrics["utility_panel/mortality_inhospital/trtr_auroc_ci_high"]
                - metrics["utility_panel/mortality_inhospital/trtr_auroc_ci_low"])
    assert width(smaller) > 1.4 * width(m)


def test_a_task_on_fewer_than_10_real_cases_has_no_figure(cohorts):
    test = cohorts["test"]
    visits = test.visits.copy()
    dead = np.flatnonzero(visits["mortality_inhospital"].to_numpy() == 1)
    visits.loc[dead[8:], "mortality_inhospital"] = 0  # 8 deaths left among the real test visits
    rep = _evaluate(cohorts["train"], StagedCohort(visits, *test.frames()[1:]), cohorts["independent"])
    task = {k: v for k, v in rep.metrics.items() if k.startswith("utility_panel/mortality_inhospital/")}
    assert task == {"utility_panel/mortality_inhospital/gated": 0.0}
    assert "fewer than 10" in rep.errors["utility_panel/mortality_inhospital/auroc_ratio"]
    row = rep.tables["utility_panel"].set_index("task").loc["mortality_inhospital"]
    assert np.isnan(row["n_test_positive"]) and np.isnan(row["trtr_auroc"])
    rows, notes = utility_gate_rows(rep.metrics, 0.85)
    assert any(n.startswith("mortality_inhospital not gated: n positives < 30 (fewer than 10") for n in notes)


# ---------------------------------------------------------------- the gate


def _panel(ratio: float, low: float, high: float, gated: float = 1.0, n_pos: float = 41.0) -> dict:
    out = {}
    for task in GATED_TASKS:
        out.update({f"utility_panel/{task}/gated": 1.0, f"utility_panel/{task}/auroc_ratio": 0.97,
                    f"utility_panel/{task}/trtr_auroc_ci_low": 0.7,
                    f"utility_panel/{task}/auroc_ratio_ci_low": 0.9, f"utility_panel/{task}/auroc_ratio_ci_high": 1.04,
                    f"utility_panel/{task}/n_test_positive": 200.0, f"utility_panel/{task}/n_test_negative": 600.0})
    out.update({"utility_panel/mortality_inhospital/gated": gated,
                "utility_panel/mortality_inhospital/auroc_ratio": ratio,
                "utility_panel/mortality_inhospital/auroc_ratio_ci_low": low,
                "utility_panel/mortality_inhospital/auroc_ratio_ci_high": high,
                "utility_panel/mortality_inhospital/n_test_positive": n_pos})
    return out


def test_the_gate_decides_on_the_interval_not_the_point_estimate():
    t = GateThresholds()  # min_auroc_ratio 0.85
    # The same point estimate, 0.80, below the threshold: a wide interval reaching 0.85 passes
    # (13 deaths cannot tell 0.80 from 0.90), a narrow one that stays below fails.
    wide = utility_gate(_panel(0.80, 0.62, 0.93), t)
    assert wide.passed, wide.reason
    narrow = utility_gate(_panel(0.80, 0.76, 0.84), t)
    assert not narrow.passed
    assert "mortality_inhospital: TSTR / TRTR AUROC, upper 95 % bound 0.84 (needs >= 0.85)" in narrow.reason
    row = next(r for r in narrow.rows if r["quantity"].startswith("mortality"))
    assert row["point"] == 0.80 and row["ci_low"] == 0.76 and not row["ok"]
    # A legacy point estimate of 0.80 would have failed both.
    assert not utility_gate({"utility/auroc_ratio": 0.80}, t).passed


def test_a_task_with_too_few_positives_is_reported_not_gated():
    t = GateThresholds()
    verdict = utility_gate(_panel(0.5, 0.3, 0.7, gated=0.0, n_pos=12.0), t)
    assert verdict.passed
    assert "mortality_inhospital not gated: n positives < 30 (12 positive / 600 negative" in verdict.reason
    assert all(not r["quantity"].startswith("mortality") for r in verdict.rows)
    # Nothing gated at all: passes, and says so rather than deciding.
    none = {k: (0.0 if k.endswith("/gated") else v) for k, v in _panel(0.5, 0.3, 0.7).items()}
    verdict = utility_gate(none, t)
    assert verdict.passed and verdict.rows == [] and verdict.reason.count("not gated") == len(GATED_TASKS)


def test_a_task_real_data_cannot_predict_is_not_gated():
    # Real train predicts the stay's length no better than chance on this test set: a TSTR/TRTR
    # of 0.70 [0.55, 0.80] is a ratio of two coin flips, reported but not decided on.
    m = {**_panel(0.97, 0.9, 1.04), "utility_panel/los_gt_3d/auroc_ratio": 0.70,
         "utility_panel/los_gt_3d/auroc_ratio_ci_low": 0.55, "utility_panel/los_gt_3d/auroc_ratio_ci_high": 0.80}
    assert not utility_gate(m, GateThresholds()).passed  # with a real signal it fails
    verdict = utility_gate({**m, "utility_panel/los_gt_3d/trtr_auroc_ci_low": 0.46}, GateThresholds())
    assert verdict.passed and "los_gt_3d not gated: real data does not predict it" in verdict.reason
    assert all(not r["quantity"].startswith("los_gt_3d") for r in verdict.rows)


def test_a_gated_task_without_an_interval_fails_as_not_measured():
    m = _panel(0.9, 0.8, 1.0)
    del m["utility_panel/mortality_inhospital/auroc_ratio_ci_high"]
    verdict = utility_gate(m, GateThresholds())
    assert not verdict.passed and verdict.reason.startswith("not measured")


def test_the_gate_fails_synthetic_data_whose_outcome_is_noise(cohorts, report):
    assert utility_gate(report.metrics, GateThresholds()).passed
    syn = cohorts["independent"]
    shuffled = syn.visits.assign(mortality_inhospital=np.random.default_rng(0).permutation(
        syn.visits["mortality_inhospital"].to_numpy()))
    bad = _evaluate(cohorts["train"], cohorts["test"], StagedCohort(shuffled, *syn.frames()[1:]))
    verdict = utility_gate(bad.metrics, GateThresholds())
    assert not verdict.passed and "mortality_inhospital" in verdict.reason, verdict.reason
    assert bad.metrics["utility_panel/mortality_inhospital/auroc_ratio_ci_high"] < 0.85


# ---------------------------------------------------------------- the split size


def test_the_default_test_share_holds_30_deaths_where_the_data_has_them():
    # README command 1's hospital: 1,000 patients, about 134 deaths: the 10 % default expects 13.
    share, why = choose_test_fraction(1000, 134, 0.1, 0.35)
    assert share == pytest.approx((30 + 2 * math.sqrt(30)) / 134) and 0.30 < share < 0.31
    assert share * 134 >= MIN_GATE_POSITIVES and "raised" in why
    # A 4,000-stay ICU with 14 % mortality: the default already holds them.
    assert choose_test_fraction(4000, 556, 0.1, 0.35) == (0.1, "the default share already expects >= 41 deaths in test")
    # The demo (100 patients): no share up to the cap can hold 30 deaths; training data is kept.
    share, why = choose_test_fraction(100, 30, 0.1, 0.35)
    assert share == 0.1 and "too few deaths" in why and "30 " not in why.split("for")[0]
    assert choose_test_fraction(500, 0, 0.1, 0.35)[0] == 0.1
    with pytest.raises(ValueError, match="test fractions"):
        choose_test_fraction(100, 10, 0.0, 0.35)


def test_the_split_config_gives_the_chosen_share_to_test_and_takes_it_from_train():
    from synehrgy_assets.defs.tokens import PatientSplitConfig, assign_splits, split_fractions

    train, test, why = split_fractions(PatientSplitConfig(), 1000, 134)
    assert test == pytest.approx(0.306, abs=1e-3) and train == pytest.approx(1 - 0.1 - test) and "raised" in why
    assert split_fractions(PatientSplitConfig(), 4000, 556)[:2] == pytest.approx((0.8, 0.1))
    train, test, why = split_fractions(PatientSplitConfig(test_fraction=0.2), 1000, 134)
    assert (train, test, why) == (pytest.approx(0.7), 0.2, "set in the config")
    ids = np.arange(1, 5001)
    split = assign_splits(ids, *split_fractions(PatientSplitConfig(), 5000, 134)[:1], 0.1, "synehrgy-v1")
    assert abs((split == "test").mean() - 0.306) < 0.02
