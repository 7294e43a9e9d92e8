"""Recovery after a hard kill (kill -9, OOM, power loss) and the workspace lock.

Three faults, one module (docs/reliability.md):

* a Dagster run left in STARTED/STARTING by a process that is gone (`fail_dead_dagster_runs`);
* MLflow runs left RUNNING by that run, and the generator and release versions it registered
  but never judged (`validation_status` pending or absent) (`clean_orphaned_mlflow`);
* two runs against one workspace at once (`workspace_lock`).

Only public Dagster and MLflow APIs are used.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg
from filelock import FileLock, Timeout

from synehrgy_assets.core.workspace_layout import WORKSPACE_LOCK

PID_TAG = "synehrgy/pid"
HOST_TAG = "synehrgy/host"
WORKSPACE_TAG = "synehrgy/workspace"
LOCK_FILE = WORKSPACE_LOCK

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
    release_name: str | None = None,
) -> dict[str, list[str]]:
    """Mark orphaned MLflow runs FAILED, and registered versions a dead run left unjudged
    `validation_status=failed` with the reason (tag `validation_note`).

    An MLflow run is orphaned when it is RUNNING and its `dagster.run_id` tag names a Dagster run
    that is missing, finished, or whose process is gone. A version of `model_name` (the generator)
    or `release_name` (the release) is unjudged when its `validation_status` is `pending` or absent
    (a kill between registering it and tagging it); it is failed when its MLflow run FAILED or was
    KILLED, or when the Dagster run that made it is no longer running: a kill during sampling or
    the release leaves the generator's training run FINISHED, and nothing will ever validate it."""
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
    for name in (model_name, *([release_name] if release_name else [])):
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except Exception:  # no registered model yet
            versions = []
        for mv in versions:
            reason = _unjudged_version_reason(client, mv, instance, current_run_id)
            if reason is None:
                continue
            client.set_model_version_tag(name, mv.version, "validation_status", "failed")
            client.set_model_version_tag(name, mv.version, "validation_note", reason)
            cleaned["model_versions"].append(f"{name} v{mv.version}")
            log(f"Marked {name} v{mv.version} validation_status=failed: {reason}.")
    return cleaned


def _unjudged_version_reason(client, mv, instance, current_run_id: str | None) -> str | None:
    """Why the version `mv` will never be validated (None: judged, or its run may still do it)."""
    tags = mv.tags or {}
    status_tag = tags.get("validation_status")
    if status_tag not in (None, "pending"):
        return None
    what = "left pending" if status_tag == "pending" else "registered without tags"
    if not mv.run_id:
        return f"{what}, with no MLflow run to finish it"
    try:
        run = client.get_run(mv.run_id)
        status, dagster_run_id = run.info.status, run.data.tags.get("dagster.run_id")
    except Exception:
        return f"{what}; its MLflow run {mv.run_id} is gone"
    dagster_run_id = tags.get("dagster_run_id") or dagster_run_id
    if dagster_run_id and dagster_run_id == current_run_id:
        return None
    if status in ("FAILED", "KILLED"):
        return f"{what}; its MLflow run {mv.run_id} ended {status}"
    if not dagster_run_id or instance is None:
        return None  # not made by a Dagster run, or no instance to ask: not ours to judge
    if dagster_run_in_progress(instance, dagster_run_id):
        return None
    dagster_run = instance.get_run_by_id(dagster_run_id)
    if dagster_run is not None and dagster_run.status == dg.DagsterRunStatus.SUCCESS:
        return None  # a run that materialized only part of the graph: a later release may judge it
    if dagster_run is None:
        ended = "is unknown to this Dagster instance"
    elif dagster_run.status in IN_PROGRESS:
        ended = "lost its process (killed)"
    else:
        ended = f"ended {dagster_run.status.value}"
    return f"{what} by Dagster run {dagster_run_id}, which {ended} before judging it"


class WorkspaceBusy(RuntimeError):
    """Another process holds the workspace lock."""


@contextmanager
def workspace_lock(root: Path | str, run_id: str | None = None) -> Iterator[Path]:
    """Hold `<root>/.synehrgy.lock` (a kernel lock, `filelock`) for the block; raise `WorkspaceBusy`
    at once if held. The lock file names its holder (pid, run, since) for that message.

    The kernel drops the lock when the holder dies (kill -9 included), so a stale file never blocks."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    try:
        lock = FileLock(path, timeout=0, mode=0o600).acquire()
    except Timeout:
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        raise WorkspaceBusy(
            f"Workspace {root} is in use by run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}) "
            f"since {holder.get('since', '?')}; wait for it or stop it."
        ) from None
    with lock:
        path.write_text(json.dumps(
            {"pid": os.getpid(), "run_id": run_id or "?", "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
             "host": socket.gethostname()}
        ))
        yield path
