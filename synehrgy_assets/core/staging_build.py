"""Atomic staging: dbt builds into a fresh DuckDB file, which replaces the published warehouse only
when the whole build succeeded and every blocking loss check passed on it.

* `new_build(root)` makes `<root>/staging_builds/<build_id>/warehouse.duckdb`'s folder. The file
  keeps the name `warehouse.duckdb`: DuckDB names its catalog after the file stem and dbt-duckdb
  bakes that catalog into view definitions, so a build file named otherwise would hold views that
  break once renamed.
* dbt's `on-run-start` hook drops `main.staging_build` (dbt_project.yml), so any dbt run, even one
  started by hand on the published file, removes the marker first; `write_marker` writes it back
  only after a green build.
* `publish(build_db, published_db)` copies the schemas other than `main` (the patient split, the
  synthetic tables: not dbt's) from the old warehouse into the build, checkpoints it, and moves
  it onto the published path with `os.replace` (atomic on one filesystem). A stale write-ahead
  log of the old file is moved aside first, so DuckDB can never replay it onto the new file.
* `read_marker(con)` is what every reader of the marts calls: it raises `StagingBuildError`
  (clear text) when the published marts carry no complete build marker or disagree with it.
* Publication: `record_pending` notes a green dbt build in `<root>/staging_state.json`; each
  blocking check judges it inside `judging(...)` and `record_verdict` publishes it after the last
  pass, or discards it on an ERROR (`record_failure` also notes dbt and raw-file failures).
  `refusal(state, published_id)` is the text readers raise while the newest build is pending or
  failed.

Plain Python and DuckDB, no Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from synehrgy_assets.core.output_dirs import write_text_atomic
from synehrgy_assets.core.workspace_layout import STAGING_BUILDS as BUILDS_DIR
from synehrgy_assets.core.workspace_layout import STAGING_STATE as STATE_FILE
from synehrgy_assets.core.workspace_layout import STAGING_STATE_LOCK as STATE_LOCK

MARKER_TABLE = "main.staging_build"
MARTS = ("visits", "visit_codes", "visit_phenotypes", "measurements", "cohort", "staging_audit")


class StagingBuildError(RuntimeError):
    """The published marts are not one complete staging build; the message says why and what to run."""


@dataclass(frozen=True)
class BuildInfo:
    build_id: str
    built_at: str
    source_dir: str
    source_fingerprint: str
    status: str
    row_counts: dict[str, int]

    def metadata(self) -> dict:
        return {
            "staging_build_id": self.build_id,
            "staging_built_at": self.built_at,
            "staging_source_fingerprint": self.source_fingerprint,
        }


def source_fingerprint(files: dict[str, Path]) -> str:
    """Names, sizes and modification times of the raw files (cheap: no file is read)."""
    h = hashlib.sha256()
    for table in sorted(files):
        st = Path(files[table]).stat()
        h.update(f"{table}:{Path(files[table]).resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def changed_files(before: dict[str, tuple[int, int]], files: dict[str, Path]) -> list[str]:
    """Files whose (size, mtime_ns) differ from `before` (or that vanished)."""
    changed = []
    for table, path in sorted(files.items()):
        try:
            st = Path(path).stat()
            now = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            now = None
        if now != before.get(table):
            changed.append(str(path))
    return changed


def file_stats(files: dict[str, Path]) -> dict[str, tuple[int, int]]:
    out = {}
    for table, path in files.items():
        st = Path(path).stat()
        out[table] = (st.st_size, st.st_mtime_ns)
    return out


def new_build(root: Path) -> tuple[str, Path]:
    """(build id, path of the fresh build file). Leftovers of killed builds are removed first."""
    builds = Path(root) / BUILDS_DIR
    if builds.exists():
        shutil.rmtree(builds, ignore_errors=True)
    build_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    folder = builds / build_id
    folder.mkdir(parents=True)
    os.chmod(builds, 0o700)  # holds real rows until published
    return build_id, folder / "warehouse.duckdb"


def discard_build(build_db: Path) -> None:
    shutil.rmtree(Path(build_db).parent, ignore_errors=True)


def _mart_counts(con) -> dict[str, int]:
    return {m: int(con.execute(f"select count(*) from main.{m}").fetchall()[0][0]) for m in MARTS}


def write_marker(build_db: Path, build_id: str, source_dir: str, fingerprint: str) -> BuildInfo:
    """Record a green build in its own file (called only after `dbt build` succeeded)."""
    import duckdb

    built_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with duckdb.connect(str(build_db)) as con:
        counts = _mart_counts(con)
        con.execute(
            f"""create or replace table {MARKER_TABLE} (
                build_id varchar, built_at varchar, source_dir varchar, source_fingerprint varchar,
                status varchar, mart varchar, n_rows bigint)"""
        )
        con.executemany(
            f"insert into {MARKER_TABLE} values (?, ?, ?, ?, 'complete', ?, ?)",
            [(build_id, built_at, source_dir, fingerprint, m, n) for m, n in counts.items()],
        )
    return BuildInfo(build_id, built_at, source_dir, fingerprint, "complete", counts)


def publish(build_db: Path, published_db: Path) -> None:
    """Swap the build in: carry over the other schemas, checkpoint, then one `os.replace`."""
    import duckdb

    build_db, published_db = Path(build_db), Path(published_db)
    with duckdb.connect(str(build_db)) as con:
        if published_db.exists():
            try:
                con.execute(f"attach '{str(published_db).replace(chr(39), chr(39) * 2)}' as old (read_only)")
            except duckdb.Error:
                pass  # an unreadable old file: nothing to carry over, it is replaced
            else:
                tables = con.execute(
                    "select schema_name, table_name from duckdb_tables() "
                    "where database_name = 'old' and schema_name <> 'main'"
                ).fetchall()
                for schema, table in tables:
                    con.execute(f'create schema if not exists "{schema}"')
                    con.execute(f'create table "{schema}"."{table}" as select * from old."{schema}"."{table}"')
                con.execute("detach old")
        con.execute("checkpoint")
    os.chmod(build_db, 0o600)  # every real row: owner-only once published (dbt created it 0644)
    wal = published_db.with_name(published_db.name + ".wal")
    if wal.exists():
        wal.replace(wal.with_name(wal.name + ".stale"))
    os.replace(build_db, published_db)
    stale = wal.with_name(wal.name + ".stale")
    if stale.exists():
        stale.unlink()
    discard_build(build_db)


def read_marker(con, require_complete: bool = True) -> BuildInfo:
    """The build marker of the marts `con` sees; raises StagingBuildError when they are not one
    complete build (no marker, an incomplete one, or mart row counts that differ from it)."""
    hint = "Re-stage: materialize the staging assets (or run the job synehrgy_end_to_end)."
    has = con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'main' and table_name = 'staging_build'"
    ).fetchall()[0][0]
    if not has:
        raise StagingBuildError(
            "The warehouse's marts carry no staging build marker (main.staging_build): they come from a "
            f"failed, partial or hand-started dbt run, or from a version before atomic staging. {hint}"
        )
    rows = con.execute(
        f"select build_id, built_at, source_dir, source_fingerprint, status, mart, n_rows from {MARKER_TABLE}"
    ).fetchall()
    if not rows or len({r[0] for r in rows}) != 1:
        raise StagingBuildError(f"main.staging_build is empty or names several builds. {hint}")
    build_id, built_at, source_dir, fingerprint, status = rows[0][:5]
    counts = {r[5]: int(r[6]) for r in rows}
    info = BuildInfo(build_id, built_at, source_dir, fingerprint, status, counts)
    if require_complete:
        if status != "complete":
            raise StagingBuildError(f"Staging build {build_id} has status {status!r}, not 'complete'. {hint}")
        missing = [m for m in MARTS if m not in counts]
        try:
            now = _mart_counts(con)
        except Exception as exc:  # a mart table is gone
            raise StagingBuildError(f"Staging build {build_id}: a mart is missing ({exc}). {hint}") from exc
        differ = [f"{m}: {counts.get(m)} rows at build, {now[m]} now" for m in MARTS if counts.get(m) != now[m]]
        if missing or differ:
            raise StagingBuildError(
                f"The marts no longer match staging build {build_id} ({'; '.join(differ) or 'marts missing from the marker'}): "
                f"they were changed after the build. {hint}"
            )
    return info


# ---------------------------------------------------------------------------------------------
# Publication: a green dbt build waits in its folder until its blocking checks have judged it
# ---------------------------------------------------------------------------------------------


@contextmanager
def _state_lock(root: Path) -> Iterator[None]:
    """Serialises the checks of one build (they may run in parallel processes): each reads the
    pending file, records its verdict, and the last one publishes or discards it."""
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / STATE_LOCK, mode=0o600):
        yield


def read_state(root: Path) -> dict | None:
    """The newest staging attempt of the workspace ({build_id, status, reason, ...}); None when no
    attempt was recorded (a workspace staged before this record existed, or a copied warehouse)."""
    path = Path(root) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"build_id": "?", "status": "failed", "reason": f"{path} is unreadable"}


def _write_state(root: Path, state: dict) -> None:
    write_text_atomic(Path(root) / STATE_FILE, json.dumps(state, indent=2, sort_keys=True), mode=0o600)


def record_pending(root: Path, build_id: str, build_db: Path, required_checks: list[str],
                   run_id: str | None = None) -> dict:
    """A green dbt build (of the Dagster run `run_id`) now waits for `required_checks`."""
    state = {"build_id": build_id, "status": "pending", "build_db": str(build_db), "run_id": run_id,
             "required": sorted(required_checks), "verdicts": {}, "reason": "",
             "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with _state_lock(Path(root)):
        _write_state(Path(root), state)
    return state


def record_failure(root: Path, build_id: str | None, reason: str) -> None:
    """The newest staging attempt failed (dbt error, unreadable raw files, a blocking check)."""
    with _state_lock(Path(root)):
        _write_state(Path(root), {"build_id": build_id, "status": "failed",
                                  "reason": reason, "verdicts": {}, "required": [],
                                  "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


@contextmanager
def judging(root: Path, published_db: Path, run_id: str | None = None) -> Iterator[tuple[Path | None, dict | None]]:
    """For a loss check: (the file to judge, the pending state or None), under the state lock.

    The file is the pending build's while one waits for its checks, else the published warehouse;
    None when another check of the same run `run_id` has already failed (and discarded) the build,
    so there is nothing of this run left to judge."""
    root = Path(root)
    with _state_lock(root):
        state = read_state(root)
        if state and state.get("status") == "pending" and Path(state.get("build_db", "")).exists():
            yield Path(state["build_db"]), state
        elif state and state.get("status") == "failed" and run_id and state.get("run_id") == run_id:
            yield None, state
        else:
            yield Path(published_db), None


def record_verdict(root: Path, published_db: Path, build_id: str, check: str, severity: str, message: str) -> dict:
    """Record one check's verdict on the pending build `build_id`. An ERROR fails the build (its
    file is deleted, the published warehouse is left as it is); once every required check has
    passed or warned, the build is published. Returns the state after the verdict.

    Call inside `judging(...)` (which holds the lock): the state is re-read and written here."""
    root = Path(root)
    state = read_state(root)
    if not state or state.get("build_id") != build_id or state.get("status") != "pending":
        return state or {}
    state["verdicts"][check] = severity
    if severity == "ERROR":
        state["status"] = "failed"
        state["reason"] = f"blocking check {check} failed: {message}"
        discard_build(Path(state["build_db"]))
    elif all(c in state["verdicts"] for c in state["required"]):
        publish(Path(state["build_db"]), Path(published_db))
        state["status"] = "published"
    state["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write_state(root, state)
    return state


def refusal(state: dict | None, published_build_id: str | None) -> str | None:
    """Why readers of the marts must refuse the workspace's newest staging build, or None.

    A build that is pending (its blocking checks have not all run) or failed is never what readers
    see (it is not published), but a retrain on the older published marts would silently ignore
    the newer data: the reader stops and names the build instead."""
    if not state or state.get("status") == "published":
        return None
    build = state.get("build_id")
    if published_build_id and build == published_build_id:
        return None
    older = (f"The published warehouse still holds the older build {published_build_id}."
             if published_build_id else "No build is published.")
    if state.get("status") == "pending":
        missing = [c for c in state.get("required", []) if c not in state.get("verdicts", {})]
        why = (f"staging build {build} is not published: its blocking checks have not all run "
               f"(missing: {', '.join(missing) or '?'})")
        todo = "Run the staging asset checks (or re-stage with them)."
    elif build is None:
        why = f"the newest staging attempt was refused before dbt ran: {state.get('reason') or '?'}"
    else:
        why = f"staging build {build} failed and was not published: {state.get('reason') or '?'}"
        todo = "Fix the raw data and re-stage (materialize the staging assets with their checks, or run synehrgy_end_to_end)."
    return f"{why}. {older} {todo}"
