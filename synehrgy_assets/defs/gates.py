"""The release gates as asset checks, and the verdicts that bind them to the cohort they judged.

Every gating check (the GX suites on `synthetic_cohort`, the evaluation gates of
`core/release_gates.py`) writes its verdict to `artifacts/gates/<check>.json` together with the
`cohort_id` (a content hash of the cohort's Parquet files) it judged. `synthetic_release` promotes
only when every verdict exists, passed, and names the cohort that is in the workspace now: a
cohort regenerated after its checks ran (another seed, another temperature) is refused, whatever
an older run of the checks said. No Dagster internals are read: the verdicts are plain files.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import dagster as dg
from pydantic import Field

from synehrgy_assets.resources import WorkspaceResource, write_json

PASSED, FAILED, NOT_RUN, STALE = "PASSED", "FAILED", "NOT_RUN", "STALE"


class ReleaseGateResource(dg.ConfigurableResource):
    """Thresholds a synthetic cohort must meet before alias `champion` moves to it. Fidelity and
    utility thresholds are ratios to the real-test baseline (real held-out patients compared with
    real train patients the same way), see docs/evaluation.md."""

    min_code_prevalence_r_ratio: float = Field(
        default=0.9, description="ICD code prevalence r must be >= this x the real-test r.")
    min_code_pair_r_ratio: float = Field(
        default=0.8, description="Code-pair prevalence r must be >= this x the real-test pair r.")
    structure_ks_baseline_ratio: float = Field(
        default=2.0, description="Structure KS (visits/patient, codes/visit, ...) must be <= this x the real-test KS "
        "(or <= structure_ks_floor, whichever is larger).")
    structure_ks_floor: float = Field(
        default=0.10, description="Structure KS always allowed, because two real samples can differ by ~0 by chance.")
    mortality_diff_baseline_ratio: float = Field(
        default=1.5, description="|synthetic - real| mortality rate must be <= this x |real test - real train| "
        "(or <= mortality_diff_floor, whichever is larger).")
    mortality_diff_floor: float = Field(default=0.02, description="Mortality rate difference always allowed.")
    min_auroc_ratio: float = Field(
        default=0.85, description="TSTR / TRTR mortality AUROC (train on synthetic vs on real, test on real).")
    max_forced_closure_rate: float = Field(
        default=0.01, description="Share of synthetic patients the length cap closed (instead of the model).")
    marginal_w1_baseline_ratio: float = Field(
        default=2.0, description="A variable's marginal counts as worse when its normalized W1 exceeds this x "
        "the real-test W1.")
    max_share_marginals_worse: float = Field(
        default=0.25, description="Share of variables allowed to be worse (see marginal_w1_baseline_ratio).")
    max_mia_auroc: float = Field(
        default=0.60, description="Membership-inference AUROC allowed for every attack (distance in features, "
        "distance over code sets, DOMIAS density ratio), members at the real sampling fraction (0.5 = chance).")
    max_dcr_share_below_real_p5: float = Field(
        default=0.10, description="Share of synthetic records closer to a train record than the 5th percentile of "
        "real held-out records' distances (about 0.05 when synthetic is like unseen real data).")
    copy_baseline_ratio: float = Field(
        default=1.5, description="Copy shares (visits whose token sequence, token multiset, header or code set "
        "equals a train visit's; token n-grams found in train; near-copied patients) may be at most this x the "
        "same share for real held-out patients (or copy_floor, whichever is larger).")
    copy_floor: float = Field(
        default=0.02, description="Copy share always allowed, because two real samples share little by chance.")
    max_attribute_advantage: float = Field(
        default=0.05, description="Attribute inference (mortality, top diagnoses from quasi-identifiers with the "
        "synthetic data): risk on train patients minus risk on held-out patients (or "
        "attribute_advantage_se_multiplier x its standard error, whichever is larger).")
    attribute_advantage_se_multiplier: float = Field(
        default=2.0, description="Standard errors of the attribute advantage always allowed (sampling noise of a "
        "small held-out set).")

    def thresholds(self):
        from synehrgy_assets.core.release_gates import GateThresholds

        return GateThresholds(**{k: getattr(self, k) for k in GateThresholds.__dataclass_fields__})


def gates_dir(workspace: WorkspaceResource) -> Path:
    return workspace.artifacts_dir / "gates"


def cohort_fingerprint(cohort_dir: Path) -> str:
    """sha256 (16 hex digits) over the cohort's Parquet files, names included, in a fixed order."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(cohort_dir).rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{cohort_dir} holds no Parquet tables: materialize synthetic_cohort")
    for path in files:
        digest.update(str(path.relative_to(cohort_dir)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def write_verdict(workspace: WorkspaceResource, check: str, cohort_id: str | None, passed: bool,
                  detail: dict) -> None:
    gates_dir(workspace).mkdir(parents=True, exist_ok=True)
    write_json(gates_dir(workspace) / f"{check}.json",
               {"check": check, "cohort_id": cohort_id, "passed": bool(passed), **_finite(detail)})


def read_verdicts(workspace: WorkspaceResource, checks: list[str], cohort_id: str) -> dict[str, dict]:
    """{check: {status, passed, cohort_id, reason}}; only a PASSED verdict on `cohort_id` passes."""
    out = {}
    for check in checks:
        path = gates_dir(workspace) / f"{check}.json"
        if not path.exists():
            out[check] = {"status": NOT_RUN, "passed": False, "reason": "never run in this workspace"}
            continue
        verdict = json.loads(path.read_text())
        if verdict.get("cohort_id") != cohort_id:
            out[check] = {"status": STALE, "passed": False, "cohort_id": verdict.get("cohort_id"),
                          "reason": f"judged cohort {verdict.get('cohort_id')}, the workspace holds {cohort_id}"}
            continue
        out[check] = {"status": PASSED if verdict["passed"] else FAILED, "passed": bool(verdict["passed"]),
                      "cohort_id": cohort_id, "reason": verdict.get("reason", "")}
    return out


def _finite(value):
    """JSON-safe: NaN and infinities become None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
