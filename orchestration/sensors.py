"""Sensors: new raw MIMIC files trigger the whole graph; a new champion is announced in the logs."""


import hashlib
import os
from pathlib import Path

import dagster as dg

from orchestration.jobs import end_to_end_job


def directory_fingerprint(directory: Path) -> str:
    """Names, sizes and mtimes of the CSV files: cheap, changes whenever a table is replaced."""
    h = hashlib.sha256()
    for p in sorted(directory.glob("*.csv*")):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


@dg.sensor(
    job=end_to_end_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Runs the whole graph when the files in MIMIC_DIR change (new extract delivered).",
)
def mimic_files_sensor(context: dg.SensorEvaluationContext):
    mimic_dir = os.environ.get("MIMIC_DIR", "")
    if not mimic_dir or not Path(mimic_dir).is_dir():
        return dg.SkipReason("MIMIC_DIR is not set or not a directory: nothing to watch")
    fingerprint = directory_fingerprint(Path(mimic_dir))
    if fingerprint == context.cursor:
        return dg.SkipReason(f"no change in {mimic_dir}")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[end_to_end_job],
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Logs the release outcome after each successful end-to-end run.",
)
def release_announcement_sensor(context: dg.RunStatusSensorContext):
    records = context.instance.fetch_materializations(dg.AssetKey("synthetic_release"), limit=1).records
    if records and records[0].run_id == context.dagster_run.run_id:
        meta = records[0].asset_materialization.metadata
        context.log.info(
            f"release v{meta['release_version'].value} promoted={meta['promoted_to_champion'].value}"
        )
