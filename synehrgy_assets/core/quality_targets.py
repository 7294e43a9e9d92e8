"""What a faithful generator must reach, judged against the real-data baseline.

Every target compares the synthetic cohort with real train patients *beside* the same comparison
for real held-out test patients (the baseline `evaluate` already computes), so a target adapts to
the data instead of being a lax absolute number: a structure KS must be <= max(0.10, 1.5 x the
real-test KS), code prevalence r >= 0.9 x the real-test r. The evaluation asset reports the
table; the release gates read the same rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from synehrgy_assets.core.release_gates import _below, _get, _row

STRUCTURE_QUANTITIES = ("visits_per_patient", "codes_per_visit", "diagnoses_per_visit",
                        "measurement_rows_per_visit", "los_hours")


@dataclass(frozen=True)
class TargetRules:
    structure_ks_floor: float = 0.10
    structure_ks_baseline_ratio: float = 1.5
    max_mortality_rate_diff: float = 0.02
    min_auroc_ratio: float = 0.90
    min_code_r_baseline_ratio: float = 0.9
    max_forced_closure_rate: float = 0.01
    min_validity_rate: float = 1.0


def quality_targets(metrics: dict, generation: dict, rules: TargetRules | None = None) -> pd.DataFrame:
    """One row per target: measured, baseline (real test), threshold, met (False when unmeasured).

    `metrics` is `EvaluationReport.metrics`; `generation` holds `forced_closure_rate` and
    `validity_rate` of the cohort's generation (NaN when absent).
    """
    rules = rules or TargetRules()
    rows = []

    def add(name: str, measured: float, baseline: float, threshold: float, op: str) -> None:
        compared = _row(name, measured, baseline, threshold, op)  # the gates' comparison
        rows.append({"target": name, "measured": measured, "real_test_baseline": baseline,
                     "rule": f"{op} {threshold:.4g}", "met": compared["ok"]})

    for q in STRUCTURE_QUANTITIES:
        syn = _get(metrics, f"fidelity/structure/{q}_ks")
        base = _get(metrics, f"fidelity_baseline/structure/{q}_ks")
        limit = max(rules.structure_ks_floor, rules.structure_ks_baseline_ratio * base) \
            if not math.isnan(base) else rules.structure_ks_floor
        add(f"structure KS: {q}", syn, base, limit, "<=")
    add("mortality rate |synthetic - real|", _get(metrics, "fidelity/mortality_rate_abs_diff"),
        _get(metrics, "fidelity_baseline/mortality_rate_abs_diff"), rules.max_mortality_rate_diff, "<=")
    add("TSTR / TRTR AUROC", _get(metrics, "utility/auroc_ratio"), 1.0, rules.min_auroc_ratio, ">=")
    base_r = _get(metrics, "fidelity_baseline/code_prevalence_pearson")
    add("code prevalence r", _get(metrics, "fidelity/code_prevalence_pearson"), base_r,
        _below(base_r, rules.min_code_r_baseline_ratio), ">=")
    add("forced closure rate", float(generation.get("forced_closure_rate", float("nan"))), 0.0,
        rules.max_forced_closure_rate, "<=")
    add("sequences that parse", float(generation.get("validity_rate", float("nan"))), 1.0,
        rules.min_validity_rate, ">=")
    return pd.DataFrame(rows, columns=["target", "measured", "real_test_baseline", "rule", "met"])
