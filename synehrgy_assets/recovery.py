"""Recovery after a hard kill (kill -9, OOM, power loss) and the workspace lock.

Three faults, one module (docs/reliability.md):

* a Dagster run left in STARTED/STARTING by a process that is gone (`fail_dead_dagster_runs`);
* MLflow runs left RUNNING by that run, and registered generator versions left
  `validation_status=pending` by it (`clean_orphaned_mlflow`);
* two runs against one workspace at once (`workspace_lock`).

Only public Dagster and MLflow APIs are used.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg

PID_TAG = "synehrgy/pid"
HOST_TAG = "synehrgy/host"
WORKSPACE_TAG = "synehrgy/workspace"
LOCK_FILE = ".synehrgy.lock"

# A Dagster run in one of these is (or may still be) running.
IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.MANAGED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
ALIVE_CHECKED = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}

Log = Callable[[str], None]


def run_tags(workspace_root: Path | str) -> dict[str, str]:
    """Tags the CLI puts on its run so a later start can tell whether its process is gone."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), WORKSPACE_TAG: str(workspace_root)}


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run_process_dead(run: dg.DagsterRun, holds_workspace: str | None = None) -> bool:
    """True when `run` is STARTED/STARTING but its process (tag `synehrgy/pid`, this host) is gone.

    With `holds_workspace` (the caller holds that workspace's lock) a run of that workspace from
    another process is dead whatever its pid says (the pid may have been reused)."""
    if run.status not in ALIVE_CHECKED:
        return False
    tags = run.tags or {}
    pid, host = tags.get(PID_TAG), tags.get(HOST_TAG)
    if not pid or host != socket.gethostname():
        return False  # not ours to judge: another host, or not started by the CLI
    if int(pid) == os.getpid():
        return False
    if holds_workspace is not None and tags.get(WORKSPACE_TAG) == str(holds_workspace):
        return True
    return not pid_alive(int(pid))


def fail_dead_dagster_runs(
    instance: dg.DagsterInstance, log: Log = print, holds_workspace: str | None = None
) -> list[str]:
    """Report STARTED/STARTING runs whose process is gone as failed; return their run ids."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    )
    failed = []
    for run in runs:
        if run_process_dead(run, holds_workspace):
            pid = run.tags.get(PID_TAG)
            instance.report_run_failed(
                run, message=f"The process of this run (pid {pid}) is gone (killed?); marked failed at the next start."
            )
            log(f"Marked Dagster run {run.run_id} FAILURE: its process (pid {pid}) is gone.")
            failed.append(run.run_id)
    return failed


def dagster_run_in_progress(instance: dg.DagsterInstance | None, run_id: str) -> bool:
    if instance is None:
        return True  # cannot tell: leave it alone
    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in IN_PROGRESS:
        return False
    return not run_process_dead(run)


def clean_orphaned_mlflow(
    client,
    experiment_id: str,
    model_name: str,
    instance: dg.DagsterInstance | None,
    log: Log = print,
    current_run_id: str | None = None,
) -> dict[str, list[str]]:
    """Mark orphaned MLflow runs FAILED and their pending generator versions `validation_status=failed`.

    An MLflow run is orphaned when it is RUNNING and its `dagster.run_id` tag names a Dagster run
    that is missing, finished, or whose process is gone. A registered version of `model_name`
    tagged `validation_status=pending` whose MLflow run is FAILED or KILLED was never validated
    and never will be."""
    cleaned: dict[str, list[str]] = {"runs": [], "model_versions": []}
    running = client.search_runs(
        experiment_ids=[experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in running:
        dagster_run_id = run.data.tags.get("dagster.run_id")
        if not dagster_run_id or dagster_run_id == current_run_id:
            continue
        if dagster_run_in_progress(instance, dagster_run_id):
            continue
        client.set_terminated(run.info.run_id, status="FAILED")
        client.set_tag(run.info.run_id, "synehrgy.orphaned", f"Dagster run {dagster_run_id} ended without closing it")
        cleaned["runs"].append(run.info.run_id)
        log(f"Marked orphaned MLflow run {run.info.run_id} FAILED (Dagster run {dagster_run_id} is not running).")
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except Exception:  # no registered model yet
        versions = []
    for mv in versions:
        if (mv.tags or {}).get("validation_status") != "pending" or not mv.run_id:
            continue
        try:
            status = client.get_run(mv.run_id).info.status
        except Exception:
            status = "KILLED"  # its run is gone: nothing will validate it
        if status in ("FAILED", "KILLED"):
            client.set_model_version_tag(model_name, mv.version, "validation_status", "failed")
            client.set_model_version_tag(
                model_name, mv.version, "validation_note", f"its MLflow run {mv.run_id} ended {status}"
            )
            cleaned["model_versions"].append(str(mv.version))
            log(f"Marked {model_name} v{mv.version} validation_status=failed (its MLflow run is {status}).")
    return cleaned


class WorkspaceBusy(RuntimeError):
    """Another process holds the workspace lock."""


@contextmanager
def workspace_lock(root: Path | str, run_id: str | None = None) -> Iterator[Path]:
    """Hold `<root>/.synehrgy.lock` (fcntl.flock) for the block; raise `WorkspaceBusy` at once if held.

    The kernel drops the lock when the holder dies (kill -9 included), so a stale file never blocks."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except ValueError:
                holder = {}
            raise WorkspaceBusy(
                f"Workspace {root} is in use by run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}) "
                f"since {holder.get('since', '?')}; wait for it or stop it."
            ) from None
        payload = json.dumps(
            {"pid": os.getpid(), "run_id": run_id or "?", "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
             "host": socket.gethostname()}
        ).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
