"""Where everything lives in a local workspace: one object, built from the workspace's root folder.

Every path of the graph, the CLI and the consumer comes from `WorkspaceLayout`; nothing else joins
folder names onto a workspace root. The default root has one rule (`default_root`): `$SYNEHRGY_HOME`,
else `.synehrgy` in the current directory. That is what README command 1 uses (it runs the CLI from
the repository root) and what `dg dev` finds from the same directory.

The user-facing environment variables that name places (SYNEHRGY_HOME, MLFLOW_TRACKING_URI) are read
here and nowhere else; modules pass the values on as arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "SYNEHRGY_HOME"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_DIRNAME = ".synehrgy"

# Names inside the root that other modules also need as bare names (core/staging_build.py, recovery.py).
STAGING_BUILDS = "staging_builds"
STAGING_STATE = "staging_state.json"
STAGING_STATE_LOCK = ".staging_state.lock"
WORKSPACE_LOCK = ".synehrgy.lock"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"


def default_root() -> Path:
    """`$SYNEHRGY_HOME`, else `./.synehrgy` (absolute, resolved against the current directory)."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / DEFAULT_DIRNAME).expanduser().resolve()


def configured_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, or "" for the workspace's own store (`WorkspaceLayout.mlflow_tracking_uri`)."""
    return os.environ.get(TRACKING_URI_ENV, "")


@dataclass(frozen=True)
class WorkspaceLayout:
    """The folders and files of one workspace (docs/architecture.md, "Local workspace")."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @classmethod
    def at(cls, home: str | Path | None = None) -> "WorkspaceLayout":
        """The workspace at `home`, or at `default_root()` when `home` is empty."""
        return cls(Path(home) if home else default_root())

    # -- real patient data (owner-only; never logged, never released) ------------------------------
    @property
    def duckdb(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def duckdb_tmp(self) -> Path:
        return self.root / "duckdb_tmp"

    @property
    def staging_builds(self) -> Path:
        return self.root / STAGING_BUILDS

    @property
    def staging_state(self) -> Path:
        return self.root / STAGING_STATE

    @property
    def private(self) -> Path:
        return self.root / "private"

    @property
    def tokens(self) -> Path:
        """Token arrays of the real patients, one folder per split."""
        return self.private / "token_sequences"

    @property
    def token_summary(self) -> Path:
        """Counts per split (aggregates, no rows)."""
        return self.tokens / "summary.json"

    @property
    def meds(self) -> Path:
        """The MEDS export of the real cohort."""
        return self.private / "meds"

    @property
    def dbt_runs(self) -> Path:
        return self.private / "dbt_runs"

    @property
    def ddp(self) -> Path:
        """torchrun work folders of multi-process training."""
        return self.private / "ddp"

    @property
    def private_metrics(self) -> Path:
        """The evaluation's figures, some of which may count fewer than 10 patients."""
        return self.private / "evaluation" / "metrics.json"

    @property
    def private_rule_counts(self) -> Path:
        """Per-rule patient counts of the patient-rules gate (small counts among them)."""
        return self.private / "evaluation" / "patient_rule_counts.csv"

    # -- not patient rows: aggregates, weights, synthetic data ----------------------------------------
    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def vocabulary(self) -> Path:
        return self.artifacts / "vocabulary" / "token_vocabulary.json"

    @property
    def checkpoints(self) -> Path:
        return self.artifacts / "checkpoints"

    @property
    def resume_checkpoints(self) -> Path:
        """Checkpoints of an interrupted training, one folder per resume key."""
        return self.checkpoints / "_resume"

    @property
    def synthetic(self) -> Path:
        return self.artifacts / "synthetic"

    @property
    def synthetic_sequences(self) -> Path:
        return self.synthetic / "sequences"

    @property
    def synthetic_shards(self) -> Path:
        return self.synthetic / "shards"

    @property
    def synthetic_cohort(self) -> Path:
        """The decoded cohort: marts-shaped Parquet, MIMIC-shaped tables, provenance.json."""
        return self.synthetic / "cohort"

    @property
    def evaluation(self) -> Path:
        return self.artifacts / "evaluation"

    @property
    def gates(self) -> Path:
        return self.artifacts / "gates"

    # -- tools' own state -----------------------------------------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.root / MLFLOW_DB

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / MLFLOW_ARTIFACTS

    @property
    def mlflow_tracking_uri(self) -> str:
        """The workspace's own MLflow store (SQLite; its artifacts in `mlflow_artifacts`)."""
        return f"sqlite:///{self.mlflow_db}"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock_file(self) -> Path:
        return self.root / WORKSPACE_LOCK

    def log_file(self, run_id: str) -> Path:
        return self.logs / f"{run_id}.log"

    @classmethod
    def of_tracking_uri(cls, tracking_uri: str) -> "WorkspaceLayout | None":
        """The workspace whose own store `tracking_uri` is (`sqlite:///<root>/mlflow.db` with
        `<root>/mlartifacts` beside it), else None (a server, or a store not laid out as ours)."""
        if not tracking_uri.startswith("sqlite:///"):
            return None
        db = Path(tracking_uri[len("sqlite:///"):])
        if db.name != MLFLOW_DB or not (db.parent / MLFLOW_ARTIFACTS).is_dir():
            return None
        return cls(db.parent)
