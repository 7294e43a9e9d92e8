"""Sensors: new raw MIMIC files trigger the whole graph; every new release is announced."""


import hashlib
from pathlib import Path

import dagster as dg

from synehrgy_assets.defs.jobs import end_to_end_job
from synehrgy_assets.resources import MimicSourceResource


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
    description="Runs the whole graph when the files in the configured MIMIC-III folder (mimic_source.mimic_dir, "
    "env MIMIC_DIR) change (new extract delivered).",
)
def mimic_files_sensor(context: dg.SensorEvaluationContext, mimic_source: MimicSourceResource):
    mimic_dir = mimic_source.mimic_dir.strip()
    if not mimic_dir or not Path(mimic_dir).is_dir():
        return dg.SkipReason("mimic_source.mimic_dir (MIMIC_DIR) is not set or not a directory: nothing to watch")
    fingerprint = directory_fingerprint(Path(mimic_dir))
    if fingerprint == context.cursor:
        return dg.SkipReason(f"no change in {mimic_dir}")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint)


def announcement(metadata: dict, run_id: str | None) -> str:
    """One line about a release materialization (its metadata as plain values)."""
    version, promoted = metadata.get("release_version"), metadata.get("promoted_to_champion")
    status = metadata.get("validation_status", "passed" if promoted else "failed")
    return (f"release v{version} ({status}): "
            + ("alias champion moved to it" if promoted else "champion unchanged")
            + f"; run {run_id or 'none'}")


@dg.asset_sensor(
    asset_key=dg.AssetKey("synthetic_release"),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Announces every new materialization of synthetic_release, whatever made it: the end-to-end "
    "job, the retrain job (and its schedule) or an ad-hoc materialization from the UI or CLI. The tick shows "
    "the release version and whether champion moved.",
)
def release_announcement_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    mat = asset_event.asset_materialization
    metadata = {k: getattr(v, "value", v) for k, v in (mat.metadata if mat else {}).items()}
    message = announcement(metadata, asset_event.run_id)
    context.log.info(message)
    return dg.SkipReason(message)  # announced; nothing to run
