"""Great Expectations 1.x suites for a (synthetic) cohort in the marts shape.

Plain functions: the Dagster layer runs them as asset checks; tests run them directly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import pandas as pd

from synehrgy_assets.core.cohort import StagedCohort

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

GENDERS = ["M", "F"]
CODE_TYPES = ["diagnosis", "procedure"]
ETHNICITY_GROUPS = ["WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER", "UNKNOWN"]
# ICD-9-CM shapes: diagnoses 3-5 chars (V and E codes included), procedures 2-4 digits.
ICD9_DIAGNOSIS_PATTERN = r"^([0-9]{3,5}|V[0-9]{2,4}|E[0-9]{3,4}|UNK)$"
ICD9_PROCEDURE_PATTERN = r"^([0-9]{2,4}|UNK)$"


@dataclass
class SuiteResult:
    suite: str
    success: bool
    evaluated: int
    successful: int
    failures: list[dict] = field(default_factory=list)

    def as_metadata(self) -> dict:
        return {
            "suite": self.suite,
            "evaluated_expectations": self.evaluated,
            "successful_expectations": self.successful,
            "failures": self.failures,
        }


def _context():
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    try:
        ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # older/newer config shapes: progress bars are cosmetic only
        pass
    return ctx


def _run(ctx, suite_name: str, frame: pd.DataFrame, expectations: list) -> SuiteResult:
    import great_expectations as gx

    batch_definition = (
        ctx.data_sources.add_pandas(name=f"{suite_name}_source")
        .add_dataframe_asset(name=suite_name)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    failures = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            failures.append(
                {
                    "expectation": cfg.type,
                    "column": cfg.kwargs.get("column"),
                    "row_condition": cfg.kwargs.get("row_condition"),
                    "unexpected_count": (r.result or {}).get("unexpected_count"),
                    "observed_value": str((r.result or {}).get("observed_value")),
                    "exception": (r.exception_info or {}).get("exception_message")
                    if isinstance(r.exception_info, dict)
                    else None,
                }
            )
    stats = result.statistics
    return SuiteResult(
        suite=suite_name,
        success=bool(result.success),
        evaluated=int(stats["evaluated_expectations"]),
        successful=int(stats["successful_expectations"]),
        failures=failures,
    )


def validate_visits(cohort: StagedCohort, ctx=None) -> SuiteResult:
    import great_expectations.expectations as gxe

    v = cohort.visits
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("subject_id", "icustay_id", "visit_index", "age_years", "gender", "mortality_inhospital")],
        gxe.ExpectColumnValuesToBeUnique(column="icustay_id"),
        gxe.ExpectColumnValuesToBeBetween(column="age_years", min_value=18, max_value=90),
        gxe.ExpectColumnValuesToBeInSet(column="gender", value_set=GENDERS),
        gxe.ExpectColumnValuesToBeInSet(column="mortality_inhospital", value_set=[0, 1]),
        gxe.ExpectColumnValuesToBeInSet(column="ethnicity_group", value_set=ETHNICITY_GROUPS),
        gxe.ExpectColumnValuesToBeBetween(column="visit_index", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="hours_since_previous_visit", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="los_hours", min_value=0),
    ]
    return _run(ctx or _context(), "synthetic_visits", v, expectations)


def validate_codes(cohort: StagedCohort, ctx=None) -> SuiteResult:
    import great_expectations.expectations as gxe

    c = cohort.visit_codes
    expectations = [
        *[gxe.ExpectColumnValuesToNotBeNull(column=col) for col in ("icustay_id", "code_type", "icd9_code")],
        gxe.ExpectColumnValuesToBeInSet(column="code_type", value_set=CODE_TYPES),
        gxe.ExpectColumnValuesToMatchRegex(
            column="icd9_code", regex=ICD9_DIAGNOSIS_PATTERN, row_condition='code_type=="diagnosis"', condition_parser="pandas"
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="icd9_code", regex=ICD9_PROCEDURE_PATTERN, row_condition='code_type=="procedure"', condition_parser="pandas"
        ),
        gxe.ExpectColumnValuesToBeInSet(column="icustay_id", value_set=cohort.visits["icustay_id"].tolist()),
    ]
    return _run(ctx or _context(), "synthetic_visit_codes", c, expectations)


def validate_measurements(cohort: StagedCohort, variables: pd.DataFrame, ctx=None) -> SuiteResult:
    """Every value inside its variable's valid range; times inside the stay and non-negative."""
    import great_expectations.expectations as gxe

    m = cohort.measurements.merge(
        cohort.visits[["icustay_id", "los_hours"]], on="icustay_id", how="left"
    )
    # Time must not run past the end of the stay (small tolerance for the sampled last gap).
    m = m.assign(hours_after_discharge=m["hours"] - m["los_hours"].fillna(m["hours"]))
    expectations = [
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("icustay_id", "hours", "variable")],
        gxe.ExpectColumnValuesToBeInSet(column="variable", value_set=variables["variable"].tolist()),
        gxe.ExpectColumnValuesToBeBetween(column="hours", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="hours_after_discharge", max_value=1.0),
        gxe.ExpectColumnValuesToBeInSet(column="icustay_id", value_set=cohort.visits["icustay_id"].tolist()),
    ]
    for row in variables.itertuples():
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="value",
                min_value=float(row.valid_low),
                max_value=float(row.valid_high),
                row_condition=f'variable=="{row.variable}"',
                condition_parser="pandas",
            )
        )
    return _run(ctx or _context(), "synthetic_measurements", m, expectations)


def validate_cohort(cohort: StagedCohort, variables: pd.DataFrame) -> dict[str, SuiteResult]:
    ctx = _context()
    return {
        "visits": validate_visits(cohort, ctx),
        "visit_codes": validate_codes(cohort, ctx),
        "measurements": validate_measurements(cohort, variables, ctx),
    }

