"""Dagster resources: every knob of the workspace, the raw data source and MLflow.

The classes live here (next to the assets that use them); `orchestration/resources.py`
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

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_home() -> str:
    return os.environ.get("SYNEHRGY_HOME", str(REPO_ROOT / ".synehrgy"))


class WorkspaceResource(dg.ConfigurableResource):
    """The local workspace: the DuckDB file and the folders beside it (docs/architecture.md)."""

    home: str = Field(default_factory=default_home, description="Root of the local workspace.")
    duckdb_threads: int = Field(default=2, description="DuckDB threads for Python-side queries.")
    duckdb_memory_limit: str = Field(default="8GB", description="DuckDB memory limit.")

    @property
    def root(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def duckdb_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def private_dir(self) -> Path:
        """Derived real-patient data (token arrays). Never logged, never released."""
        return self.root / "private"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @contextmanager
    def lock(self, run_id: str | None = None) -> Iterator[Path]:
        """Hold the workspace lock for a run; raises `WorkspaceBusy` at once when another run holds it."""
        from synehrgy_assets.recovery import workspace_lock

        with workspace_lock(self.root, run_id=run_id) as path:
            yield path

    def ensure(self) -> None:
        for d in (self.root, self.private_dir, self.artifacts_dir, self.raw_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Real-derived data: owner-only permissions.
        os.chmod(self.private_dir, 0o700)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        import duckdb

        self.ensure()
        con = duckdb.connect(str(self.duckdb_path), read_only=read_only)
        try:
            con.execute(f"set threads = {int(self.duckdb_threads)}")
            con.execute(f"set memory_limit = '{self.duckdb_memory_limit}'")
            yield con
        finally:
            con.close()


class MimicSourceResource(dg.ConfigurableResource):
    """Where raw MIMIC-III comes from.

    `mimic_dir` (env `MIMIC_DIR`) names a MIMIC-III v1.4 folder in either official layout. When it
    is empty the built-in synthetic hospital writes a raw set in the exact MIMIC layout instead.
    """

    mimic_dir: str = Field(default="", description="MIMIC-III v1.4 folder; empty = synthetic hospital.")
    synthetic_patients: int = Field(default=1000, description="Synthetic hospital size (patients).")
    synthetic_seed: int = Field(default=0, description="Synthetic hospital seed.")
    synthetic_header_case: str = Field(default="lower", description="'lower' (demo) or 'upper' (full release) layout.")

    @property
    def uses_synthetic_hospital(self) -> bool:
        return not self.mimic_dir.strip()

    def synthetic_dir(self, workspace: WorkspaceResource) -> Path:
        return workspace.raw_dir / (
            f"synthetic_hospital_n{self.synthetic_patients}_s{self.synthetic_seed}_{self.synthetic_header_case}"
        )

    def resolve(self, workspace: WorkspaceResource):
        """Return `MimicFiles` for the configured source (raises a clear error when invalid)."""
        from synehrgy_assets.core.mimic_layout import resolve_mimic_dir

        if self.uses_synthetic_hospital:
            return resolve_mimic_dir(self.synthetic_dir(workspace))
        return resolve_mimic_dir(Path(self.mimic_dir).expanduser())


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + model registry (SQLite + local artifacts by default)."""

    tracking_uri: str = Field(default="", description="Empty = sqlite:///<home>/mlflow.db")
    artifact_root: str = Field(default="", description="Empty = <home>/mlartifacts")
    experiment_name: str = "synehrgy"
    model_name: str = Field(default="synehrgy-gpt", description="Registered model for the generator.")
    release_name: str = Field(default="synehrgy-synthetic-cohort", description="Registered model for releases.")
    home: str = Field(default_factory=default_home)

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{Path(self.home).resolve() / 'mlflow.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        root = self.artifact_root or str(Path(self.home).resolve() / "mlartifacts")
        return root if "://" in root else Path(root).as_uri()

    def setup(self):
        """Point MLflow at our store and return the experiment id."""
        import mlflow

        Path(self.home).resolve().mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.resolved_tracking_uri)
        mlflow.set_registry_uri(self.resolved_tracking_uri)
        exp = mlflow.get_experiment_by_name(self.experiment_name)
        if exp is None:
            exp_id = mlflow.create_experiment(
                self.experiment_name, artifact_location=f"{self.resolved_artifact_root}/{self.experiment_name}"
            )
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
        return exp_id

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
                log=context.log.warning, current_run_id=run_id,
            )
        except Exception as exc:  # never fail a run over housekeeping
            context.log.warning(f"Could not clean orphaned MLflow runs: {exc}")
            return None

    def client(self):
        import mlflow

        self.setup()
        return mlflow.MlflowClient(tracking_uri=self.resolved_tracking_uri, registry_uri=self.resolved_tracking_uri)

    def run_url_hint(self, run_id: str) -> str:
        return f"mlflow ui --backend-store-uri {self.resolved_tracking_uri} → run {run_id}"


_ORPHANS_CLEANED: set[tuple[str, str]] = set()


def _package_version() -> str:
    from synehrgy_assets import __version__

    return __version__


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temp file + rename) so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
