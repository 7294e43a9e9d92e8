"""Loud data loss: one asset check per kind of drop, on the mart it affects (core/staging_checks.py).

Each check reads `staging_audit` of the build waiting for publication (or, when none waits, of
the published one) and compares the share of rows and of patients lost with a WARN and an ERROR
threshold (run config, editable in the launchpad). The blocking checks also decide publication:
an ERROR discards the waiting build (the published warehouse stays as it was), and the last of
them to pass publishes it (core/staging_build.py). `code_tables_not_empty` only ever warns.
"""

import dagster as dg
from pydantic import Field

from synehrgy_assets.core.staging_build import judging, record_verdict
from synehrgy_assets.core.staging_checks import (
    BLOCKING_LOSS_CHECKS, LOSS_CHECKS, LOSS_DEFAULTS, Thresholds, evaluate_loss, read_audit,
)  # fmt: skip
from synehrgy_assets.defs.staging import mart_key
from synehrgy_assets.resources import WorkspaceResource


def _config_class(name: str, defaults: Thresholds) -> type:
    """A dg.Config with this check's default thresholds (shares in [0, 1])."""

    class _Config(dg.Config):
        warn_row_share: float = Field(
            default=defaults.warn_row_share,
            description="WARN when the share of rows lost is above this (0 = any loss warns).")
        error_row_share: float = Field(
            default=defaults.error_row_share,
            description="ERROR (blocks the tokens) when the share of rows lost reaches this.")
        warn_patient_share: float = Field(
            default=defaults.warn_patient_share,
            description="WARN when the share of patients who lost rows is above this.")
        error_patient_share: float = Field(
            default=defaults.error_patient_share,
            description="ERROR (blocks the tokens) when the share of patients who lost rows reaches this.")

        def thresholds(self) -> Thresholds:
            return Thresholds(self.warn_row_share, self.error_row_share, self.warn_patient_share, self.error_patient_share)

    _Config.__name__ = _Config.__qualname__ = "".join(w.title() for w in name.split("_")) + "Config"
    return _Config


DESCRIPTIONS = {
    "stays_dropped_for_bad_data": "ICU stays dropped for bad data: missing ids or times, outtime before intime, "
    "no admission or patient, unparseable / absent DOB, DOB after admission, an absurd DOB, gender not M/F.",
    "measurement_values_dropped": "Measurement values dropped as unparseable or outside the variable's valid range.",
    "valuenum_not_numeric": "CHARTEVENTS / LABEVENTS rows whose VALUENUM is present but not a number.",
    "measurement_rows_of_unknown_stays": "CHARTEVENTS rows whose ICUSTAY_ID is in no row of ICUSTAYS (orphans), "
    "dropped because no stay can hold them.",
    "code_rows_dropped": "ICD code rows dropped: empty code, or an HADM_ID missing from ADMISSIONS (orphans).",
    "code_tables_not_empty": "WARN when DIAGNOSES_ICD or PROCEDURES_ICD has no rows: the run continues without "
    "those codes, and the code-based metrics and gates report 'not applicable'.",
}


def _make_check(name: str):
    config_cls = _config_class(name, LOSS_DEFAULTS[name])
    mart = LOSS_CHECKS[name]

    @dg.asset_check(
        asset=mart_key(mart), name=name, description=DESCRIPTIONS[name],
        blocking=name in BLOCKING_LOSS_CHECKS,
    )  # fmt: skip
    def _check(context: dg.AssetCheckExecutionContext, config: config_cls, workspace: WorkspaceResource):
        import duckdb

        workspace.ensure()
        published = "n/a"
        with judging(workspace.root, workspace.layout.duckdb, context.run.run_id) as (db, pending):
            if db is None:  # another blocking check of this run failed the build: nothing to judge
                return dg.AssetCheckResult(
                    passed=False, severity=dg.AssetCheckSeverity.WARN,
                    description=f"not judged: staging build {pending['build_id']} was discarded "
                    f"({pending.get('reason', '?')})",
                    metadata={"staging_build_id": str(pending["build_id"]), "staging_build_state": "failed"},
                )
            with duckdb.connect(str(db), read_only=True) as con:
                audit = read_audit(con)
                build = con.execute("select any_value(build_id) from main.staging_build").fetchall()[0][0]
            r = evaluate_loss(name, audit, config.thresholds())
            if pending and name in BLOCKING_LOSS_CHECKS:
                state = record_verdict(workspace.root, workspace.layout.duckdb, str(build), name, r.severity, r.message())
                published = state.get("status", "?")
        if r.severity != "PASS":
            (context.log.warning if r.severity == "WARN" else context.log.error)(f"{name} on {mart}: {r.message()}")
        if published == "published":
            context.log.info(f"Staging build {build}: every blocking check passed; published to {workspace.layout.duckdb}")
        elif published == "failed":
            context.log.error(f"Staging build {build} is not published (discarded): {name} is an ERROR; "
                              f"{workspace.layout.duckdb} keeps the previous build")
        return dg.AssetCheckResult(
            passed=r.passed,
            severity=dg.AssetCheckSeverity.ERROR if r.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
            description=r.message(),
            metadata={
                "verdict": r.severity,
                "rows_lost": r.rows_lost,
                "rows_total": r.rows_total,
                "row_share": float(r.row_share),
                "patients_lost": r.patients_lost,
                "patients_total": r.patients_total,
                "patient_share": float(r.patient_share),
                **{f"lost/{k}": int(v) for k, v in r.details.items()},
                "thresholds": dg.MetadataValue.json(config.thresholds().__dict__),
                "staging_build_id": str(build),
                "staging_build_state": published,
            },
        )

    return _check


staging_loss_checks = [_make_check(name) for name in LOSS_CHECKS]
