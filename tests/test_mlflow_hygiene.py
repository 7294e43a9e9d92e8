"""MLflow hygiene on a real materialization (tests/small_graph.py): step series hold per-step values
only, summaries are `final_*` and agree with Dagster, artifacts survive a moved workspace, and every
asset that touches MLflow links to its run or model version."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def graph(released_workspace):
    return released_workspace


def _gpt_run(graph):
    ml = graph.defs.resources["mlflow_tracking"]
    meta = graph.metadata("gpt_checkpoint")
    client = ml.client()
    return ml, client, client.get_run(meta["mlflow_run_id"].value), meta


def test_step_series_hold_only_per_step_values(graph):
    ml, client, run, _ = _gpt_run(graph)
    names = set(run.data.metrics)
    summaries = {n for n in names if n.startswith("final_")}
    assert {"final_best_val_loss", "final_train_tokens_per_second", "final_train_seconds"} <= summaries
    for name in summaries:  # a summary is one value, never a series
        assert len(client.get_metric_history(run.info.run_id, name)) == 1, name
    for name in names - summaries:  # a series starts at the first logged step, not at a step-0 summary
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert min(steps) > 0, f"{name} has a value at step 0: {steps}"
    best = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "best_val_loss"), key=lambda m: m.step)]
    assert len(best) >= 2 and all(b <= a for a, b in zip(best, best[1:])), best  # never jumps up
    # The trainer's windowed throughput has its own name; the run's throughput is the final one.
    assert "window_tokens_per_second" in names and "tokens_per_second" not in names


def test_dagster_and_mlflow_agree_on_every_shared_name(graph):
    _, _, run, meta = _gpt_run(graph)
    shared = set(run.data.metrics) & set(meta)
    assert {"final_train_seconds", "final_train_tokens_per_second", "final_best_val_loss"} <= shared
    for name in shared:
        assert meta[name].value == pytest.approx(run.data.metrics[name], rel=1e-9), name
    # The asset's wall time is named for what it is, not like the trainer's seconds.
    assert "train_seconds" not in meta and "train_tokens_per_second" not in meta and "asset_seconds" in meta
    assert "tokens_per_second" not in graph.metadata("synthetic_sequences")


def test_every_asset_that_touches_mlflow_links_to_it(graph, monkeypatch):
    ml = graph.defs.resources["mlflow_tracking"]
    client = ml.client()
    from synehrgy_assets.resources import default_mlflow_ui_url

    ui = default_mlflow_ui_url().rstrip("/")  # MLFLOW_UI_URL, else the local `mlflow ui` address
    assert ml.ui_url.rstrip("/") == ui
    links = {
        "gpt_checkpoint": ("mlflow_run", "mlflow_model_version"),
        "synthetic_sequences": ("mlflow_model_version",),
        "evaluation": ("mlflow_run", "mlflow_artifacts"),
        "synthetic_release": ("mlflow_run", "mlflow_model_version"),
    }
    for asset, keys in links.items():
        meta = graph.metadata(asset)
        assert not any("mlflow ui --backend-store-uri" in str(getattr(v, "value", "")) for v in meta.values()), asset
        for key in keys:
            value = meta[key]
            assert isinstance(value, dg.UrlMetadataValue), (asset, key)
            assert value.url.startswith(ui + "/#/"), value.url
        if "mlflow_run" in keys:  # the link names the run the asset logged, in its experiment
            run = client.get_run(meta["mlflow_run_id"].value)
            assert meta["mlflow_run"].url.endswith(
                f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    version = graph.metadata("gpt_checkpoint")["model_version"].value
    assert graph.metadata("gpt_checkpoint")["mlflow_model_version"].url.endswith(
        f"/#/models/{ml.model_name}/versions/{version}")
    monkeypatch.setenv("MLFLOW_UI_URL", "https://mlflow.example.org/")
    from synehrgy_assets.resources import MlflowResource

    moved = MlflowResource(home=str(graph.home))
    assert moved.model_version_url("synehrgy-gpt", 3).url == "https://mlflow.example.org/#/models/synehrgy-gpt/versions/3"


def _stored_locations(home: Path) -> list[str]:
    con = sqlite3.connect(str(home / "mlflow.db"))
    try:
        rows = [r[0] for r in con.execute("select artifact_location from experiments")]
        rows += [r[0] for r in con.execute("select artifact_uri from runs")]
        rows += [r[0] for r in con.execute("select storage_location from model_versions")]
    finally:
        con.close()
    return rows


def test_a_moved_workspace_keeps_its_artifacts(graph, tmp_path):
    import mlflow

    from synehrgy_assets.resources import MlflowResource

    ml_original = graph.defs.resources["mlflow_tracking"]
    run_id = graph.metadata("gpt_checkpoint")["mlflow_run_id"].value
    first = tmp_path / "copied"
    shutil.copytree(graph.home, first, ignore=shutil.ignore_patterns("warehouse.duckdb", "private", "raw"))
    # As copied, the store still points into the original workspace: this is what re-rooting fixes.
    original_root = Path(graph.home).resolve().as_uri()
    assert all(loc.startswith(original_root) for loc in _stored_locations(first) if loc.startswith("file:"))

    # Mark the copy's plot, so a download shows which workspace it read.
    for plot in first.joinpath("mlartifacts").rglob("loss_curve.png"):
        plot.write_bytes(b"the copy's plot")
    moved = tmp_path / "moved"
    for home in (first, moved):
        if home == moved:  # and a second move, after the first open
            first.rename(moved)
        ml = MlflowResource(home=str(home))
        ml.setup()
        root = home.resolve().as_uri()
        assert all(loc.startswith(root + "/mlartifacts/") for loc in _stored_locations(home) if loc.startswith("file:"))
        plot = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots/loss_curve.png"))
        assert plot.read_bytes() == b"the copy's plot", "the download read the original workspace"
        model = Path(mlflow.artifacts.download_artifacts(f"models:/{ml.model_name}@candidate"))
        assert any(model.rglob("token_vocabulary.json")), list(model.rglob("*"))[:10]
    ml_original.setup()  # point MLflow back at the shared workspace for the other tests


def test_reroot_changes_only_locations_under_the_old_root(tmp_path):
    """A location that merely shares a prefix with the old root is left alone."""
    from synehrgy_assets.core.mlflow_store import reroot_artifacts

    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(str(db))
    con.execute("create table runs (artifact_uri text)")
    con.executemany("insert into runs values (?)", [("file:///a/mlartifacts/x/1",), ("file:///a/mlartifacts2/x",),
                                                     ("s3://bucket/a/mlartifacts/x",)])
    con.commit()
    con.close()
    assert reroot_artifacts(db, "file:///a/mlartifacts", "file:///b/mlartifacts") == 1
    con = sqlite3.connect(str(db))
    assert sorted(r[0] for r in con.execute("select artifact_uri from runs")) == [
        "file:///a/mlartifacts2/x", "file:///b/mlartifacts/x/1", "s3://bucket/a/mlartifacts/x"]
    con.close()
