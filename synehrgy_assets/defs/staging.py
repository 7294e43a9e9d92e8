"""Stage 1: dbt_mimic stages the raw tables into DuckDB; every dbt model is a Dagster asset."""


import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any, Mapping

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer

from synehrgy_assets.defs.raw import raw_table_key
from synehrgy_assets.resources import MimicSourceResource, WorkspaceResource

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_mimic"


def dbt_executable() -> str:
    """The `dbt` installed next to the running interpreter, so loading never depends on PATH."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else "dbt"


class LocalDbtPreparer(DagsterDbtProjectPreparer):
    """dagster-dbt's preparer (`dbt deps`, `dbt parse`), run with `dbt_executable()`, not PATH's `dbt`."""

    def _prepare_packages(self, project: DbtProject) -> None:
        DbtCliResource(project_dir=project, dbt_executable=dbt_executable()).cli(
            ["deps", "--quiet"], target_path=project.target_path
        ).wait()

    def _prepare_manifest(self, project: DbtProject) -> None:
        DbtCliResource(project_dir=project, dbt_executable=dbt_executable()).cli(
            self._prepare_project_cli_args, target_path=project.target_path
        ).wait()


@cache
def dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    preparer = LocalDbtPreparer()  # DbtProject takes no preparer: call it, not project.prepare_if_dev()
    preparer.prepare_if_dev(project)
    if not project.manifest_path.exists():
        # Scripts, pytest and `dagster asset materialize` do not run the dev preparer.
        preparer.prepare(project)
    return project


class MimicDbtTranslator(DagsterDbtTranslator):
    """dbt models keep their names as keys; each raw source maps to its `mimic_raw/<table>` asset."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return raw_table_key(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "staging"


def dbt_environment(workspace: WorkspaceResource) -> dict[str, str]:
    """The variables profiles.yml reads (dbt runs with its own working directory)."""
    workspace.ensure()
    return {
        "SYNEHRGY_DUCKDB_PATH": str(workspace.duckdb_path),
        "SYNEHRGY_DUCKDB_THREADS": str(workspace.duckdb_threads),
        "SYNEHRGY_DUCKDB_MEMORY_LIMIT": workspace.duckdb_memory_limit,
        "SYNEHRGY_DUCKDB_TEMP_DIR": str(workspace.root / "duckdb_tmp"),
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
    files = mimic_source.resolve(workspace)
    os.environ.update(dbt_environment(workspace))
    context.log.info(f"Staging {files.directory} ({files.header_case}-case headers) into {workspace.duckdb_path}")
    args = ["build", "--vars", json.dumps(files.dbt_vars())]
    events = list(dbt.cli(args, context=context).stream())
    yield from with_row_counts(events, workspace)


def with_row_counts(events, workspace: WorkspaceResource):
    """Attach `dagster/row_count` to every table model, counted after the build.

    Counted here rather than with dagster-dbt's `fetch_row_counts()`: that keeps the dbt adapter's
    DuckDB connection open in this process, and DuckDB then refuses our own connections to the file.
    """
    with workspace.connect(read_only=True) as con:
        tables = {
            r[0]
            for r in con.execute("select table_name from duckdb_tables() where schema_name = 'main'").fetchall()
        }
        for event in events:
            table = getattr(event, "output_name", None)  # dagster-dbt names outputs after the model
            if isinstance(event, dg.Output) and table in tables:
                rows = con.execute(f'select count(*) from main."{table}"').fetchall()[0][0]
                event = event.with_metadata({**event.metadata, "dagster/row_count": int(rows)})
            yield event


def mart_key(model_name: str) -> dg.AssetKey:
    from dagster_dbt import get_asset_key_for_model

    return get_asset_key_for_model([dbt_mimic_models], model_name)
