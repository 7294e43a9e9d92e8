"""Opening a workspace's own MLflow store (SQLite + `mlartifacts/`) wherever the workspace is now.

MLflow keeps absolute artifact locations (`file:///<root>/mlartifacts/...`) in its SQL store. After
the workspace folder is moved, those locations name a folder that is gone: `mlflow artifacts
download` then writes an empty folder and exits 0, and loading a model fails with "No such
artifact: ''". After a copy they name the original, so the copy silently reads the original's files.
MLflow has no public API to change a stored artifact location, so `open_workspace_store` rewrites
them in place (`reroot_artifacts`, the one piece that knows MLflow's tables;
tests/test_workspace_moves.py fails when MLflow adds a location column it does not rewrite).
Every path that opens a workspace store calls `open_workspace_store` first: the graph's
MlflowResource, `generate`, `pull`, `mlflow-ui` and the consumer's Python API.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from synehrgy_assets.core.workspace_layout import MLFLOW_ARTIFACTS, WorkspaceLayout

# MLflow's SQL store keeps absolute artifact locations in these columns (mlflow 3.x).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


class WorkspaceStoreError(FileNotFoundError):
    """The workspace has no MLflow store, or its store cannot be re-rooted."""


def artifact_root_uri(layout: WorkspaceLayout) -> str:
    """`file:///<root>/mlartifacts`, spelled as MLflow spells local artifact locations."""
    return layout.mlflow_artifacts.as_uri()


def stored_artifact_roots(db_path: Path) -> set[str]:
    """The workspace artifact roots (`<...>/mlartifacts`) the store's experiments point into.

    Experiments made by the graph live at `<artifact root>/<experiment name>`; MLflow's own
    `Default` experiment (not under an `mlartifacts` folder) is not the workspace's."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
        if "experiments" not in tables:
            return set()
        locations = [row[0] for row in con.execute("select artifact_location from experiments") if row[0]]
    finally:
        con.close()
    roots = set()
    for location in locations:
        parent = location.rstrip("/").rsplit("/", 1)[0]
        if location.startswith("file://") and parent.endswith("/" + MLFLOW_ARTIFACTS):
            roots.add(parent)
    return roots


def reroot_artifacts(db_path: Path, old_root: str, new_root: str) -> int:
    """Rewrite every stored artifact location under `old_root` to the same place under `new_root`
    in one transaction; returns the rows changed. A location that merely shares a prefix with
    `old_root` (`.../mlartifacts2/...`) is left alone."""
    old_root, new_root = old_root.rstrip("/"), new_root.rstrip("/")
    changed = 0
    con = sqlite3.connect(str(db_path))
    try:
        with con:  # one transaction: all locations move, or none
            tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
            for table, column in ARTIFACT_COLUMNS:
                if table not in tables:
                    continue
                cur = con.execute(
                    f'update "{table}" set "{column}" = ? || substr("{column}", ?) '
                    f'where "{column}" = ? or substr("{column}", 1, ?) = ?',
                    (new_root, len(old_root) + 1, old_root, len(old_root) + 1, old_root + "/"),
                )
                changed += cur.rowcount
    finally:
        con.close()
    return changed


def open_workspace_store(layout: WorkspaceLayout, *, create: bool = False, own_artifacts: bool = True) -> str:
    """The tracking URI of the workspace's own store, with every stored artifact location pointing
    into this workspace's `mlartifacts/` (moved: the files are found; copied: the copy's own files
    are read, never the original's).

    `create`: make an empty, owner-only store when there is none (the graph's first run); without
    it a missing store is an error naming the folder, since MLflow would create an empty one and
    then say "model not found". `own_artifacts=False`: the store's artifacts live elsewhere (an
    explicit artifact root), so nothing is re-rooted."""
    db = layout.mlflow_db
    if not db.is_file():
        if not create:
            raise WorkspaceStoreError(
                f"no MLflow store at {db}: {layout.root} is not a synehrgy workspace that registered a model "
                "(a mistyped --home or SYNEHRGY_HOME?)")
        layout.root.mkdir(parents=True, mode=0o700, exist_ok=True)
        # The store holds run parameters, metrics and registry tags: owner-only, created so
        # (SQLite takes an empty file as a new database), never 0644 for a moment.
        os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))
    if create:  # the graph's own store; a consumer may read one that another user owns
        os.chmod(db, 0o600)
    if not own_artifacts:
        return layout.mlflow_tracking_uri
    layout.mlflow_artifacts.mkdir(mode=0o700, exist_ok=True)
    here = artifact_root_uri(layout)
    for old in stored_artifact_roots(db) - {here}:
        reroot_artifacts(db, old, here)
    return layout.mlflow_tracking_uri


def open_store_of(tracking_uri: str) -> str:
    """`tracking_uri` ready to read: a workspace's own store (`sqlite:///<root>/mlflow.db` beside
    `<root>/mlartifacts`) is opened with `open_workspace_store`; a `sqlite:///` file that does not
    exist is an error; any other URI (a server) is returned as it is."""
    layout = WorkspaceLayout.of_tracking_uri(tracking_uri)
    if layout is not None:
        return open_workspace_store(layout)
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise WorkspaceStoreError(
            f"tracking URI {tracking_uri}: no MLflow store at {tracking_uri[len('sqlite:///'):]} (a mistyped path or "
            "SYNEHRGY_HOME?); give --home of the workspace that trained the generator, or its --tracking-uri")
    return tracking_uri
