"""Resources, configured from the environment (embedded defaults: nothing to start by hand)."""


import os

from dagster_dbt import DbtCliResource

from synehrgy_assets.core.workspace_layout import WorkspaceLayout, configured_tracking_uri
from synehrgy_assets.defs.evaluation import ReleaseGateResource
from synehrgy_assets.defs.staging import DBT_PROJECT_DIR, dbt_executable, dbt_project
from synehrgy_assets.resources import MimicSourceResource, MlflowResource, WorkspaceResource


def build_resources(
    home: str | None = None,
    mimic_dir: str | None = None,
    synthetic_patients: int | None = None,
    release_gate: ReleaseGateResource | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Resources for one environment. The arguments are the configuration; the user-facing
    environment variables are read here, and only for an argument left out (None)."""
    layout = WorkspaceLayout.at(home)  # SYNEHRGY_HOME, else ./.synehrgy
    mimic_dir = os.environ.get("MIMIC_DIR", "") if mimic_dir is None else mimic_dir
    n = synthetic_patients or int(os.environ.get("SYNEHRGY_SYNTHETIC_PATIENTS", "1000"))
    return {
        "workspace": WorkspaceResource(home=str(layout.root)),
        "mimic_source": MimicSourceResource(
            mimic_dir=mimic_dir, synthetic_patients=n, twin_files=os.environ.get("MIMIC_TWIN_FILES", "") or "error"
        ),
        "mlflow_tracking": MlflowResource(
            home=str(layout.root),
            tracking_uri=configured_tracking_uri() if tracking_uri is None else tracking_uri,
        ),
        "release_gate": release_gate or ReleaseGateResource(),
        # The dbt next to this interpreter: the UI command works in a shell without the venv on PATH.
        "dbt": DbtCliResource(
            project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
        ),
    }
