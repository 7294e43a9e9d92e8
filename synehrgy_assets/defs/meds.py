"""The staged real cohort as a MEDS 0.4 dataset (docs/meds.md), in the private folder."""



import dagster as dg
from pydantic import Field

from synehrgy_assets.defs.staging import mart_key
from synehrgy_assets.defs.tokens import patient_split
from synehrgy_assets.resources import WorkspaceResource, sql_literal


class MedsExportConfig(dg.Config):
    shard_rows: int = Field(
        default=1_000_000,
        description="Target events per data shard; a shard closes at the next subject boundary.",
    )


@dg.asset(
    group_name="staging",
    deps=[patient_split, *(mart_key(m) for m in ("visits", "visit_codes", "visit_phenotypes", "measurements"))],
    kinds={"parquet"},
    description=(
        "The staged real cohort as a MEDS 0.4 dataset (data shards, codes, subject splits with "
        "train/tuning/held_out from patient_split) in the private folder."
    ),
)
def meds_export(
    context: dg.AssetExecutionContext, config: MedsExportConfig, workspace: WorkspaceResource
) -> dg.MaterializeResult:
    from synehrgy_assets.core.meds import export_meds

    out = workspace.layout.meds
    # Read-only: other assets may read the warehouse meanwhile. The sort may spill: keep it in the workspace.
    with workspace.connect(read_only=True) as con:
        con.execute(f"set temp_directory = {sql_literal(workspace.layout.duckdb_tmp)}")
        summary = export_meds(con, out, shard_rows=config.shard_rows)
    context.log.info(
        f"MEDS export {summary.dataset_version}: {summary.events:,} events, {summary.subjects:,} subjects, "
        f"{summary.shards} shard(s)"
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "dataset_version": summary.dataset_version,
            "events": summary.events,
            "subjects": summary.subjects,
            "shards": summary.shards,
            "max_shard_events": summary.max_shard_events,
            "codes": summary.codes,
            "births_age_capped": summary.births_age_capped,
            **{f"subjects/{k}": v for k, v in sorted(summary.subjects_by_split.items())},
            "events_by_code_family": dg.MetadataValue.md(summary.families_markdown()),
            "icd_descriptions_from": ", ".join(summary.icd_descriptions_from) or "none (ICD codes described by number)",
        }
    )


@dg.asset_check(
    asset=meds_export,
    name="meds_export_readable",
    description=(
        "Re-reads the MEDS folder as a MEDS reader would: the `meds` package's schemas, every non-static "
        "event timed, each subject's events in one shard and in time order, every code and subject in the "
        "metadata. Fails on any of these; only counts go to the metadata."
    ),
)
def meds_export_readable(workspace: WorkspaceResource) -> dg.AssetCheckResult:
    from synehrgy_assets.core.meds_checks import check_meds_dir

    check = check_meds_dir(workspace.layout.meds)
    return dg.AssetCheckResult(
        passed=check.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(check.problems) or "readable: every non-static event timed and in order",
        metadata={
            "events": check.events,
            "subjects": check.subjects,
            "shards": check.shards,
            "untimed_non_static_events": check.untimed,
            "out_of_order_events": check.out_of_order_rows,
            "subjects_in_several_shards": check.subjects_in_several_shards,
            "subjects_with_several_genders": check.subjects_with_several_genders,
            "problems": len(check.problems),
        },
    )


meds_checks = [meds_export_readable]
