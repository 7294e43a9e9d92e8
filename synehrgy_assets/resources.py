"""Dagster resources: every knob of the workspace, the raw data source and MLflow.

The classes live here (next to the assets that use them); `synehrgy_assets/definitions.py`
instantiates them from the environment.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg
from pydantic import Field

from synehrgy_assets.core.workspace_layout import WorkspaceLayout, default_root


def sql_literal(value) -> str:
    """`value` as a quoted SQL string literal (a path or a setting may hold a quote)."""
    return "'" + str(value).replace("'", "''") + "'"


def owner_only(path: Path) -> None:
    """chmod 0600 a file holding real rows (no-op when it does not exist, or belongs to another user
    who chose its mode)."""
    try:
        os.chmod(path, 0o600)
    except (FileNotFoundError, PermissionError):
        pass


def owner_only_tree(directory: Path) -> None:
    """Folders 0700 and files 0600 under `directory` (real-derived arrays written by numpy, which
    creates them with the process umask; the private folder above already bars other users)."""
    directory = Path(directory)
    if not directory.exists():
        return
    os.chmod(directory, 0o700)
    for path in directory.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def default_home() -> str:
    return str(default_root())


class WorkspaceResource(dg.ConfigurableResource):
    """The local workspace: its folders come from `layout` (core/workspace_layout.py)."""

    home: str = Field(default_factory=default_home, description="Root of the local workspace "
                      "(default $SYNEHRGY_HOME, else ./.synehrgy).")
    duckdb_threads: int = Field(default=2, description="DuckDB threads for Python-side queries.")
    duckdb_memory_limit: str = Field(default="8GB", description="DuckDB memory limit.")

    @property
    def layout(self) -> WorkspaceLayout:
        return WorkspaceLayout.at(self.home)

    @property
    def root(self) -> Path:
        return self.layout.root

    @contextmanager
    def lock(self, run_id: str | None = None) -> Iterator[Path]:
        """Hold the workspace lock for a run; raises `WorkspaceBusy` at once when another run holds it."""
        from synehrgy_assets.recovery import workspace_lock

        with workspace_lock(self.root, run_id=run_id) as path:
            yield path

    def ensure(self) -> None:
        if not self.root.exists():
            # A workspace made here holds every real row: owner-only from the start. An existing
            # folder named as home keeps its mode (it may be shared on purpose).
            self.root.mkdir(parents=True, mode=0o700)
        layout = self.layout
        for d in (layout.private, layout.artifacts, layout.raw):
            d.mkdir(parents=True, exist_ok=True)
        # Real-derived data: owner-only permissions.
        os.chmod(layout.private, 0o700)
        owner_only(layout.duckdb)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        import duckdb

        self.ensure()
        path = self.layout.duckdb
        con = duckdb.connect(str(path), read_only=read_only)
        owner_only(path)  # DuckDB creates the file with the process umask (0644)
        try:
            con.execute(f"set threads = {int(self.duckdb_threads)}")
            con.execute(f"set memory_limit = {sql_literal(self.duckdb_memory_limit)}")
            yield con
        finally:
            con.close()
            owner_only(path.with_name(path.name + ".wal"))


class MimicSourceResource(dg.ConfigurableResource):
    """Where raw MIMIC-III comes from: a MIMIC-III folder, or the built-in simulated hospital when
    asked for. Neither is a default: with no folder and no request the raw asset fails and says how
    to pick one, so a deployment that forgot MIMIC_DIR never trains on (and releases) simulated
    patients.

    `mimic_dir` (env `MIMIC_DIR`) names a MIMIC-III v1.4 folder in either official layout;
    `synthetic_hospital` (env `SYNEHRGY_SYNTHETIC_HOSPITAL=1`, CLI `--synthetic-hospital`) writes a raw
    set in the exact MIMIC layout from the simulated hospital instead.
    """

    mimic_dir: str = Field(default="", description="MIMIC-III v1.4 folder (env MIMIC_DIR).")
    synthetic_hospital: bool = Field(
        default=False,
        description="Use the built-in simulated hospital instead of a MIMIC-III folder (env "
        "SYNEHRGY_SYNTHETIC_HOSPITAL=1; CLI --synthetic-hospital). Never chosen by default.",
    )
    synthetic_patients: int = Field(default=1000, description="Simulated hospital size (patients).")
    synthetic_seed: int = Field(default=0, description="Simulated hospital seed.")
    synthetic_header_case: str = Field(default="lower", description="'lower' (demo) or 'upper' (full release) layout.")
    twin_files: str = Field(
        default="error",
        description="When a table has both TABLE.csv and TABLE.csv.gz: 'error' (default: they may differ), "
        "'csv' or 'csv.gz' to read that one for every table (env MIMIC_TWIN_FILES).",
    )

    @property
    def uses_synthetic_hospital(self) -> bool:
        return self.synthetic_hospital and not self.mimic_dir.strip()

    def source_error(self) -> str | None:
        """Why no raw source can be chosen (none configured, or both), or None."""
        if self.synthetic_hospital and self.mimic_dir.strip():
            return (f"Both a MIMIC-III folder ({self.mimic_dir}) and the simulated hospital are configured: "
                    "pick one (unset MIMIC_DIR / mimic_source.mimic_dir, or drop --synthetic-hospital / "
                    "SYNEHRGY_SYNTHETIC_HOSPITAL / mimic_source.synthetic_hospital).")
        if not self.synthetic_hospital and not self.mimic_dir.strip():
            return ("No raw data source configured. Point the graph at a MIMIC-III v1.4 folder (MIMIC_DIR=/path, "
                    "`materialize --mimic-dir /path`, or resources.mimic_source.config.mimic_dir), or ask for the "
                    "built-in simulated hospital explicitly (`materialize --synthetic-hospital`, "
                    "SYNEHRGY_SYNTHETIC_HOSPITAL=1, or resources.mimic_source.config.synthetic_hospital: true).")
        return None

    @property
    def data_source(self) -> str:
        """The source as every output names it (the same words as the datacard and the registry tags,
        core/training_data.py): "synthetic hospital" or "MIMIC-III folder <folder name>" (the name
        only: the full path may name a user's home)."""
        from synehrgy_assets.core.training_data import MIMIC_FOLDER, SYNTHETIC_HOSPITAL

        if self.uses_synthetic_hospital:
            return SYNTHETIC_HOSPITAL
        if self.mimic_dir.strip():
            return f"{MIMIC_FOLDER} {Path(self.mimic_dir).expanduser().resolve().name}"
        return "none configured"

    def synthetic_dir(self, workspace: WorkspaceResource) -> Path:
        return workspace.layout.raw / (
            f"synthetic_hospital_n{self.synthetic_patients}_s{self.synthetic_seed}_{self.synthetic_header_case}"
        )

    def resolve(self, workspace: WorkspaceResource):
        """Return `MimicFiles` for the configured source (raises a clear error when invalid)."""
        from synehrgy_assets.core.mimic_layout import resolve_mimic_dir

        why = self.source_error()
        if why:
            raise ValueError(why)
        if self.uses_synthetic_hospital:
            return resolve_mimic_dir(self.synthetic_dir(workspace))
        return resolve_mimic_dir(Path(self.mimic_dir).expanduser(), twins=self.twin_files)


DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default


def default_mlflow_ui_url() -> str:
    return os.environ.get("MLFLOW_UI_URL", "") or DEFAULT_MLFLOW_UI_URL


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + model registry (SQLite + local artifacts by default).

    MLflow stores absolute artifact locations. When the store is the workspace's own (the default
    `sqlite:///<home>/mlflow.db` with `<home>/mlartifacts`), `setup()` opens it with
    `core/mlflow_store.open_workspace_store`, which points the stored locations at where the
    workspace is now (moved or copied), so runs, logged models and registered versions keep their
    artifacts.
    """

    tracking_uri: str = Field(default="", description="MLflow tracking and registry URI; empty = "
                              "sqlite:///<home>/mlflow.db (env MLFLOW_TRACKING_URI).")
    artifact_root: str = Field(default="", description="Artifact root of new experiments; empty = <home>/mlartifacts.")
    experiment_name: str = Field(default="synehrgy", description="MLflow experiment of every run of the graph.")
    model_name: str = Field(default="synehrgy-gpt", description="Registered model for the generator.")
    release_name: str = Field(default="synehrgy-synthetic-cohort", description="Registered model for releases.")
    home: str = Field(default_factory=default_home, description="Root of the local workspace (holds the default store).")
    ui_url: str = Field(
        default_factory=default_mlflow_ui_url,
        description="Base URL of the MLflow UI that asset metadata links to (env MLFLOW_UI_URL; default the "
        "local `mlflow ui` address http://127.0.0.1:5000).",
    )

    @property
    def layout(self) -> WorkspaceLayout:
        return WorkspaceLayout.at(self.home)

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or self.layout.mlflow_tracking_uri

    @property
    def resolved_artifact_root(self) -> str:
        if not self.artifact_root:
            return self.layout.mlflow_artifacts.as_uri()
        return self.artifact_root if "://" in self.artifact_root else Path(self.artifact_root).resolve().as_uri()

    @property
    def uses_workspace_store(self) -> bool:
        """The default store: SQLite and artifacts both inside the workspace (so they move with it)."""
        return not self.tracking_uri and not self.artifact_root

    @property
    def uses_server_artifacts(self) -> bool:
        """A tracking server (http/https) and no artifact_root: the server decides where artifacts go
        (its --default-artifact-root, proxied with --serve-artifacts), so consumers need no file access."""
        return not self.artifact_root and self.tracking_uri.startswith(("http://", "https://"))

    def setup(self):
        """Point MLflow at our store and return the experiment id."""
        import mlflow

        from synehrgy_assets.core.mlflow_store import open_workspace_store

        if not self.tracking_uri:  # the workspace's SQLite file; its artifacts too unless artifact_root is set
            open_workspace_store(self.layout, create=True, own_artifacts=self.uses_workspace_store)
        point_mlflow_at(self.resolved_tracking_uri)
        exp = mlflow.get_experiment_by_name(self.experiment_name)
        if exp is None and self.uses_server_artifacts:
            exp_id = mlflow.create_experiment(self.experiment_name)
        elif exp is None:
            exp_id = mlflow.create_experiment(
                self.experiment_name, artifact_location=f"{self.resolved_artifact_root}/{self.experiment_name}"
            )
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
        return exp_id

    # Links for asset metadata (clickable in the Dagster UI).
    def run_url(self, run_id: str, experiment_id: str | None = None) -> dg.MetadataValue:
        exp = experiment_id or self.client().get_run(run_id).info.experiment_id
        return dg.MetadataValue.url(f"{self.ui_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}")

    def model_version_url(self, name: str, version: str | int) -> dg.MetadataValue:
        from urllib.parse import quote

        return dg.MetadataValue.url(f"{self.ui_url.rstrip('/')}/#/models/{quote(name)}/versions/{version}")

    @contextmanager
    def start_run(self, context: dg.AssetExecutionContext, run_name: str, tags: dict | None = None):
        """One MLflow run per asset materialization, tagged with the Dagster run and asset."""
        import mlflow

        exp_id = self.setup()
        self.clean_orphans(context, exp_id)
        all_tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "synehrgy.version": _package_version(),
        }
        all_tags.update(tags or {})
        with mlflow.start_run(run_name=run_name, tags=all_tags) as run:
            yield run

    def clean_orphans(self, context, experiment_id: str | None = None) -> dict | None:
        """Once per Dagster run: fail MLflow runs and pending versions left behind by dead runs."""
        from synehrgy_assets.recovery import clean_orphaned_mlflow

        run_id = context.run.run_id
        key = (self.resolved_tracking_uri, run_id)
        if key in _ORPHANS_CLEANED:
            return None
        _ORPHANS_CLEANED.add(key)
        try:
            return clean_orphaned_mlflow(
                self.client(), experiment_id or self.setup(), self.model_name, context.instance,
                log=context.log.warning, current_run_id=run_id, release_name=self.release_name,
            )
        except Exception as exc:  # never fail a run over housekeeping
            context.log.warning(f"Could not clean orphaned MLflow runs: {exc}")
            return None

    def client(self):
        import mlflow

        self.setup()
        return mlflow.MlflowClient(tracking_uri=self.resolved_tracking_uri, registry_uri=self.resolved_tracking_uri)



_ORPHANS_CLEANED: set[tuple[str, str]] = set()


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def mlflow_environment() -> dict[str, str | None]:
    """The MLflow URI variables as they are now (None: unset), for `restore_mlflow_environment`."""
    return {k: os.environ.get(k) for k in MLFLOW_URI_VARIABLES}


def restore_mlflow_environment(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def mlflow_environment_kept() -> Iterator[None]:
    """Leave MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI as they were before the block."""
    saved = mlflow_environment()
    try:
        yield
    finally:
        restore_mlflow_environment(saved)


def point_mlflow_at(uri: str) -> None:
    """mlflow.set_tracking_uri / set_registry_uri for this process, without their side effect on
    the environment: both also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, so every resource
    built later in the same process (another workspace's Definitions, a test's) would silently
    read and write this workspace's store."""
    import mlflow

    with mlflow_environment_kept():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)


def _package_version() -> str:
    from synehrgy_assets import __version__

    return __version__


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (`output_dirs.write_text_atomic`) so readers never see a half-written file."""
    from synehrgy_assets.core.output_dirs import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str))
