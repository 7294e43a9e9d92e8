"""A workspace renamed or copied after its run keeps working for every consumer path: `generate` on
the command line, the generator and release pyfuncs, the datacard's pull snippet and the MLflow UI
command as printed; a copy reads its own files, never the original's; a download that brings no
file is an error (core/mlflow_store.py, on tests/small_graph.py's workspace)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from orchestration.cli import main, ui_commands
from synehrgy_assets.core.workspace_layout import WorkspaceLayout

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
GENERATOR, RELEASE = "synehrgy-gpt", "synehrgy-synthetic-cohort"
# what a consumer never needs: copying less keeps the test quick
NOT_FOR_CONSUMERS = shutil.ignore_patterns("*.lock", "raw", "private", "warehouse.duckdb*", "staging_builds")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=NOT_FOR_CONSUMERS)
    return dst


def _stored_text(db: Path) -> str:
    """Every text value of every table of an MLflow store: a location MLflow adds in a new column is
    in here too, so a re-root that misses it fails the test."""
    con = sqlite3.connect(str(db))
    try:
        values = []
        for (table,) in con.execute("select name from sqlite_master where type = 'table'").fetchall():
            for row in con.execute(f'select * from "{table}"').fetchall():
                values += [v for v in row if isinstance(v, str)]
    finally:
        con.close()
    return "\n".join(values)


def _env(**extra) -> dict:
    """A consumer's shell: this checkout's code (the venv's own install may be another checkout)."""
    return {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": "", **extra}


def _generate(home: Path, out: Path, model: str = f"models:/{GENERATOR}@candidate") -> int:
    return main(["generate", "--home", str(home), "--model", model, "-n", "3", "--seed", "1", "--device", "cpu",
                 "--max-tokens-per-patient", "256", "--format", "parquet", "--out", str(out), "--no-progress"])


def _code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.S)


@pytest.fixture
def moved(released_workspace, tmp_path_factory, monkeypatch):
    """A workspace made at <project>/.synehrgy (its store opened there, as the graph opens it), the
    UI commands printed from <project>, then <project> renamed."""
    from synehrgy_assets.core.mlflow_store import open_workspace_store

    root = tmp_path_factory.mktemp("moves")
    before = _copy(released_workspace.home, root / "project" / ".synehrgy")
    open_workspace_store(WorkspaceLayout(before))
    monkeypatch.chdir(root / "project")
    printed = ui_commands(WorkspaceLayout(before))
    (root / "project").rename(root / "renamed")
    monkeypatch.chdir(root / "renamed")
    return root / "renamed" / ".synehrgy", before, printed


def test_a_renamed_workspace_works_for_every_consumer_path(released_workspace, moved, tmp_path, capsys,
                                                           monkeypatch):
    import mlflow

    from synehrgy_assets.consumer import open_workspace

    home, before, printed = moved
    assert not before.exists()
    # generate on the command line, naming the workspace where it is now
    assert _generate(home, tmp_path / "generated") == 0, capsys.readouterr().err
    assert len(pd.read_parquet(tmp_path / "generated" / "PATIENTS.parquet")) > 0
    # nothing in the store points at the old place any more (every column, not only the known ones)
    assert before.as_uri() not in _stored_text(home / "mlflow.db")
    assert (home / "mlartifacts").as_uri() in _stored_text(home / "mlflow.db")

    # the generator's pyfunc, as docs/consumers.md loads it (the release's: in the card's snippet below)
    from synehrgy_assets.resources import point_mlflow_at
    point_mlflow_at(open_workspace(home))
    assert mlflow.pyfunc.load_model(f"models:/{GENERATOR}@candidate").metadata.flavors

    # the datacard's pull snippet, as written, from a folder of its own with SYNEHRGY_HOME naming the
    # workspace; each CLI line runs in this process (only -n made small)
    client = mlflow.MlflowClient(tracking_uri=open_workspace(home))
    version = client.get_model_version_by_alias(RELEASE, "champion").version
    card = client.get_model_version(RELEASE, version).description
    assert str(before) not in card and str(released_workspace.home) not in card
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    monkeypatch.chdir(consumer)
    monkeypatch.setenv("SYNEHRGY_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    [shell] = _code_blocks(card, "bash")
    commands = [line for line in shell.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and all(c.startswith(".venv/bin/python -m orchestration.cli ") for c in commands)
    for command in commands:
        command = command.replace("-n 1000", "-n 2 --max-tokens-per-patient 256 --device cpu --no-progress")
        assert main(shlex.split(command)[3:]) == 0, (command, capsys.readouterr().err)
    assert any((consumer / "release").rglob("PATIENTS.parquet")) and any((consumer / "synthetic").iterdir())
    [python] = _code_blocks(card, "python")
    namespace: dict = {}
    exec(compile(python, "datacard pull snippet", "exec"), namespace)
    assert len(namespace["patients"]) > 0 and any(Path(namespace["path"]).rglob("*.parquet"))

    # the MLflow UI command printed before the move, run from the renamed folder, shows the run's files
    _mlflow_ui_lists_artifacts(printed[1], released_workspace, home)


def _mlflow_ui_lists_artifacts(printed: str, graph, home: Path) -> None:
    assert printed.startswith(".venv/bin/python -m orchestration.cli mlflow-ui --home $PWD/.synehrgy"), printed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = printed.replace(".venv/bin/python", sys.executable) + f" -- --host 127.0.0.1 --port {port}"
    log = home.parent / "mlflow_ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=home.parent, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    run_id = graph.metadata("gpt_checkpoint")["mlflow_run_id"].value
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=plots"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    listing = json.loads(response.read())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"`{command}` did not serve {url} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
                time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert listing["root_uri"].startswith((home / "mlartifacts").as_uri()), listing
    assert any(f["path"].endswith("loss_curve.png") for f in listing.get("files", [])), listing


def test_a_copy_reads_its_own_files_and_outlives_its_original(released_workspace, tmp_path, capsys):
    import mlflow

    from synehrgy_assets.consumer import open_workspace

    original = _copy(released_workspace.home, tmp_path / "original")
    open_workspace(original)  # the original, opened where it is: its store points into it
    copy = _copy(original, tmp_path / "copy")
    assert original.as_uri() in _stored_text(copy / "mlflow.db")  # as copied, the store names the original
    for plot in (copy / "mlartifacts").rglob("loss_curve.png"):
        plot.write_bytes(b"the copy's plot")
    run_id = released_workspace.metadata("gpt_checkpoint")["mlflow_run_id"].value
    plot = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots/loss_curve.png",
                                                    dst_path=str(tmp_path / "dl"), tracking_uri=open_workspace(copy)))
    assert plot.read_bytes() == b"the copy's plot", "the copy read the original's files"
    assert original.as_uri() not in _stored_text(copy / "mlflow.db")

    shutil.rmtree(original)
    assert _generate(copy, tmp_path / "generated") == 0, capsys.readouterr().err
    assert main(["pull", "--home", str(copy), "--model", "@champion", "--out", str(tmp_path / "release")]) == 0
    assert any((tmp_path / "release").rglob("datacard.md"))


def test_a_download_that_brings_no_file_is_an_error(released_workspace, tmp_path, capsys):
    """A store without its artifacts beside it (here: the store file alone, its workspace gone) is
    not re-rooted; MLflow then downloads nothing and exits 0. `pull` and `generate` say so instead."""
    from synehrgy_assets.consumer import open_workspace

    gone = _copy(released_workspace.home, tmp_path / "gone")
    open_workspace(gone)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(gone / "mlflow.db", lonely / "mlflow.db")
    shutil.rmtree(gone)
    uri = f"sqlite:///{lonely / 'mlflow.db'}"
    assert main(["pull", "--tracking-uri", uri, "--model", "@champion", "--out", str(tmp_path / "release")]) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("synehrgy pull:")]
    assert len(ours) == 1 and "downloaded no files" in ours[0] and gone.as_uri() in ours[0], ours
    assert not (tmp_path / "release").exists()
    assert main(["generate", "--tracking-uri", uri, "--model", "@candidate", "-n", "1", "--out",
                 str(tmp_path / "gen"), "--no-progress"]) == 2
    assert "downloaded no files" in capsys.readouterr().err
    # and a folder that is no workspace is named as such
    assert main(["mlflow-ui", "--home", str(tmp_path / "nowhere")]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
