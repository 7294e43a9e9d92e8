"""Tests of the evaluation metrics on small programmatic cohorts (no real data)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.metrics import (
    FeatureSpace,
    MetricError,
    MetricInputError,
    code_prevalence_correlation,
    evaluate,
    marginal_distances,
    mortality_utility,
    nearest_neighbour_privacy,
    structure_stats,
    summarize_marginals,
    visit_features,
)
from synehrgy_assets.core.plots import (
    plot_code_prevalence,
    plot_distance_histograms,
    plot_marginal_histograms,
    plot_utility,
    write_report_plots,
)
from tests.helpers.metric_cohorts import VARIABLES, make_cohort

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def relabel(cohort: StagedCohort, offset: int) -> StagedCohort:
    """Same rows under new ids, as a synthetic release would have."""
    frames = []
    for frame in cohort.frames():
        frame = frame.copy()
        frame["subject_id"] = frame["subject_id"] + offset
        frame["icustay_id"] = frame["icustay_id"] + offset
        if "hadm_id" in frame:
            frame["hadm_id"] = frame["hadm_id"] + offset
        frames.append(frame)
    return StagedCohort(*frames)


@pytest.fixture(scope="module")
def cohorts() -> dict[str, StagedCohort]:
    return {
        "train": make_cohort(400, seed=1),
        "test": make_cohort(400, seed=2, id_offset=100_000),
        "independent": make_cohort(400, seed=3, id_offset=200_000),
        "shifted": make_cohort(400, seed=4, shift=1.0, id_offset=300_000),
    }


@pytest.fixture(scope="module")
def space(cohorts) -> FeatureSpace:
    return FeatureSpace.fit(cohorts["train"], VARIABLES, top_k_codes=50)


# ---------------------------------------------------------------- features


def test_features_align_and_use_train_statistics(cohorts, space):
    train = space.transform(cohorts["train"], standardize=True)
    shifted = space.transform(cohorts["shifted"], standardize=True, origin="shifted")
    assert list(train.columns) == list(shifted.columns) == space.columns
    assert len(train) == len(cohorts["train"].visits)
    assert np.isfinite(train.to_numpy()).all() and np.isfinite(shifted.to_numpy()).all()
    assert "mortality_inhospital" not in train.columns
    assert abs(train["m:heart_rate:mean"].mean()) < 1e-9
    # Train statistics keep the shift visible; self-standardization (the reference flaw) would hide it.
    assert shifted["m:heart_rate:mean"].mean() > 0.5


def test_window_summaries_are_correct_for_one_visit(cohorts, space):
    cohort = cohorts["train"]
    feats = space.transform(cohort)
    stay = int(cohort.visits["icustay_id"].iloc[0])
    m = cohort.measurements
    hr = m[(m["icustay_id"] == stay) & (m["variable"] == "heart_rate") & (m["hours"] < 48)].sort_values("hours")
    row = feats.loc[stay]
    assert row["m:heart_rate:mean"] == pytest.approx(hr["value"].mean())
    assert row["m:heart_rate:min"] == pytest.approx(hr["value"].min())
    assert row["m:heart_rate:max"] == pytest.approx(hr["value"].max())
    assert row["m:heart_rate:last"] == pytest.approx(hr["value"].iloc[-1])
    assert row["n_measurement_rows"] == ((m["icustay_id"] == stay) & (m["hours"] < 48)).sum()


def test_missing_variable_gets_train_median_and_indicator(cohorts, space):
    cohort = cohorts["train"]
    m = cohort.measurements
    no_lactate = set(cohort.visits["icustay_id"]) - set(m.loc[(m["variable"] == "lactate") & (m["hours"] < 48),
                                                              "icustay_id"])
    assert no_lactate, "fixture should have visits without lactate"
    feats = space.transform(cohort)
    rows = feats.loc[sorted(no_lactate)]
    assert (rows["m:lactate:missing"] == 1).all()
    assert (rows["m:lactate:mean"] == space.impute_values["m:lactate:mean"]).all()


def test_unseen_category_goes_to_other_column(cohorts, space):
    cohort = cohorts["test"]
    visits = cohort.visits.copy()
    visits.loc[visits.index[:5], "first_careunit"] = "NEW_UNIT"
    feats = space.transform(StagedCohort(visits, *cohort.frames()[1:]))
    assert feats["first_careunit=__other__"].sum() == 5


def test_visit_features_without_space_fits_on_the_cohort(cohorts):
    feats = visit_features(cohorts["test"], VARIABLES)
    assert len(feats) == len(cohorts["test"].visits)
    assert np.isfinite(feats.to_numpy()).all()


def test_bad_input_raises_with_table_and_column(cohorts):
    cohort = cohorts["test"]
    broken = StagedCohort(cohort.visits.drop(columns=["los_hours"]), *cohort.frames()[1:])
    with pytest.raises(MetricInputError, match="visits.*los_hours"):
        evaluate(cohorts["train"], cohort, broken, VARIABLES)
    orphan = cohort.measurements.copy()
    orphan.loc[orphan.index[0], "icustay_id"] = -999
    with pytest.raises(MetricInputError, match="measurements"):
        visit_features(StagedCohort(cohort.visits, cohort.visit_codes, cohort.visit_phenotypes, orphan), VARIABLES)
    codes = cohort.visit_codes.copy()
    codes.loc[codes.index[0], "code_type"] = "drug"
    with pytest.raises(MetricInputError, match="code_type"):
        code_prevalence_correlation(cohorts["train"], StagedCohort(cohort.visits, codes, *cohort.frames()[2:]))


# ---------------------------------------------------------------- fidelity


def test_ks_and_wasserstein_match_scipy():
    from scipy import stats

    from synehrgy_assets.core.metrics import _ks_and_wasserstein

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), np.round(rng.normal(0.3, 1.5, size=300), 1)  # ties included
    ks, w1 = _ks_and_wasserstein(a, b)
    assert ks == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert w1 == pytest.approx(stats.wasserstein_distance(a, b))


def test_identical_cohorts_have_perfect_fidelity(cohorts):
    train = cohorts["train"]
    copy = relabel(train, 9_000_000)
    corr = code_prevalence_correlation(train, copy)
    for key in ("code_prevalence_pearson", "diagnosis_prevalence_pearson", "procedure_prevalence_pearson",
                "code_pair_prevalence_pearson", "phenotype_prevalence_pearson"):
        assert corr[key] == pytest.approx(1.0)
    assert corr["mortality_rate_abs_diff"] == 0.0
    table = marginal_distances(train, copy, VARIABLES)
    assert (table["error"] == "").all()
    assert np.allclose(table[["wasserstein_normalized", "ks_statistic", "tv_distance", "missingness_diff"]], 0.0)
    struct = structure_stats(train, copy)
    assert np.allclose(struct["ks_statistic"], 0.0)


def test_union_correlation_penalizes_missing_and_invented_codes(cohorts):
    train = cohorts["train"]
    copy = relabel(train, 9_000_000)
    codes = copy.visit_codes
    # Drop the most common codes and invent new ones: the intersection-only variant cannot see it.
    top = codes["icd9_code"].value_counts().index[:3]
    mutated = codes[~codes["icd9_code"].isin(top)].copy()
    invented = codes[codes["icd9_code"].isin(top)].copy()
    invented["icd9_code"] = "X" + invented["icd9_code"]
    altered = StagedCohort(copy.visits, pd.concat([mutated, invented]), *copy.frames()[2:])
    corr = code_prevalence_correlation(train, altered)
    assert corr["code_prevalence_intersection_pearson"] == pytest.approx(1.0)
    assert corr["code_prevalence_pearson"] < 0.6
    assert corr["share_synthetic_codes_unseen_in_real"] > 0
    assert corr["share_real_codes_absent_in_synthetic"] > 0


def test_shifted_marginals_are_further_than_independent(cohorts):
    train = cohorts["train"]
    same = summarize_marginals(marginal_distances(train, cohorts["independent"], VARIABLES))
    shifted_table = marginal_distances(train, cohorts["shifted"], VARIABLES)
    shifted = summarize_marginals(shifted_table)
    assert shifted["marginal_wasserstein_mean"] > 3 * same["marginal_wasserstein_mean"]
    assert shifted["marginal_ks_mean"] > same["marginal_ks_mean"] + 0.15
    hr = shifted_table.set_index("variable").loc["heart_rate"]
    assert hr["ks_statistic"] > 0.4 and hr["wasserstein_normalized"] > 0.8
    assert same["n_variables_failed"] == 0


def test_absent_variable_is_an_explicit_error_row(cohorts):
    syn = cohorts["independent"]
    m = syn.measurements[syn.measurements["variable"] != "lactate"]
    table = marginal_distances(cohorts["train"], StagedCohort(*syn.frames()[:3], m), VARIABLES)
    row = table.set_index("variable").loc["lactate"]
    assert "synthetic" in row["error"]
    assert row["missingness_synthetic"] == 0.0 and row["missingness_real"] > 0
    assert summarize_marginals(table)["n_variables_failed"] == 1


# ---------------------------------------------------------------- utility


def test_tstr_on_informative_synthetic_data(cohorts, space):
    out = mortality_utility(cohorts["train"], cohorts["test"], cohorts["independent"], seed=0, space=space,
                            n_threads=1)
    assert out["trtr_auroc"] > 0.65
    assert out["tstr_auroc"] > 0.65
    assert 0.75 < out["auroc_ratio"] < 1.25
    assert out["tstr_auprc"] > out["test_positive_rate"]


def test_single_class_synthetic_gives_error_entries(cohorts, space):
    syn = cohorts["independent"]
    visits = syn.visits.assign(mortality_inhospital=0)
    out = mortality_utility(cohorts["train"], cohorts["test"], StagedCohort(visits, *syn.frames()[1:]),
                            space=space, classifier="logistic_regression")
    assert isinstance(out["tstr_auroc"], MetricError) and "single mortality class" in out["tstr_auroc"].message
    assert isinstance(out["auroc_ratio"], MetricError)
    assert isinstance(out["trtr_auroc"], float) and out["trtr_auroc"] > 0.6


# ---------------------------------------------------------------- privacy


def test_copied_training_rows_are_flagged(cohorts, space):
    copy = relabel(cohorts["train"], 9_000_000)
    out = nearest_neighbour_privacy(cohorts["train"], cohorts["test"], copy, space=space)
    assert out["dcr_median_synthetic_to_train"] < 1e-3
    assert out["dcr_median_test_to_train"] > 1.0
    assert out["exact_match_fraction"] == 1.0 and out["exact_match_fraction_test"] == 0.0
    assert out["dcr_share_below_test_p5"] > 0.95
    assert out["mia_auroc"] > 0.95
    assert out["nnaa"] < -0.3
    assert out["codes_exact_match_fraction"] > 0.9  # sampled train reference: most sources present
    assert out["codes_mia_auroc"] > 0.7


def test_independent_synthetic_data_looks_like_fresh_real_data(cohorts, space):
    out = nearest_neighbour_privacy(cohorts["train"], cohorts["test"], cohorts["independent"], space=space)
    assert 0.85 < out["dcr_median_ratio"] < 1.15
    assert out["dcr_share_below_test_p5"] < 0.12
    assert abs(out["mia_auroc"] - 0.5) < 0.08
    assert abs(out["nnaa"]) < 0.08
    assert out["exact_match_count"] == 0
    assert 0.85 < out["codes_jaccard_median_ratio"] < 1.15
    assert abs(out["codes_mia_auroc"] - 0.5) < 0.08


def test_partial_leak_sits_between(cohorts, space):
    """Half copies, half fresh: the MIA AUROC must rise above chance but stay below a full copy."""
    train, fresh = cohorts["train"], cohorts["independent"]
    half = train.subset(train.visits["subject_id"].drop_duplicates().iloc[::2])
    mixed = StagedCohort(*(pd.concat([a, b], ignore_index=True)
                           for a, b in zip(relabel(half, 9_000_000).frames(), fresh.frames())))
    out = nearest_neighbour_privacy(train, cohorts["test"], mixed, space=space)
    assert 0.6 < out["mia_auroc"] < 0.95


# ---------------------------------------------------------------- evaluate + plots


@pytest.fixture(scope="module")
def report(cohorts):
    return evaluate(cohorts["train"], cohorts["test"], cohorts["independent"], VARIABLES, seed=0,
                    top_k_codes=50, min_cell_count=5, n_threads=1, strict=True)


def test_evaluate_gives_flat_finite_metrics(report):
    assert report.errors == {}
    assert all(isinstance(v, float) and math.isfinite(v) for v in report.metrics.values())
    for key in ("fidelity/code_prevalence_pearson", "fidelity/marginal_wasserstein_mean",
                "privacy/exact_match_fraction",
                "fidelity_baseline/code_prevalence_pearson", "fidelity/structure/los_hours_ks",
                "utility/tstr_auroc", "utility/trtr_auroc", "privacy/mia_auroc", "privacy/nnaa",
                "privacy/dcr_median_ratio", "privacy/codes_mia_auroc"):
        assert key in report.metrics, key
    assert report.metrics["fidelity/code_prevalence_pearson"] > 0.9
    for name in ("fidelity_marginals", "fidelity_structure", "code_prevalence", "marginal_histograms",
                 "privacy_distance_histograms"):
        assert not report.tables[name].empty, name


def test_evaluate_is_deterministic(cohorts, report):
    again = evaluate(cohorts["train"], cohorts["test"], cohorts["independent"], VARIABLES, seed=0,
                     top_k_codes=50, min_cell_count=5, n_threads=1, strict=True)
    assert again.metrics == report.metrics


def test_evaluate_records_single_class_error(cohorts):
    syn = cohorts["independent"]
    single = StagedCohort(syn.visits.assign(mortality_inhospital=1), *syn.frames()[1:])
    rep = evaluate(cohorts["train"], cohorts["test"], single, VARIABLES, top_k_codes=50, n_threads=1)
    assert "utility/tstr_auroc" in rep.errors and "utility/tstr_auroc" not in rep.metrics
    assert "utility/trtr_auroc" in rep.metrics
    assert rep.metrics["fidelity/mortality_rate_synthetic"] == 1.0


def test_suppression_hides_small_real_cells(cohorts):
    rep = evaluate(cohorts["train"], cohorts["test"], cohorts["independent"], VARIABLES, top_k_codes=50,
                   min_cell_count=10_000, n_threads=1)
    hist = rep.tables["marginal_histograms"]
    assert hist["real_suppressed"].any() and (hist.loc[hist["real_suppressed"], "real_fraction"] == 0).all()
    assert rep.tables["code_prevalence"]["prevalence_real"].eq(0).all()


def test_plots_are_png(report, tmp_path):
    for data in (
        plot_marginal_histograms(report.tables["marginal_histograms"], tmp_path / "m.png"),
        plot_code_prevalence(report.tables["code_prevalence"], pearson=0.9),
        plot_distance_histograms(report.tables["privacy_distance_histograms"]),
        plot_utility(report.metrics),
    ):
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert (tmp_path / "m.png").read_bytes().startswith(PNG_MAGIC)
    written = write_report_plots(report, tmp_path / "plots")
    assert set(written) == {"marginal_histograms", "code_prevalence", "privacy_distances", "utility"}
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written.values())
    assert report.plots().keys() == written.keys()
    with pytest.raises(ValueError, match="marginal_histograms"):
        plot_marginal_histograms(pd.DataFrame({"variable": []}))


def test_structure_stats_suppress_small_real_samples(cohorts):
    """A median of a handful of real visits is one patient's value: never in a table that leaves."""
    train = cohorts["train"]
    small = make_cohort(15, seed=5, id_offset=7_000_000)  # 15 real patients (the demo's test split is ~10)
    baseline = structure_stats(train, small, other_is_real=True)
    per_patient = baseline.set_index("quantity").loc["visits_per_patient"]
    assert per_patient["n_synthetic"] < 20
    assert np.isnan(per_patient["mean_synthetic"]) and np.isnan(per_patient["median_synthetic"])
    assert not np.isnan(per_patient["median_real"])  # 400 train patients: fine
    assert not np.isnan(per_patient["ks_statistic"])
    # Fewer than min_cell_count real values: the whole row (count, KS) is held back.
    tiny = structure_stats(train, make_cohort(4, seed=6, id_offset=8_000_000), other_is_real=True)
    row = tiny.set_index("quantity").loc["visits_per_patient"]
    assert np.isnan(row["n_synthetic"]) and np.isnan(row["ks_statistic"]) and "small cell" in row["error"]
    # The same small cohort as synthetic output is not a real sample: nothing suppressed.
    assert not np.isnan(structure_stats(train, small).set_index("quantity").loc["visits_per_patient",
                                                                                  "median_synthetic"])


def test_small_real_cells_are_held_back_from_what_is_published(cohorts):
    from synehrgy_assets.core.metrics.publish import publishable, small_cell_metrics

    train = cohorts["train"]
    small = make_cohort(8, seed=5, id_offset=7_000_000)  # 8 patients: fewer than 10 deaths and survivors
    held = small_cell_metrics(train, small)
    assert "fidelity_baseline/mortality_rate_synthetic" in held and "privacy/dcr_median_test_to_train" in held
    assert "fidelity/mortality_rate_real" not in held  # 400 train patients: both cells large
    metrics = {"fidelity_baseline/mortality_rate_synthetic": 0.25, "fidelity/code_prevalence_pearson": 0.9}
    assert publishable(metrics, held) == {"fidelity/code_prevalence_pearson": 0.9}
    assert small_cell_metrics(train, cohorts["train"]) == {}
