"""The release gates: what a synthetic cohort must reach, relative to real data, before `champion` moves.

Every fidelity gate compares the synthetic cohort with real train patients *beside* the same
comparison for real held-out test patients (the baseline `metrics.evaluate` computes): two real
samples of one hospital differ too, and a gate should ask for "about as close as real data is to
itself", not for a lax absolute number. So the defaults are ratios to that baseline, with a small
floor where the baseline can be near zero by chance (a structure KS of 0.02 between two real
samples would otherwise demand the impossible):

| gate | passes when |
|---|---|
| code prevalence | r(synthetic, real train) >= 0.9 x r(real test, real train) |
| code pairs | pair-prevalence r >= 0.8 x the real-test pair r |
| structure | each KS <= max(0.10, 2 x the real-test KS) |
| mortality rate | abs(synthetic - real) <= max(0.02, 1.5 x abs(real test - real train)) |
| utility | per panel task with >= 30 positives: upper 95 % bound of TSTR / TRTR AUROC >= 0.85 |
| forced closures | <= 1 % of patients closed by the length cap |
| marginals | <= 25 % of variables have a normalized W1 over 2 x the real-test W1 |

The privacy gates read the attacks of `metrics.privacy`; their thresholds are in the same
dataclass. Pure: metrics in, verdicts out, so each gate is testable without Dagster.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields

STRUCTURE_GATE_QUANTITIES = ("visits_per_patient", "codes_per_visit", "diagnoses_per_visit",
                             "measurement_rows_per_visit", "los_hours")


def _threshold(default: float, description: str):
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class GateThresholds:
    """Every release threshold, in one place. `ReleaseGateResource` (defs/gates.py) is built from
    these fields (defaults and descriptions), and the quality targets, the evaluation metadata and the
    datacard read the instance that resource returns."""

    min_code_prevalence_r_ratio: float = _threshold(0.9, "ICD code prevalence r must be >= this x the real-test r.")
    min_code_pair_r_ratio: float = _threshold(0.8, "Code-pair prevalence r must be >= this x the real-test pair r.")
    structure_ks_baseline_ratio: float = _threshold(
        2.0, "Structure KS (visits/patient, codes/visit, ...) must be <= this x the real-test KS "
        "(or <= structure_ks_floor, whichever is larger).")
    structure_ks_floor: float = _threshold(
        0.10, "Structure KS always allowed, because two real samples can differ by ~0 by chance.")
    mortality_diff_baseline_ratio: float = _threshold(
        1.5, "|synthetic - real| mortality rate must be <= this x |real test - real train| "
        "(or <= mortality_diff_floor, whichever is larger).")
    mortality_diff_floor: float = _threshold(0.02, "Mortality rate difference always allowed.")
    min_auroc_ratio: float = _threshold(
        0.85, "TSTR / TRTR mortality AUROC (train on synthetic vs on real, test on real).")
    max_forced_closure_rate: float = _threshold(
        0.01, "Share of synthetic patients the length cap closed (instead of the model).")
    marginal_w1_baseline_ratio: float = _threshold(
        2.0, "A variable's marginal counts as worse when its normalized W1 exceeds this x the real-test W1.")
    max_share_marginals_worse: float = _threshold(
        0.25, "Share of variables allowed to be worse (see marginal_w1_baseline_ratio).")
    max_mia_auroc: float = _threshold(
        0.60, "Membership-inference AUROC allowed for every attack (distance in features, distance over code "
        "sets, DOMIAS density ratio), members at the real sampling fraction (0.5 = chance).")
    max_dcr_share_below_real_p5: float = _threshold(
        0.10, "Share of synthetic records closer to a train record than the 5th percentile of real held-out "
        "records' distances (about 0.05 when synthetic is like unseen real data).")
    copy_baseline_ratio: float = _threshold(
        1.5, "Copy shares (visits whose token sequence, token multiset, header or code set equals a train "
        "visit's; token n-grams found in train; near-copied patients) may be at most this x the same share for "
        "real held-out patients (or copy_floor, whichever is larger).")
    copy_floor: float = _threshold(
        0.02, "Copy share always allowed, because two real samples share little by chance.")
    max_attribute_advantage: float = _threshold(
        0.05, "Attribute inference (mortality, top diagnoses from quasi-identifiers with the synthetic data): "
        "risk on train patients minus risk on held-out patients (or attribute_advantage_se_multiplier x its "
        "standard error, whichever is larger).")
    attribute_advantage_se_multiplier: float = _threshold(
        2.0, "Standard errors of the attribute advantage always allowed (sampling noise of a small held-out set).")
    max_hard_patient_rule_share: float = _threshold(
        0.0, "Share of synthetic patients allowed to break a hard patient rule (gender or ethnicity changing, "
        "age decreasing, a visit after death, an event outside its stay, a visit without times; real data "
        "cannot break these by construction).")
    patient_rule_share_ratio: float = _threshold(
        1.5, "Other patient rules: the synthetic share of patients breaking a rule must be <= this x the "
        "real-test share (or the real-test share + patient_rule_share_slack, whichever is larger).")
    patient_rule_share_slack: float = _threshold(
        0.005, "Share above the real-test share always allowed for a patient rule (0.005 = 0.5 percentage "
        "points), because a rule real test patients never break may still be broken by chance.")

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def threshold_descriptions() -> dict[str, str]:
    return {f.name: f.metadata["description"] for f in fields(GateThresholds)}


@dataclass
class GateVerdict:
    """One gate's decision. `rows` hold what was compared: measured, baseline, threshold, ok."""

    name: str
    description: str
    passed: bool
    rows: list[dict] = field(default_factory=list)
    reason: str = ""
    not_applicable: bool = False  # e.g. a code gate on a dataset without ICD codes (passes, says why)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "passed": self.passed,
                "rows": self.rows, "reason": self.reason, "not_applicable": self.not_applicable}


def _get(metrics: dict, key: str) -> float:
    value = metrics.get(key)
    try:
        return float("nan") if value is None else float(value)
    except (TypeError, ValueError):
        return float("nan")


def _verdict(name: str, description: str, rows: list[dict]) -> GateVerdict:
    """Every failing quantity is named with its figure and limit, and every unmeasured one as such:
    an unmeasured quantity must not hide a measured failure beside it."""
    missing = [r["quantity"] for r in rows if math.isnan(r["measured"]) or math.isnan(r["threshold"])]
    failed = [f"{r['quantity']} {r['measured']:.4g} (needs {r['op']} {r['threshold']:.4g})" for r in rows
              if not r["ok"] and r["quantity"] not in missing]
    if missing:
        failed.append(f"not measured: {', '.join(missing)} (see the evaluation's errors)")
    reason = "; ".join(failed) if failed else "all within thresholds"
    return GateVerdict(name, description, passed=not failed, rows=rows, reason=reason)


# A threshold built as ratio x baseline can differ from an equal measured figure in the last bit
# (2 x 2/33 against 4/33): such a tie counts as met.
_TIE = 1e-9


def _row(quantity: str, measured: float, baseline: float, threshold: float, op: str) -> dict:
    slack = _TIE * max(1.0, abs(threshold)) if not math.isnan(threshold) else 0.0
    ok = not math.isnan(measured) and not math.isnan(threshold) and (
        measured <= threshold + slack if op == "<=" else measured >= threshold - slack)
    return {"quantity": quantity, "measured": measured, "real_test_baseline": baseline,
            "op": op, "threshold": threshold, "ok": bool(ok)}


def _below(baseline: float, ratio: float) -> float:
    """`ratio` x a positive baseline; for a negative one (two tiny real samples can anti-correlate)
    the same slack below it, baseline - (1 - ratio) x |baseline|, so the rule never gets laxer."""
    return baseline - (1.0 - ratio) * abs(baseline)


def code_prevalence_gate(m: dict, t: GateThresholds) -> GateVerdict:
    base = _get(m, "fidelity_baseline/code_prevalence_pearson")
    rows = [_row("code prevalence r", _get(m, "fidelity/code_prevalence_pearson"), base,
                 _below(base, t.min_code_prevalence_r_ratio), ">=")]
    return _verdict("code_prevalence_gate",
                    f"ICD code prevalence r >= {t.min_code_prevalence_r_ratio:g} x the real-test r.", rows)


def code_pair_gate(m: dict, t: GateThresholds) -> GateVerdict:
    base = _get(m, "fidelity_baseline/code_pair_prevalence_pearson")
    rows = [_row("code-pair prevalence r", _get(m, "fidelity/code_pair_prevalence_pearson"), base,
                 _below(base, t.min_code_pair_r_ratio), ">=")]
    return _verdict("code_pair_gate",
                    f"Co-occurring code pairs: prevalence r >= {t.min_code_pair_r_ratio:g} x the real-test r.", rows)


def structure_gate(m: dict, t: GateThresholds) -> GateVerdict:
    rows = []
    for q in STRUCTURE_GATE_QUANTITIES:
        base = _get(m, f"fidelity_baseline/structure/{q}_ks")
        limit = t.structure_ks_floor if math.isnan(base) else max(t.structure_ks_floor,
                                                                  t.structure_ks_baseline_ratio * base)
        rows.append(_row(f"KS {q}", _get(m, f"fidelity/structure/{q}_ks"), base, limit, "<="))
    return _verdict("structure_gate",
                    f"Per quantity ({', '.join(STRUCTURE_GATE_QUANTITIES)}): KS <= max({t.structure_ks_floor:g}, "
                    f"{t.structure_ks_baseline_ratio:g} x the real-test KS).", rows)


def mortality_rate_gate(m: dict, t: GateThresholds) -> GateVerdict:
    base = _get(m, "fidelity_baseline/mortality_rate_abs_diff")
    limit = t.mortality_diff_floor if math.isnan(base) else max(t.mortality_diff_floor,
                                                                t.mortality_diff_baseline_ratio * base)
    rows = [_row("|mortality rate - real|", _get(m, "fidelity/mortality_rate_abs_diff"), base, limit, "<=")]
    return _verdict("mortality_rate_gate",
                    f"In-hospital mortality rate within max({t.mortality_diff_floor:g}, "
                    f"{t.mortality_diff_baseline_ratio:g} x the real test-vs-train difference) of real.", rows)


def utility_gate(m: dict, t: GateThresholds) -> GateVerdict:
    from synehrgy_assets.core.metrics.utility import utility_gate_description, utility_gate_rows

    description = utility_gate_description(t.min_auroc_ratio)
    panel = utility_gate_rows(m, t.min_auroc_ratio)
    if panel is not None:  # the task panel with intervals; without one, the single point estimate below
        rows, notes = panel
        verdict = _verdict("utility_gate", description, rows)
        verdict.reason = "; ".join(([verdict.reason] if rows else []) + notes) or verdict.reason
        return verdict
    rows = [_row("TSTR / TRTR AUROC", _get(m, "utility/auroc_ratio"), 1.0, t.min_auroc_ratio, ">=")]
    return _verdict("utility_gate", description, rows)


def forced_closure_gate(m: dict, t: GateThresholds) -> GateVerdict:
    rows = [_row("forced closure rate", _get(m, "generation/forced_closure_rate"), 0.0,
                 t.max_forced_closure_rate, "<=")]
    return _verdict("forced_closure_gate",
                    f"At most {t.max_forced_closure_rate:.0%} of synthetic patients were closed by the length cap "
                    "instead of ending on their own.", rows)


def marginal_gate(m: dict, t: GateThresholds, marginals=None, baseline_marginals=None) -> GateVerdict:
    """`marginals` / `baseline_marginals`: the evaluation's per-variable tables (variable,
    wasserstein_normalized) for synthetic vs real train and real test vs real train."""
    share = float("nan")
    n = 0
    if marginals is not None and baseline_marginals is not None:
        both = marginals[["variable", "wasserstein_normalized"]].merge(
            baseline_marginals[["variable", "wasserstein_normalized"]], on="variable", suffixes=("", "_baseline"))
        both = both.dropna()
        n = len(both)
        if n:
            worse = both["wasserstein_normalized"] > t.marginal_w1_baseline_ratio * both["wasserstein_normalized_baseline"]
            share = float(worse.mean())
    rows = [_row(f"share of {n} variables with W1 > {t.marginal_w1_baseline_ratio:g} x real-test W1",
                 share, float("nan"), t.max_share_marginals_worse, "<=")]
    return _verdict("marginal_gate",
                    f"At most {t.max_share_marginals_worse:.0%} of variables have a normalized Wasserstein distance "
                    f"over {t.marginal_w1_baseline_ratio:g} x the real-test one.", rows)


def _copy_rows(m: dict, t: GateThresholds, items: tuple[tuple[str, str], ...]) -> list[dict]:
    """One row per copy figure: synthetic <= max(copy_floor, copy_baseline_ratio x the real-test figure)."""
    rows = []
    for key, label in items:
        base = _get(m, f"privacy/{key}_test")
        limit = float("nan") if math.isnan(base) else max(t.copy_floor, t.copy_baseline_ratio * base)
        rows.append(_row(label, _get(m, f"privacy/{key}"), base, limit, "<="))
    return rows


def privacy_visit_copy_gate(m: dict, t: GateThresholds) -> GateVerdict:
    """Synthetic visits identical to a train visit in their discrete content (tokens: codes, labels,
    covariates, value and time bins), no more often than real held-out visits are by chance."""
    rows = _copy_rows(m, t, (
        ("visit_sequence_copy_fraction", "visits whose token sequence equals a train visit's"),
        ("visit_multiset_copy_fraction", "visits whose token multiset equals a train visit's"),
        ("visit_header_copy_fraction", "visits whose header (covariates, labels, codes) equals a train visit's"),
        ("codes_exact_match_fraction", "visits whose code set equals a train visit's"),
    ))
    return _verdict("privacy_visit_copy_gate",
                    f"Visits copied from train (token sequence, token multiset, header, code set): each share <= "
                    f"max({t.copy_floor:g}, {t.copy_baseline_ratio:g} x the real-test share).", rows)


def privacy_ngram_copy_gate(m: dict, t: GateThresholds) -> GateVerdict:
    """Long token n-grams shared with train patients, against real held-out patients' chance level."""
    n = _get(m, "privacy/ngram_length")
    what = f"{n:.0f}-token" if not math.isnan(n) else "long"
    rows = _copy_rows(m, t, (
        ("ngram_shared_fraction", f"{what} windows found in a train patient"),
        ("ngram_near_copy_patient_share", f"patients with >= half of their {what} windows in train"),
    ))
    return _verdict("privacy_ngram_copy_gate",
                    f"Token n-grams shared with train patients (share of windows, share of near-copied patients): "
                    f"each <= max({t.copy_floor:g}, {t.copy_baseline_ratio:g} x the real-test share).", rows)


def privacy_membership_gate(m: dict, t: GateThresholds) -> GateVerdict:
    """Every membership-inference attack (attack set with the real member prior) near chance."""
    rows = [_row(f"{label} MIA AUROC", _get(m, f"privacy/{key}"), 0.5, t.max_mia_auroc, "<=")
            for key, label in (("mia_auroc", "distance (features)"), ("codes_mia_auroc", "distance (code sets)"),
                               ("domias_mia_auroc", "density ratio (DOMIAS)"))]
    return _verdict("privacy_membership_gate",
                    f"Membership inference AUROC <= {t.max_mia_auroc:g} for every attack (distance in features, "
                    "distance over code sets, DOMIAS density ratio; members at the real sampling fraction).", rows)


def privacy_attribute_gate(m: dict, t: GateThresholds) -> GateVerdict:
    """Sensitive fields are no easier to infer from quasi-identifiers for train patients than for
    held-out ones; the allowance is the larger of a fixed floor and a multiple of the standard error."""
    se = _get(m, "privacy/attribute_advantage_se")
    limit = t.max_attribute_advantage if math.isnan(se) else max(
        t.max_attribute_advantage, t.attribute_advantage_se_multiplier * se)
    rows = [_row("attribute inference: member risk - non-member risk", _get(m, "privacy/attribute_advantage"),
                 0.0, limit, "<=")]
    return _verdict("privacy_attribute_gate",
                    f"Attribute inference (mortality, top diagnoses from age, gender, ethnicity, insurance, admission "
                    f"type, care unit): member advantage <= max({t.max_attribute_advantage:g}, "
                    f"{t.attribute_advantage_se_multiplier:g} x its standard error).", rows)


def privacy_dcr_gate(m: dict, t: GateThresholds) -> GateVerdict:
    """Few synthetic records closer to a train record than real held-out records are (DCR)."""
    rows = [_row("DCR: share of synthetic closer to train than the real-test 5th percentile",
                 _get(m, "privacy/dcr_share_below_test_p5"), 0.05, t.max_dcr_share_below_real_p5, "<=")]
    return _verdict("privacy_dcr_gate",
                    f"At most {t.max_dcr_share_below_real_p5:g} of synthetic visits lie closer to train than the "
                    "5th percentile of real held-out visits' distances (0.05 for fresh real data).", rows)


# Raw row counts of the ICD tables (from staging_audit), set by the evaluation. When both are 0 the
# dataset has no codes: the code gates are "not applicable", and so are code quantities that could
# not be measured in the other gates.
CODE_TABLE_ROWS = {"DIAGNOSES_ICD": "dataset/diagnoses_icd_rows", "PROCEDURES_ICD": "dataset/procedures_icd_rows"}
CODE_GATES = ("code_prevalence_gate", "code_pair_gate")


def empty_code_tables(m: dict) -> list[str]:
    return [table for table, key in CODE_TABLE_ROWS.items() if key in m and _get(m, key) == 0]


def not_applicable_without_codes(verdict: GateVerdict, m: dict) -> GateVerdict:
    """The verdict on a dataset with empty ICD tables: code gates not applicable, and unmeasurable
    code quantities of other gates left out, each with the reason."""
    empty = empty_code_tables(m)
    if not empty:
        return verdict
    why = f"not applicable: the dataset has no ICD codes ({' and '.join(empty)} empty)"
    if verdict.name in CODE_GATES and len(empty) == len(CODE_TABLE_ROWS):
        return GateVerdict(verdict.name, verdict.description, passed=True, rows=[], reason=why, not_applicable=True)
    na = [r for r in verdict.rows if math.isnan(r["measured"])
          and any(w in r["quantity"].lower() for w in ("code", "diagnos", "procedure"))]
    if not na:
        return verdict
    for r in na:
        r.update(ok=True, not_applicable=True)
    rows = [r for r in verdict.rows if not r.get("not_applicable")]
    v = _verdict(verdict.name, verdict.description, rows) if rows else GateVerdict(
        verdict.name, verdict.description, True, [], "", True)
    v.rows = verdict.rows
    v.reason = f"{v.reason}; {', '.join(r['quantity'] for r in na)} {why}" if rows else why
    return v


def _code_aware(gate):
    @functools.wraps(gate)
    def judged(m: dict, t: GateThresholds, *args, **kwargs) -> GateVerdict:
        return not_applicable_without_codes(gate(m, t, *args, **kwargs), m)
    return judged


FIDELITY_GATES = tuple(_code_aware(g) for g in (code_prevalence_gate, code_pair_gate, structure_gate,
                                                mortality_rate_gate, utility_gate, forced_closure_gate))


PRIVACY_GATES = tuple(_code_aware(g) for g in (privacy_visit_copy_gate, privacy_ngram_copy_gate,
                                               privacy_membership_gate, privacy_attribute_gate, privacy_dcr_gate))


def all_verdicts(metrics: dict, thresholds: GateThresholds | None = None, marginals=None,
                 baseline_marginals=None) -> list[GateVerdict]:
    t = thresholds or GateThresholds()
    return ([gate(metrics, t) for gate in (*FIDELITY_GATES, *PRIVACY_GATES)]
            + [marginal_gate(metrics, t, marginals, baseline_marginals)])
