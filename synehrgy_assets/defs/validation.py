"""Great Expectations 1.x suites as gating asset checks on `synthetic_cohort` (severity ERROR, not blocking).

A failing suite keeps `champion` where it is: nothing malformed reaches consumers. Each suite
writes its verdict for the cohort it read (defs/gates.py), which the release checks.
"""


import json

import dagster as dg

from synehrgy_assets.defs.gates import write_verdict
from synehrgy_assets.defs.synthesis import load_synthetic_cohort, synthetic_cohort
from synehrgy_assets.resources import WorkspaceResource


def _check(suite: str):
    @dg.asset_check(
        name=f"gx_{suite}",
        asset=synthetic_cohort,
        description=f"Great Expectations suite on the synthetic `{suite}` table (gates `champion`).",
    )
    def _gx_check(workspace: WorkspaceResource) -> dg.AssetCheckResult:
        from synehrgy_assets.core import validation

        provenance = json.loads((workspace.layout.synthetic_cohort / "provenance.json").read_text())
        cohort_id = provenance.get("cohort_id")
        cohort = load_synthetic_cohort(workspace)
        if suite == "visits":
            result = validation.validate_visits(cohort)
        elif suite == "visit_codes":
            result = validation.validate_codes(cohort)
        else:
            from synehrgy_assets.core.tokens import load_variables

            result = validation.validate_measurements(cohort, load_variables())
        reason = (f"{result.successful} of {result.evaluated} expectations met" if result.success
                  else f"{result.evaluated - result.successful} of {result.evaluated} expectations failed")
        write_verdict(workspace, f"gx_{suite}", cohort_id, result.success,
                      {"reason": reason, "failures": result.failures})
        return dg.AssetCheckResult(
            passed=result.success,
            severity=dg.AssetCheckSeverity.ERROR,
            description=reason,
            metadata={
                "cohort_id": str(cohort_id),
                "evaluated_expectations": result.evaluated,
                "successful_expectations": result.successful,
                "failures": dg.MetadataValue.json(result.failures),
            },
        )

    return _gx_check


gx_checks = [_check(s) for s in ("visits", "visit_codes", "measurements")]
