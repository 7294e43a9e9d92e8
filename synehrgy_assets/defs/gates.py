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
from dataclasses import fields
from pathlib import Path

import dagster as dg
from pydantic import Field, create_model

from synehrgy_assets.core.release_gates import GateThresholds

from synehrgy_assets.resources import WorkspaceResource, write_json

PASSED, FAILED, NOT_RUN, STALE = "PASSED", "FAILED", "NOT_RUN", "STALE"


class _ReleaseGates(dg.ConfigurableResource):
    """Thresholds a synthetic cohort must meet before alias `champion` moves to it. Fidelity and
    utility thresholds are ratios to the real-test baseline (real held-out patients compared with
    real train patients the same way), see docs/evaluation.md. The fields, their defaults and their
    descriptions are those of `core.release_gates.GateThresholds`, the one source of thresholds."""

    def thresholds(self) -> GateThresholds:
        return GateThresholds(**{f.name: getattr(self, f.name) for f in fields(GateThresholds)})


# Built from the dataclass, so a threshold added or changed in core is a resource field (launchpad,
# run config) with the same default, without a second list to keep in step.
ReleaseGateResource = create_model(
    "ReleaseGateResource", __base__=_ReleaseGates, __module__=__name__,
    **{f.name: (float, Field(default=f.default, description=f.metadata["description"]))
       for f in fields(GateThresholds)},
)
ReleaseGateResource.__doc__ = _ReleaseGates.__doc__


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
    workspace.layout.gates.mkdir(parents=True, exist_ok=True)
    write_json(workspace.layout.gates / f"{check}.json",
               {"check": check, "cohort_id": cohort_id, "passed": bool(passed), **_finite(detail)})


def read_verdicts(workspace: WorkspaceResource, checks: list[str], cohort_id: str) -> dict[str, dict]:
    """{check: {status, passed, cohort_id, reason, rows, thresholds}} (rows and thresholds when the
    check recorded them); only a PASSED verdict on `cohort_id` passes."""
    out = {}
    for check in checks:
        path = workspace.layout.gates / f"{check}.json"
        if not path.exists():
            out[check] = {"status": NOT_RUN, "passed": False, "reason": "never run in this workspace"}
            continue
        verdict = json.loads(path.read_text())
        if verdict.get("cohort_id") != cohort_id:
            out[check] = {"status": STALE, "passed": False, "cohort_id": verdict.get("cohort_id"),
                          "reason": f"judged cohort {verdict.get('cohort_id')}, the workspace holds {cohort_id}"}
            continue
        out[check] = {"status": PASSED if verdict["passed"] else FAILED, "passed": bool(verdict["passed"]),
                      "cohort_id": cohort_id, "reason": verdict.get("reason", ""),
                      # what was compared (publishable figures) and the thresholds it was judged by
                      **{k: verdict[k] for k in ("rows", "thresholds") if k in verdict}}
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
