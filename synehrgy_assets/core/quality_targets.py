"""What a faithful generator must reach, judged against the real-data baseline.

Every target compares the synthetic cohort with real train patients *beside* the same comparison
for real held-out test patients (the baseline `evaluate` already computes), so a target adapts to
the data instead of being a lax absolute number. The targets are derived from the release gates'
thresholds (`GateThresholds`, the one source, held by `ReleaseGateResource`), a stated step
stricter where the generator work aims above the release minimum:

| target | from the gate threshold | with the default gates |
|---|---|---|
| structure KS | <= max(floor, 0.75 x the gate's baseline ratio x real-test KS) | max(0.10, 1.5 x KS) |
| mortality rate | within the gate's floor (no baseline allowance) | 0.02 |
| TSTR / TRTR AUROC | >= the gate's ratio + 0.05 (at most 1) | 0.90 |
| code prevalence r | >= the gate's ratio x real-test r | 0.9 x r |
| forced closures | <= the gate's rate | 0.01 |

So a cohort that meets a target passes the matching gate, and changing a gate threshold moves
its target with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from synehrgy_assets.core.release_gates import GateThresholds, _below, _get, _row

STRUCTURE_QUANTITIES = ("visits_per_patient", "codes_per_visit", "diagnoses_per_visit",
                        "measurement_rows_per_visit", "los_hours")
# How much stricter than the release gate a target is (see the table above).
STRUCTURE_RATIO_FACTOR = 0.75
AUROC_MARGIN = 0.05


@dataclass(frozen=True)
class TargetRules:
    structure_ks_floor: float
    structure_ks_baseline_ratio: float
    max_mortality_rate_diff: float
    min_auroc_ratio: float
    min_code_r_baseline_ratio: float
    max_forced_closure_rate: float
    min_validity_rate: float = 1.0

    @classmethod
    def from_gates(cls, t: GateThresholds | None = None) -> "TargetRules":
        t = t or GateThresholds()
        return cls(structure_ks_floor=t.structure_ks_floor,
                   structure_ks_baseline_ratio=STRUCTURE_RATIO_FACTOR * t.structure_ks_baseline_ratio,
                   max_mortality_rate_diff=t.mortality_diff_floor,
                   min_auroc_ratio=min(1.0, round(t.min_auroc_ratio + AUROC_MARGIN, 12)),
                   min_code_r_baseline_ratio=t.min_code_prevalence_r_ratio,
                   max_forced_closure_rate=t.max_forced_closure_rate)


def quality_targets(metrics: dict, generation: dict, gates: GateThresholds | None = None) -> pd.DataFrame:
    """One row per target: measured, baseline (real test), threshold, met (False when unmeasured).

    `metrics` is `EvaluationReport.metrics`; `generation` holds `forced_closure_rate` and
    `validity_rate` of the cohort's generation (NaN when absent); `gates` the release thresholds the
    targets derive from (default: `GateThresholds()`).
    """
    rules = TargetRules.from_gates(gates)
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
