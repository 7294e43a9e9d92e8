"""Stage 0: the raw MIMIC-III files (a configured MIMIC folder, or the built-in simulated hospital
when asked for; neither is a default).

One asset per raw table (`mimic_raw/<table>`), so the UI shows which dbt models read which file.
"""

import time

import dagster as dg

from synehrgy_assets.core.mimic_layout import REQUIRED_COLUMNS
from synehrgy_assets.resources import MimicSourceResource, WorkspaceResource

RAW_TABLES = tuple(REQUIRED_COLUMNS)


def raw_table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["mimic_raw", table])


@dg.multi_asset(
    name="mimic_raw_files",
    group_name="raw",
    specs=[
        dg.AssetSpec(raw_table_key(t), kinds={"csv"}, description=f"Raw MIMIC-III v1.4 {t.upper()} file.")
        for t in RAW_TABLES
    ],
    description=(
        "Validates a configured MIMIC-III folder (env MIMIC_DIR; demo or full-release layout) or, when asked "
        "for (--synthetic-hospital, SYNEHRGY_SYNTHETIC_HOSPITAL=1), writes the built-in simulated hospital in "
        "the exact MIMIC layout. With neither it fails and says how to pick one."
    ),
)
def mimic_raw_files(
    context: dg.AssetExecutionContext, workspace: WorkspaceResource, mimic_source: MimicSourceResource
):
    why = mimic_source.source_error()
    if why:  # a configuration error, not a failed delivery: the staging state is left as it was
        raise dg.Failure(description=why, allow_retries=False)
    workspace.ensure()
    started = time.perf_counter()
    data_source = mimic_source.data_source
    row_counts: dict[str, int] = {}
    if mimic_source.uses_synthetic_hospital:
        from synehrgy_assets.core.synthetic_hospital import HospitalConfig, generate_hospital

        out_dir = mimic_source.synthetic_dir(workspace)
        config = HospitalConfig(
            n_patients=mimic_source.synthetic_patients,
            seed=mimic_source.synthetic_seed,
            header_case=mimic_source.synthetic_header_case,
        )
        context.log.warning(
            f"Raw data source: the {data_source} (asked for: --synthetic-hospital), simulated patients, not real ones: "
            f"writing {config} to {out_dir}")
        # generate_hospital writes into a private temp dir and moves files in only on success.
        summary = generate_hospital(out_dir, config, progress=context.log.info)
        row_counts = {t.lower(): int(n) for t, n in summary.rows.items()}
    from synehrgy_assets.core.staging_build import record_failure, source_fingerprint
    from synehrgy_assets.core.staging_checks import check_structure

    try:
        files = mimic_source.resolve(workspace)
        # Repeated header lines, duplicate keys and unreadable bytes in the small tables: one clear
        # error naming the file and line, before dbt runs (MimicStructureError).
        check_structure(files.files)
    except Exception as exc:
        # The newest staging attempt failed: readers of the marts (a retrain) refuse to go on with
        # the older published build as if nothing had been delivered.
        record_failure(workspace.root, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        raise
    fingerprint = source_fingerprint(files.files)
    context.log.info(f"Raw data source: {data_source}: {files.directory} ({files.header_case}-case headers), "
                     f"{time.perf_counter() - started:.1f}s")
    for table in RAW_TABLES:
        path = files.files[table]
        metadata = {
            "data_source": data_source,
            "path": dg.MetadataValue.path(str(path)),
            "header_case": files.header_case,
            "bytes": int(path.stat().st_size),
            "source_fingerprint": fingerprint,
        }
        if mimic_source.uses_synthetic_hospital:
            metadata["simulated_patients"] = int(mimic_source.synthetic_patients)
            metadata["simulated_seed"] = int(mimic_source.synthetic_seed)
        if table in row_counts:
            metadata["dagster/row_count"] = row_counts[table]
        yield dg.MaterializeResult(asset_key=raw_table_key(table), metadata=metadata)
