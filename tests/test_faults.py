"""Faults after kill -9, the workspace lock, and the CLI's failure output (docs/reliability.md)."""


import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from synehrgy_assets.recovery import (
    HOST_TAG, PID_TAG, WORKSPACE_TAG, WorkspaceBusy, fail_dead_dagster_runs, workspace_lock,
)
from synehrgy_assets.resources import MlflowResource, WorkspaceResource

REPO = Path(__file__).resolve().parents[1]


@dg.op
def _noop():
    return 1


@dg.job
def _tiny_job():
    _noop()


def _instance(tmp_path: Path) -> dg.DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    return dg.DagsterInstance.local_temp(str(home))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _started_run(instance, pid: int, workspace: str = "/nowhere") -> dg.DagsterRun:
    return instance.create_run_for_job(
        _tiny_job, status=dg.DagsterRunStatus.STARTED,
        tags={PID_TAG: str(pid), HOST_TAG: socket.gethostname(), WORKSPACE_TAG: workspace},
    )


def test_orphan_mlflow_run_and_pending_version_are_cleaned_by_next_start(tmp_path):
    ml = MlflowResource(home=str(tmp_path / "home"))
    client = ml.client()
    exp_id = ml.setup()
    instance = _instance(tmp_path)
    alive = _started_run(instance, os.getpid())  # a run still in progress: left alone

    # What a kill -9 during training leaves: a RUNNING MLflow run of a Dagster run that is gone
    # (missing here), and a registered version tagged `pending`.
    orphan = client.create_run(exp_id, tags={"dagster.run_id": "dead-dagster-run"})
    live = client.create_run(exp_id, tags={"dagster.run_id": alive.run_id})
    client.create_registered_model(ml.model_name)
    mv = client.create_model_version(ml.model_name, source=f"runs:/{orphan.info.run_id}/generator",
                                     run_id=orphan.info.run_id)
    client.set_model_version_tag(ml.model_name, mv.version, "validation_status", "pending")

    @dg.asset
    def tracked(context: dg.AssetExecutionContext, mlflow_tracking: MlflowResource):
        with mlflow_tracking.start_run(context, run_name="tracked"):
            pass

    assert dg.materialize([tracked], resources={"mlflow_tracking": ml}, instance=instance).success
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    tags = client.get_model_version(ml.model_name, mv.version).tags
    assert tags["validation_status"] == "failed"


def test_started_dagster_run_with_dead_pid_is_marked_failure(tmp_path):
    instance = _instance(tmp_path)
    dead = _started_run(instance, _dead_pid())
    alive = _started_run(instance, os.getpid())
    messages: list[str] = []
    assert fail_dead_dagster_runs(instance, log=messages.append) == [dead.run_id]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    assert dead.run_id in messages[0]


def test_started_run_of_a_locked_workspace_from_another_pid_is_dead(tmp_path):
    # The pid may have been reused by an unrelated process: holding the workspace lock settles it.
    instance = _instance(tmp_path)
    run = _started_run(instance, os.getppid(), workspace=str(tmp_path))
    assert fail_dead_dagster_runs(instance, log=lambda m: None) == []
    assert fail_dead_dagster_runs(instance, log=lambda m: None, holds_workspace=str(tmp_path)) == [run.run_id]


def test_second_holder_of_the_workspace_lock_gets_a_clear_error(tmp_path):
    ws = WorkspaceResource(home=str(tmp_path / "ws"))
    with ws.lock(run_id="run-a"):
        with pytest.raises(WorkspaceBusy) as err:
            with workspace_lock(ws.root, run_id="run-b"):
                pass
    message = str(err.value)
    assert str(ws.root) in message and "run-a" in message and f"pid {os.getpid()}" in message
    assert "wait for it or stop it" in message
    with ws.lock(run_id="run-c"):  # released: the next run gets it
        pass


def test_lock_held_by_another_process_is_refused_and_freed_by_its_death(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from synehrgy_assets.recovery import workspace_lock\n"
         f"with workspace_lock({str(tmp_path)!r}, run_id='other'):\n"
         "    print('held', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceBusy, match=rf"run other \(pid {holder.pid}\)"):
            with workspace_lock(tmp_path):
                pass
    finally:
        holder.kill()  # kill -9: the kernel drops the lock
        holder.wait()
    with workspace_lock(tmp_path):
        pass


def test_cli_failure_is_short_and_names_the_log_file(tmp_path):
    empty = tmp_path / "mimic"
    empty.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "MIMIC_DIR": str(empty),
           "SYNEHRGY_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "materialize", "--home", str(tmp_path / "home")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    err = proc.stderr
    assert err.count(f"MIMIC-III directory {empty} is not usable") == 1, err
    assert len(err.splitlines()) < 25, err
    assert "mimic_raw_files" in err and "Stack Trace" not in err and "Traceback" not in err
    match = re.search(r"Full log with tracebacks: (\S+\.log)", err)
    assert match, err
    log = Path(match.group(1)).read_text()
    assert "Stack Trace" in log and "MimicLayoutError" in log


def test_cli_refuses_a_busy_workspace_at_once(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "SYNEHRGY_HOME": str(home)}
    with workspace_lock(home.resolve(), run_id="run-a"):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestration.cli", "materialize", "--home", str(home)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == 2, proc.stderr
    assert f"Workspace {home.resolve()} is in use by run run-a (pid {os.getpid()})" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (home / "warehouse.duckdb").exists()


# A stand-in for the graph's registry steps, run in a child process that the test kills with
# SIGKILL: training registers a generator version tagged `pending` (as defs/training.py does),
# sampling runs, the release registers its version and is killed before tagging it (as a kill
# between `log_model` and the tags in defs/release.py would leave it). The whole graph would take
# minutes per kill; these are the same MLflow and Dagster calls.
_KILLED_RUN = r'''
import sys, time
import dagster as dg
import mlflow
from synehrgy_assets.recovery import run_tags
from synehrgy_assets.resources import MlflowResource

home, dagster_home, stop_in = sys.argv[1:4]


def _register(client, name, run_id):
    try:
        client.create_registered_model(name)
    except Exception:
        pass
    return client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)


@dg.asset
def gpt_checkpoint(context, mlflow_tracking: MlflowResource):
    with mlflow_tracking.start_run(context, run_name="gpt_checkpoint") as run:
        mlflow.log_text("weights", "generator/weights.txt")
    client = mlflow_tracking.client()
    mv = _register(client, mlflow_tracking.model_name, run.info.run_id)
    client.set_model_version_tag(mlflow_tracking.model_name, mv.version, "dagster_run_id", context.run.run_id)
    client.set_model_version_tag(mlflow_tracking.model_name, mv.version, "validation_status", "pending")


@dg.asset(deps=[gpt_checkpoint])
def synthetic_sequences(context, mlflow_tracking: MlflowResource):
    with mlflow_tracking.start_run(context, run_name="synthetic_sequences"):
        if stop_in == "sampling":
            print("sampling", flush=True)
            time.sleep(600)


@dg.asset(deps=[synthetic_sequences])
def synthetic_release(context, mlflow_tracking: MlflowResource):
    with mlflow_tracking.start_run(context, run_name="synthetic_release") as run:
        mlflow.log_text("tables", "synthetic_cohort/tables.txt")
    _register(mlflow_tracking.client(), mlflow_tracking.release_name, run.info.run_id)
    print("release", flush=True)
    time.sleep(600)


dg.materialize([gpt_checkpoint, synthetic_sequences, synthetic_release],
               resources={"mlflow_tracking": MlflowResource(home=home)},
               instance=dg.DagsterInstance.local_temp(dagster_home), tags=run_tags(home))
'''


def _run_and_kill(home: Path, dagster_home: Path, stop_in: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(home), str(dagster_home), stop_in],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == stop_in, f"the child never reached {stop_in} (printed {line!r})"
    finally:
        proc.kill()  # SIGKILL: no finally block, no atexit, no MLflow end_run in the child
        proc.wait()
    assert proc.returncode == -9


def test_a_kill_during_sampling_and_during_the_release_leaves_no_unjudged_version(tmp_path):
    """kill -9 in sampling, then kill -9 in the release; the next good run's start marks both
    generator versions and the untagged release version failed, with the reason."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    _run_and_kill(home, dagster_home, "sampling")
    _run_and_kill(home, dagster_home, "release")

    ml = MlflowResource(home=str(home))
    client = ml.client()
    generator = {int(v.version): v for v in client.search_model_versions(f"name = '{ml.model_name}'")}
    release = {int(v.version): v for v in client.search_model_versions(f"name = '{ml.release_name}'")}
    # The second run's start already failed what the first kill left (v1); the second kill left v2
    # pending and the release version untagged.
    assert [v.tags.get("validation_status") for _, v in sorted(generator.items())] == ["failed", "pending"]
    assert "validation_status" not in release[1].tags

    # The next run, as the CLI starts it: dead Dagster runs are failed, then the first MLflow run of
    # the new Dagster run cleans the registry.
    instance = dg.DagsterInstance.local_temp(str(dagster_home))
    messages: list[str] = []
    assert len(fail_dead_dagster_runs(instance, log=messages.append)) == 2

    @dg.asset
    def next_good_run(context: dg.AssetExecutionContext, mlflow_tracking: MlflowResource):
        with mlflow_tracking.start_run(context, run_name="next_good_run"):
            pass

    assert dg.materialize([next_good_run], resources={"mlflow_tracking": ml}, instance=instance).success
    state = {}
    for name in (ml.model_name, ml.release_name):
        for v in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
            state[f"{name} v{v.version}"] = (v.tags.get("validation_status"), v.tags.get("validation_note", ""))
    print("\nregistry after the next run:", *(f"{k}: {s} ({n})" for k, (s, n) in state.items()), sep="\n  ")
    assert {k: s for k, (s, _) in state.items()} == {
        f"{ml.model_name} v1": "failed", f"{ml.model_name} v2": "failed", f"{ml.release_name} v1": "failed"}
    assert state[f"{ml.model_name} v1"][1].startswith("left pending by Dagster run ")
    assert state[f"{ml.model_name} v1"][1].endswith(" before judging it")
    assert state[f"{ml.release_name} v1"][1].startswith("registered without tags by Dagster run ")
    running = client.search_runs(experiment_ids=[ml.setup()], filter_string="attributes.status = 'RUNNING'")
    assert not running  # the killed sampling run was closed FAILED
