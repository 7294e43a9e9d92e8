"""The code location `synehrgy` (pyproject's [tool.dg]: `dg dev`, `dg check defs`).

Everything under `synehrgy_assets/defs/` (assets, checks, jobs, schedules, sensors) is found by
`dg.load_from_defs_folder`; this module adds what the folder does not hold: the resources,
configured from the environment through `dg.EnvVar` (resolved by Dagster when a run starts, so a
secret in a tracking URI is never stored with the run), and the default executor.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from synehrgy_assets.defs.jobs import in_process_by_default_executor

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the folder holding pyproject.toml ([tool.dg])

# Truthy spellings of a flag variable. Dagster's EnvVar resolves strings and ints only, so the one
# boolean (SYNEHRGY_SYNTHETIC_HOSPITAL) is read here.
_TRUE = {"1", "true", "yes", "on"}


def env_or(name: str, default, kind: type = str):
    """`dg.EnvVar(name)` when the variable is set and not empty, else `default`: an unset variable
    keeps the resource's default instead of failing the run (EnvVar has no default of its own)."""
    if not os.environ.get(name, "").strip():
        return default
    return dg.EnvVar.int(name) if kind is int else dg.EnvVar(name)


def synthetic_hospital_requested() -> bool:
    """SYNEHRGY_SYNTHETIC_HOSPITAL=1: the built-in simulated hospital, asked for explicitly."""
    return os.environ.get("SYNEHRGY_SYNTHETIC_HOSPITAL", "").strip().lower() in _TRUE


def build_resources(
    home: str | None = None,
    mimic_dir: str | None = None,
    synthetic_hospital: bool | None = None,
    synthetic_patients: int | None = None,
    release_gate=None,
    tracking_uri: str | None = None,
) -> dict:
    """Resources for one environment. The arguments are the configuration; for an argument left out
    (None) the environment variable is used (MIMIC_DIR, SYNEHRGY_SYNTHETIC_HOSPITAL,
    SYNEHRGY_SYNTHETIC_PATIENTS, MIMIC_TWIN_FILES, MLFLOW_TRACKING_URI, MLFLOW_UI_URL; the workspace
    root from SYNEHRGY_HOME, else ./.synehrgy, by `WorkspaceLayout.at`)."""
    from dagster_dbt import DbtCliResource

    from synehrgy_assets.core.workspace_layout import WorkspaceLayout, configured_tracking_uri
    from synehrgy_assets.defs.gates import ReleaseGateResource
    from synehrgy_assets.defs.staging import DBT_PROJECT_DIR, dbt_executable, dbt_project
    from synehrgy_assets.resources import DEFAULT_MLFLOW_UI_URL, MimicSourceResource, MlflowResource, WorkspaceResource

    root = str(WorkspaceLayout.at(home).root)
    return {
        "workspace": WorkspaceResource(home=root),
        "mimic_source": MimicSourceResource(
            mimic_dir=env_or("MIMIC_DIR", "") if mimic_dir is None else mimic_dir,
            synthetic_hospital=synthetic_hospital_requested() if synthetic_hospital is None else synthetic_hospital,
            synthetic_patients=synthetic_patients or env_or("SYNEHRGY_SYNTHETIC_PATIENTS", 1000, int),
            twin_files=env_or("MIMIC_TWIN_FILES", "error"),
        ),
        "mlflow_tracking": MlflowResource(
            home=root,
            # A plain string, not an EnvVar: the CLI, the sensors and tests call this resource's
            # client outside a run, where Dagster resolves no EnvVar.
            tracking_uri=configured_tracking_uri() if tracking_uri is None else tracking_uri,
            ui_url=env_or("MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL),
        ),
        "release_gate": release_gate or ReleaseGateResource(),
        # The dbt next to this interpreter: the UI command works in a shell without the venv on PATH.
        "dbt": DbtCliResource(
            project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
        ),
    }


def build_definitions(**resource_overrides) -> dg.Definitions:
    """The defs folder's definitions with this environment's resources (arguments: `build_resources`)."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=PROJECT_ROOT),
        dg.Definitions(
            resources=build_resources(**resource_overrides),
            # ad-hoc materializations (UI, `dg launch`) run in one process too
            executor=in_process_by_default_executor,
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
