"""MLflow as a server: `mlflow server` on loopback (SQL backend, proxied artifact store), the graph
trained and released against it over HTTP, and the release pulled by a separate consumer process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import dagster as dg

from tests.small_graph import SHARED_RUN_CONFIG
from tests.helpers.graph_runs import assert_whole_graph, lax_gates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    root = tmp_path / "mlflow_server"
    root.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--default-artifact-root", "mlflow-artifacts:/",
           "--serve-artifacts", "--workers", "1"]
    # The server's job runner (GenAI evaluation jobs, 7 processes) is not used by the graph.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start (exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.5)
        yield {"uri": uri, "root": root}
    finally:
        os.killpg(proc.pid, 15)  # the server and its uvicorn worker
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


CONSUMER = """
import sys, mlflow, pandas as pd
uri = "models:/synehrgy-synthetic-cohort@champion"
path = mlflow.artifacts.download_artifacts(uri, dst_path=sys.argv[1])
patients = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"table": ["PATIENTS"]}))
print("CONSUMER", mlflow.get_tracking_uri(), len(patients), path)
"""


@pytest.mark.integration
def test_training_and_release_against_an_mlflow_server(mlflow_server, tmp_path, monkeypatch):
    import mlflow

    home = tmp_path / "home"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["uri"])
    # Lax gates (as in test_end_to_end): a 30-step generator fails the default ones, and the point
    # here is where the champion lives, not how good it is.
    from synehrgy_assets.definitions import build_definitions

    defs = build_definitions(home=str(home), synthetic_hospital=True, synthetic_patients=150, release_gate=lax_gates())
    # The shared small run's configuration (tests/small_graph.py): patients capped at 300 tokens (a
    # 30-step generator rarely closes one by itself; the default cap made generation the slowest step).
    run_config = SHARED_RUN_CONFIG
    (home / "dagster_home").mkdir(parents=True)
    instance = dg.DagsterInstance.local_temp(str(home / "dagster_home"))
    result = defs.resolve_job_def("synehrgy_end_to_end").execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False)
    # MLFLOW_TRACKING_URI reaches the resource as a dg.EnvVar: resolved the way a run resolves it.
    with dg.build_resources({"mlflow_tracking": defs.resources["mlflow_tracking"]}) as resolved:
        ml = resolved.mlflow_tracking
    assert ml.resolved_tracking_uri == mlflow_server["uri"] and ml.uses_server_artifacts
    mats = assert_whole_graph(result, home, defs)
    assert mats["synthetic_release"]["promoted_to_champion"] is True

    # Runs, registry and artifacts are the server's: nothing in the workspace's default store.
    assert not (home / "mlflow.db").exists() and not (home / "mlartifacts").exists()
    client = mlflow.MlflowClient(mlflow_server["uri"], registry_uri=mlflow_server["uri"])
    run = client.get_run(str(mats["gpt_checkpoint"]["mlflow_run_id"]))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    served = list((mlflow_server["root"] / "artifacts").rglob("PATIENTS.parquet"))
    assert served, "the release's tables were stored by the server (--artifacts-destination)"

    # A consumer in another process, with nothing but the tracking URI, pulls the champion.
    consumer_dir = tmp_path / "consumer"
    consumer_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNEHRGY_", "DAGSTER_"))}
    env["MLFLOW_TRACKING_URI"] = mlflow_server["uri"]
    done = subprocess.run([sys.executable, "-c", CONSUMER, str(consumer_dir / "pulled")], cwd=consumer_dir,
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("CONSUMER"))
    _, uri, n_patients, path = line.split(" ", 3)
    assert uri == mlflow_server["uri"] and int(n_patients) > 0
    assert any(Path(path).rglob("PATIENTS.parquet"))
