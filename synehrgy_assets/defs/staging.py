"""Stage 1: dbt_mimic stages the raw tables into DuckDB; every dbt model is a Dagster asset."""


import json
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import Any, Mapping

import dagster as dg
from filelock import FileLock
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, DbtProjectPreparer, dbt_assets

from synehrgy_assets.defs.raw import raw_table_key
from synehrgy_assets.resources import MimicSourceResource, WorkspaceResource

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_mimic"


def dbt_executable() -> str:
    """The `dbt` installed next to the running interpreter, so loading never depends on PATH."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else "dbt"


class LocalDbtPreparer(DbtProjectPreparer):
    """Prepares the project (`dbt deps` when it declares packages, then `dbt parse`) with
    `dbt_executable()`, not PATH's `dbt`; under `dagster dev` on every load, as dagster-dbt's own
    preparer does. Built on dagster-dbt's public preparer interface only."""

    def prepare_if_dev(self, project: DbtProject) -> None:
        if self.using_dagster_dev():
            self.prepare(project)

    def prepare(self, project: DbtProject) -> None:
        dbt = DbtCliResource(project_dir=project, dbt_executable=dbt_executable())
        if any((project.project_dir / name).exists() for name in ("dependencies.yml", "packages.yml")):
            dbt.cli(["deps", "--quiet"], target_path=project.target_path).wait()
        dbt.cli(["parse", "--quiet"], target_path=project.target_path).wait()
        if not project.manifest_path.exists():
            raise FileNotFoundError(f"dbt parse in {project.project_dir} wrote no {project.manifest_path}")


@cache
def dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    preparer = LocalDbtPreparer()  # DbtProject takes no preparer: call it, not project.prepare_if_dev()
    # Processes that load the definitions at once (a code server and a CLI run, the test workers)
    # would otherwise write target/manifest.json together and one could read it half-written.
    project.manifest_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(project.manifest_path.parent / ".prepare.lock"):
        preparer.prepare_if_dev(project)
        if not project.manifest_path.exists() or _manifest_is_stale(project.manifest_path):
            # Scripts, pytest and `dagster asset materialize` do not run the dev preparer; a manifest
            # older than the project's files would hide new models, tests and checks.
            preparer.prepare(project)
    return project


def _manifest_is_stale(manifest: Path) -> bool:
    built = manifest.stat().st_mtime
    sources = [DBT_PROJECT_DIR / "dbt_project.yml"]
    for folder in ("models", "macros", "tests", "seeds"):
        sources.extend((DBT_PROJECT_DIR / folder).rglob("*.*"))
    return any(p.stat().st_mtime > built for p in sources if p.is_file())


class MimicDbtTranslator(DagsterDbtTranslator):
    """dbt models keep their names as keys; each raw source maps to its `mimic_raw/<table>` asset."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return raw_table_key(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "staging"


DBT_RUNS_KEPT = 3


def dbt_run_folder(workspace: WorkspaceResource, build_id: str) -> Path:
    """`<home>/private/dbt_runs/<build id>`: the target and log path of one staging build's dbt run.
    The newest DBT_RUNS_KEPT - 1 earlier ones are kept for reading; older ones are removed."""
    runs = workspace.layout.dbt_runs
    runs.mkdir(parents=True, exist_ok=True)
    earlier = sorted(p for p in runs.iterdir() if p.is_dir())  # build ids start with their UTC time
    for old in earlier[: max(len(earlier) - (DBT_RUNS_KEPT - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return runs / build_id


def dbt_profile_vars(workspace: WorkspaceResource, duckdb_path: Path) -> dict[str, str]:
    """The `--vars` that profiles.yml reads: the build file dbt writes (core/staging_build.py; the
    published warehouse `workspace.layout.duckdb` is never written by dbt), its settings and its
    spill folder (which holds real rows: inside the workspace)."""
    workspace.ensure()
    return {
        "synehrgy_duckdb_path": str(duckdb_path),
        "synehrgy_duckdb_threads": str(workspace.duckdb_threads),
        "synehrgy_duckdb_memory_limit": workspace.duckdb_memory_limit,
        "synehrgy_duckdb_temp_dir": str(workspace.layout.duckdb_tmp),
    }


@dbt_assets(
    manifest=dbt_project().manifest_path,
    project=dbt_project(),
    dagster_dbt_translator=MimicDbtTranslator(),
)
def dbt_mimic_models(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    workspace: WorkspaceResource,
    mimic_source: MimicSourceResource,
):
    """Atomic staging: dbt builds a fresh file, which waits in its folder until the blocking loss
    checks have judged it (defs/staging_checks.py): they publish it when all pass or warn, and
    discard it on an ERROR. A failed dbt build is discarded here.

    The marts' materializations are yielded once the build is green (they describe the pending
    build, `staging_published: false`); the published warehouse changes only when the checks pass."""
    from synehrgy_assets.core.staging_build import (
        changed_files, discard_build, file_stats, new_build, record_failure, record_pending, source_fingerprint,
        write_marker,
    )  # fmt: skip
    from synehrgy_assets.core.staging_checks import BLOCKING_LOSS_CHECKS, dbt_failure_message

    files = mimic_source.resolve(workspace)
    build_id, build_db = new_build(workspace.root)
    stats, fingerprint = file_stats(files.files), source_fingerprint(files.files)
    context.log.info(
        f"Staging build {build_id}: {files.directory} ({files.header_case}-case headers) into {build_db}; "
        f"published to {workspace.layout.duckdb} only if dbt succeeds and every blocking check passes"
    )
    try:
        # dbt's artifacts and dbt.log go to the workspace's private folder (they can quote what DuckDB
        # read), not into the installed project, where one folder per run would pile up.
        dbt_folder = dbt_run_folder(workspace, build_id)
        dbt_vars = {**files.dbt_vars(), **dbt_profile_vars(workspace, build_db)}
        invocation = dbt.cli(["build", "--vars", json.dumps(dbt_vars)], context=context, raise_on_error=False,
                             target_path=dbt_folder)
        events = list(invocation.stream())
        if not invocation.is_successful():
            try:
                run_results = invocation.get_artifact("run_results.json")
            except Exception:  # dbt died before writing it
                run_results = None
            error = invocation.get_error()
            raise dg.Failure(
                description=dbt_failure_message(run_results, fallback=str(error or "")),
                metadata={"staging_build_id": build_id, "published": False, "dbt_log": str(dbt_folder / "dbt.log")},
            )
        changed = changed_files(stats, files.files)
        if changed:
            raise dg.Failure(
                description=(
                    "Staging failed; the previously published marts are untouched: MIMIC-III file(s) changed "
                    f"while staging read them: {', '.join(changed)}. Expected the raw files to stay as they are "
                    "during a run; re-run when the copy is complete."
                ),
                metadata={"staging_build_id": build_id, "published": False},
            )
        info = write_marker(build_db, build_id, str(files.directory), fingerprint)
        record_pending(workspace.root, build_id, build_db, list(BLOCKING_LOSS_CHECKS), run_id=context.run.run_id)
    except BaseException as exc:
        discard_build(build_db)
        reason = exc.description if isinstance(exc, dg.Failure) else f"{type(exc).__name__}: {exc}"
        record_failure(workspace.root, build_id, " ".join((reason or type(exc).__name__).split())[:400])
        raise
    context.log.info(
        f"Staging build {build_id} is green in dbt; it is published to {workspace.layout.duckdb} once the "
        f"blocking checks ({', '.join(BLOCKING_LOSS_CHECKS)}) pass"
    )
    yield from with_row_counts(events, workspace, {**info.metadata(), "staging_published": False}, db_path=build_db)


def with_row_counts(events, workspace: WorkspaceResource, build_metadata: dict | None = None,
                    db_path: Path | None = None):
    """Attach `dagster/row_count` (and the staging build id) to every table model of the build file
    `db_path` (default: the published warehouse).

    Counted here rather than with dagster-dbt's `fetch_row_counts()`: that keeps the dbt adapter's
    DuckDB connection open in this process, and DuckDB then refuses our own connections to the file.
    """
    import duckdb

    from synehrgy_assets.core.staging_checks import read_audit, variable_coverage

    with duckdb.connect(str(db_path or workspace.layout.duckdb), read_only=True) as con:
        tables = {
            r[0]
            for r in con.execute("select table_name from duckdb_tables() where schema_name = 'main'").fetchall()
        }
        for event in events:
            table = getattr(event, "output_name", None)  # dagster-dbt names outputs after the model
            if isinstance(event, dg.Output):
                extra = dict(build_metadata or {})
                if table in tables:
                    extra["dagster/row_count"] = int(con.execute(f'select count(*) from main."{table}"').fetchall()[0][0])
                if table == "measurements" and "staging_audit" in tables:
                    extra["variable_coverage"] = dg.MetadataValue.json(variable_coverage(read_audit(con)))
                event = event.with_metadata({**event.metadata, **extra})
            yield event


def published_build(con):
    """The staging build of the published marts (`BuildInfo`); a clear dg.Failure when the workspace's
    newest staging build is pending or failed (named, with why), or when the marts carry no complete
    build marker (a failed, partial or hand-started dbt run) or were changed since."""
    from synehrgy_assets.core.staging_build import StagingBuildError, read_marker, read_state, refusal

    path = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchall()
    root = Path(path[0][0]).parent if path and path[0][0] else None
    try:
        info = read_marker(con)
    except StagingBuildError as exc:
        why = refusal(read_state(root), None) if root else None
        raise dg.Failure(description=f"Refusing the staged marts: {why or exc}") from exc
    why = refusal(read_state(root), info.build_id) if root else None
    if why:
        raise dg.Failure(description=f"Refusing the staged marts: {why}")
    return info


def mart_key(model_name: str) -> dg.AssetKey:
    from dagster_dbt import get_asset_key_for_model

    return get_asset_key_for_model([dbt_mimic_models], model_name)
