"""One workspace layout: the resources, the Definitions, the CLI's helpers and the consumer find the
same default root by the same rule; the MLflow columns the re-root adapter rewrites are still
MLflow's (and MLflow has no new artifact-location column it would miss)."""

from __future__ import annotations

import re

from synehrgy_assets.core.workspace_layout import WorkspaceLayout


def _roots():
    from synehrgy_assets.definitions import build_resources
    from synehrgy_assets.consumer import default_tracking_uri
    from synehrgy_assets.resources import MlflowResource, WorkspaceResource

    resources = build_resources(mimic_dir="")
    return {
        "WorkspaceResource": WorkspaceResource().root,
        "MlflowResource": MlflowResource().layout.root,
        "build_resources workspace": resources["workspace"].root,
        "build_resources mlflow": resources["mlflow_tracking"].layout.root,
        "consumer": WorkspaceLayout.of_tracking_uri(default_tracking_uri()).root
        if WorkspaceLayout.of_tracking_uri(default_tracking_uri()) else default_tracking_uri(),
    }


def test_every_entry_point_finds_the_same_default_root(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNEHRGY_HOME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".synehrgy" / "mlartifacts").mkdir(parents=True)
    assert set(_roots().values()) == {tmp_path.resolve() / ".synehrgy"}, _roots()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "mlartifacts").mkdir(parents=True)
    monkeypatch.setenv("SYNEHRGY_HOME", str(elsewhere))
    assert set(_roots().values()) == {elsewhere.resolve()}, _roots()


def test_the_layout_is_relative_to_its_root_only(tmp_path):
    a, b = WorkspaceLayout(tmp_path / "a"), WorkspaceLayout(tmp_path / "b")
    paths = [name for name in dir(WorkspaceLayout) if isinstance(getattr(WorkspaceLayout, name), property)]
    assert len(paths) > 20
    for name in paths:
        value = getattr(a, name)
        if isinstance(value, str):  # the tracking URI
            assert value == getattr(b, name).replace(str(b.root), str(a.root)), name
        else:
            assert value.relative_to(a.root) == getattr(b, name).relative_to(b.root), name
    assert a.private in a.tokens.parents and a.private in a.meds.parents  # real rows stay under private/


def test_the_columns_the_reroot_rewrites_are_mlflows():
    """Fails when MLflow renames one of them, or adds an artifact-location column the adapter would miss."""
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.model_registry.dbmodels import models as _registry  # noqa: F401  (registers the tables)
    from mlflow.store.tracking.dbmodels import models as _tracking  # noqa: F401

    from synehrgy_assets.core.mlflow_store import ARTIFACT_COLUMNS

    columns = {(mapper.local_table.name, column.name)
               for mapper in Base.registry.mappers for column in mapper.local_table.columns}
    assert set(ARTIFACT_COLUMNS) <= columns, set(ARTIFACT_COLUMNS) - columns
    locations = {c for c in columns if re.fullmatch(r"artifact_location|artifact_uri|storage_location", c[1])}
    assert locations <= set(ARTIFACT_COLUMNS), locations - set(ARTIFACT_COLUMNS)
