"""Great Expectations 1.x suites as blocking asset checks on `synthetic_cohort`.

A failing suite blocks the release: nothing malformed reaches consumers.
"""


import dagster as dg

from synehrgy_assets.defs.synthesis import load_synthetic_cohort, synthetic_cohort
from synehrgy_assets.resources import WorkspaceResource


def _check(suite: str):
    @dg.asset_check(
        name=f"gx_{suite}",
        asset=synthetic_cohort,
        blocking=True,
        description=f"Great Expectations suite on the synthetic `{suite}` table.",
    )
    def _gx_check(workspace: WorkspaceResource) -> dg.AssetCheckResult:
        from synehrgy_assets.core import validation

        cohort = load_synthetic_cohort(workspace)
        if suite == "visits":
            result = validation.validate_visits(cohort)
        elif suite == "visit_codes":
            result = validation.validate_codes(cohort)
        else:
            from synehrgy_assets.core.tokens import load_variables

            result = validation.validate_measurements(cohort, load_variables())
        return dg.AssetCheckResult(
            passed=result.success,
            metadata={
                "evaluated_expectations": result.evaluated,
                "successful_expectations": result.successful,
                "failures": dg.MetadataValue.json(result.failures),
            },
        )

    return _gx_check


gx_checks = [_check(s) for s in ("visits", "visit_codes", "measurements")]
