"""The generator's quality targets are relative to the real-test baseline, and each can fail."""

import math

import pytest

from synehrgy_assets.core.quality_targets import STRUCTURE_QUANTITIES, quality_targets


def _metrics(**over):
    m = {}
    for q in STRUCTURE_QUANTITIES:
        m[f"fidelity/structure/{q}_ks"] = 0.05
        m[f"fidelity_baseline/structure/{q}_ks"] = 0.04
    m.update({"fidelity/mortality_rate_abs_diff": 0.01, "fidelity_baseline/mortality_rate_abs_diff": 0.02,
              "utility/auroc_ratio": 0.95, "fidelity/code_prevalence_pearson": 0.9,
              "fidelity_baseline/code_prevalence_pearson": 0.95})
    m.update(over)
    return m


GOOD_GENERATION = {"forced_closure_rate": 0.0, "validity_rate": 1.0}


def test_a_faithful_cohort_meets_every_target():
    table = quality_targets(_metrics(), GOOD_GENERATION)
    assert table["met"].all(), table


@pytest.mark.parametrize("key, value", [
    ("fidelity/structure/diagnoses_per_visit_ks", 0.63),
    ("fidelity/mortality_rate_abs_diff", 0.12),
    ("utility/auroc_ratio", 0.78),
    ("fidelity/code_prevalence_pearson", 0.77),
])
def test_each_metric_target_fails_on_bad_data(key, value):
    table = quality_targets(_metrics(**{key: value}), GOOD_GENERATION)
    assert table["met"].sum() == len(table) - 1


def test_structure_limit_follows_a_larger_baseline():
    # A noisy real-test baseline (small test split) loosens the KS limit to 1.5 x baseline.
    m = _metrics(**{"fidelity/structure/los_hours_ks": 0.25, "fidelity_baseline/structure/los_hours_ks": 0.2})
    row = quality_targets(m, GOOD_GENERATION).set_index("target").loc["structure KS: los_hours"]
    assert row["met"] and row["rule"] == "<= 0.3"


@pytest.mark.parametrize("generation", [{"forced_closure_rate": 0.05, "validity_rate": 1.0},
                                        {"forced_closure_rate": 0.0, "validity_rate": 0.99},
                                        {}])
def test_generation_targets_fail_when_bad_or_unmeasured(generation):
    table = quality_targets(_metrics(), generation)
    assert not table["met"].all()
    missing = table[table["measured"].apply(math.isnan)]
    assert not missing["met"].any(), "an unmeasured target is never met"


def test_targets_derive_from_the_gate_thresholds():
    """One source: the default gates give the targets' historical numbers (1.5 x KS, 0.02, 0.90), and a
    changed gate threshold moves its target."""
    from dataclasses import replace

    from synehrgy_assets.core.quality_targets import TargetRules
    from synehrgy_assets.core.release_gates import GateThresholds

    rules = TargetRules.from_gates(GateThresholds())
    assert (rules.structure_ks_baseline_ratio, rules.max_mortality_rate_diff, rules.min_auroc_ratio,
            rules.min_code_r_baseline_ratio, rules.max_forced_closure_rate) == (1.5, 0.02, 0.9, 0.9, 0.01)
    m = _metrics(**{"fidelity/structure/los_hours_ks": 0.25, "fidelity_baseline/structure/los_hours_ks": 0.2,
                    "utility/auroc_ratio": 0.87})
    default = quality_targets(m, GOOD_GENERATION).set_index("target")
    assert not default.loc["TSTR / TRTR AUROC", "met"]
    lax = quality_targets(m, GOOD_GENERATION, replace(GateThresholds(), structure_ks_baseline_ratio=4.0,
                                                      min_auroc_ratio=0.8)).set_index("target")
    assert lax.loc["structure KS: los_hours", "rule"] == "<= 0.6"
    assert lax.loc["TSTR / TRTR AUROC", "rule"] == ">= 0.85" and lax.loc["TSTR / TRTR AUROC", "met"]
