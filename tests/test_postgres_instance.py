"""Dagster on PostgreSQL: a real server on loopback, the instance from deploy/dagster.yaml.

The server binaries: `initdb` and `postgres` on PATH (this machine kind has PostgreSQL 15 in
/usr/local/bin) or in Debian's /usr/lib/postgresql/<version>/bin; the test skips, saying so, only
when neither has them. As root (CI containers) the server runs as the `postgres` system user,
because PostgreSQL refuses to run as root.

One test, reduced selection to stay near a minute on 2 cores: the graph up to `gpt_checkpoint`
(raw → dbt → split → vocabulary → sequences → GPT trained by torchrun in 2 processes) in process,
then `meds_export` and `token_vocabulary` with the multiprocess executor (2 at once), both runs
stored in PostgreSQL. The rest of the graph on the same code is covered by test_end_to_end.py.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.helpers.graph_runs import SMALL_RUN_CONFIG, failure_text, materialized

REPO = Path(__file__).resolve().parents[1]
PG_USER, PG_DB = "synehrgy", "dagster"


def pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server():
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> with an empty database `dagster`."""
    psycopg2 = pytest.importorskip("psycopg2")
    initdb, postgres = pg_binary("initdb"), pg_binary("postgres")
    if not (initdb and postgres):
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are neither on PATH nor in "
                    "/usr/lib/postgresql/*/bin: install the postgresql package to run this test")
    root = Path(tempfile.mkdtemp(prefix="synehrgy-pg-"))  # not under pytest's 0700 root-owned tmp
    preexec = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root (PostgreSQL refuses to) and there is no `postgres` user to run it as")
        os.chown(root, pw.pw_uid, pw.pw_gid)

        def demote():
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        preexec = demote

    data, log = root / "data", root / "server.log"
    subprocess.run([initdb, "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, cwd=root, preexec_fn=preexec)
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [postgres, "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={root}", "-c", "fsync=off", "-c", "max_connections=100"],
            stdout=out, stderr=subprocess.STDOUT, cwd=root, preexec_fn=preexec)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                con = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start (exit {proc.poll()}):\n{log.read_text()}")
                time.sleep(0.3)
        con.autocommit = True
        con.cursor().execute(f"create database {PG_DB}")
        con.close()
        yield {"host": "127.0.0.1", "port": port, "user": PG_USER, "db": PG_DB}
    finally:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: SIGTERM would wait for pooled clients
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def end_to_end_job():
    """The real job, rebuilt from the environment in every step process (multiprocess executor)."""
    from synehrgy_assets.definitions import build_definitions

    return build_definitions().resolve_job_def("synehrgy_end_to_end")


@pytest.mark.integration
def test_the_graph_runs_on_a_postgres_instance(postgres_server, tmp_path, monkeypatch):
    import psycopg2
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from synehrgy_assets.definitions import build_definitions

    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")  # the deployment file itself
    env = {"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": postgres_server["host"],
           "DAGSTER_PG_PORT": str(postgres_server["port"]), "DAGSTER_PG_DB": postgres_server["db"],
           "DAGSTER_PG_USERNAME": postgres_server["user"], "DAGSTER_PG_PASSWORD": "",
           "SYNEHRGY_HOME": str(home), "MIMIC_DIR": "", "SYNEHRGY_SYNTHETIC_HOSPITAL": "1",
           "SYNEHRGY_SYNTHETIC_PATIENTS": "150"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

        # 1. In process: the graph up to the GPT, trained by torchrun in 2 processes.
        defs = build_definitions()
        job = defs.resolve_job_def("synehrgy_end_to_end")
        # Everything but what follows the GPT (and the MEDS export, run in step 2); dbt whole.
        upstream = (dg.AssetSelection.all() - dg.AssetSelection.assets("gpt_checkpoint").downstream(include_self=False)
                    - dg.AssetSelection.assets("meds_export")).resolve(defs.resolve_asset_graph())
        ops = SMALL_RUN_CONFIG["ops"]
        run_config = {"ops": {**ops, "gpt_checkpoint": {"config": {**ops["gpt_checkpoint"]["config"], "n_processes": 2}}}}
        first = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False,
                                       asset_selection=sorted(upstream, key=str))
        assert first.success, failure_text(first)
        mats = materialized(first)
        assert {"patient_split", "token_sequences", "gpt_checkpoint"} <= set(mats)
        assert mats["gpt_checkpoint"]["final_steps"] == 30 and mats["gpt_checkpoint"]["final_best_val_loss"] > 0
        messages = [e.message for e in instance.all_logs(first.run_id)]
        # torchrun's processes stream into the Dagster log, and rank 0 alone reports.
        assert any("Launching torchrun with 2 processes" in m for m in messages)
        assert any("ddp: rank 0 of 2 processes" in m for m in messages), messages[-20:]
        assert not any("ddp: rank 1 of 2" in m for m in messages)
        assert not list((home / "private" / "ddp").glob("*")), "the torchrun work folder is removed after success"

        # 2. The multiprocess executor: two steps, two at once, each in its own process.
        second = dg.execute_job(
            dg.reconstructable(end_to_end_job), instance=instance, raise_on_error=False,
            asset_selection=[dg.AssetKey("meds_export"), dg.AssetKey("token_vocabulary")],
            run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}},
        )
        with second:
            assert second.success, failure_text(second)
            run_id = second.run_id
            events = second.all_events
        engine = [e.message for e in events if e.event_type_value == "ENGINE_EVENT"]
        assert any("multiprocess executor" in m for m in engine), engine
        started = {e.step_key: e.pid for e in events if e.event_type_value == "STEP_START"}
        # the MEDS export's readability check runs in its own step
        assert set(started) == {"meds_export", "meds_export_meds_export_readable", "token_vocabulary"}
        assert len(set(started.values())) == len(started) and os.getpid() not in started.values()

    # Both runs and their events are rows of the PostgreSQL database.
    with psycopg2.connect(host=postgres_server["host"], port=postgres_server["port"], user=PG_USER,
                          dbname=PG_DB) as con, con.cursor() as cur:
        cur.execute("select run_id, status from runs")
        runs = dict(cur.fetchall())
        assert runs.get(first.run_id) == "SUCCESS" and runs.get(run_id) == "SUCCESS", runs
        cur.execute("select count(*) from event_logs where run_id = %s and dagster_event_type = "
                    "'ASSET_MATERIALIZATION'", (first.run_id,))
        assert cur.fetchone()[0] >= 5
    assert not list(dagster_home.rglob("*.db")), "nothing went to SQLite (storage/ holds only compute logs)"


def test_the_k8s_definitions_load_and_put_the_heavy_steps_on_a_gpu():
    """Cannot run here (no cluster): the module loads, the executor is dagster-k8s's, its run config
    validates, and the per-step settings name real steps (checked at import, and able to fail)."""
    from deploy import definitions_k8s as k8s

    job = k8s.defs.resolve_job_def("synehrgy_end_to_end_k8s")
    assert job.executor_def.name == "synehrgy_k8s"
    assert dg.validate_run_config(job, {}) is not None  # the configured executor's settings are valid
    steps = {node.name for node in job.graph.nodes}
    assert set(k8s.HEAVY_STEPS) <= steps
    heavy = k8s.K8S_EXECUTOR_CONFIG["per_step_k8s_config"]["gpt_checkpoint"]["container_config"]["resources"]
    assert heavy["limits"]["nvidia.com/gpu"] == "1"
    assert k8s.defs.resolve_job_def("synehrgy_end_to_end").executor_def.name != "synehrgy_k8s"  # embedded jobs unchanged
    with pytest.raises(ValueError, match=r"does not have: \['gpt_training'\]"):
        k8s.check_per_step_keys(job, {"per_step_k8s_config": {"gpt_training": {}}})
