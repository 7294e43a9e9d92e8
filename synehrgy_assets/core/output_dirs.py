"""Folders we write: never into real data, never over what we did not write, always all at once.

Every writer of user-visible output (`generate` in each format, the release's exports,
`core/exports.py`) goes through `replaced_dir`:

- the target must be missing, empty, or an earlier output of ours (it holds OWNER_MARKER);
  an earlier output is replaced only with `overwrite=True` (`--overwrite`);
- a folder holding MIMIC-III tables that we did not write (a real MIMIC folder, or a folder above
  one) is refused even with `overwrite=True`: replacing real data is never what a flag should do;
- any other non-empty folder is replaced only with `overwrite=True`;
- the new content is written into a temporary sibling folder and swapped in whole (`staged_dir`),
  so a failed write leaves the previous content as it was.

`staged_dir` alone (no ownership rules) is the write-temp-then-rename of the workspace's own folders;
`atomic_file` is the same for one file (a JSON state, a checkpoint): readers see the old file or the
new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

OWNER_MARKER = ".synehrgy-output.json"
# The 26 tables of MIMIC-III v1.4: a file of any of them marks a folder as MIMIC data.
MIMIC_III_TABLES = (
    "ADMISSIONS", "CALLOUT", "CAREGIVERS", "CHARTEVENTS", "CPTEVENTS", "DATETIMEEVENTS", "DIAGNOSES_ICD",
    "DRGCODES", "D_CPT", "D_ICD_DIAGNOSES", "D_ICD_PROCEDURES", "D_ITEMS", "D_LABITEMS", "ICUSTAYS",
    "INPUTEVENTS_CV", "INPUTEVENTS_MV", "LABEVENTS", "MICROBIOLOGYEVENTS", "NOTEEVENTS", "OUTPUTEVENTS",
    "PATIENTS", "PRESCRIPTIONS", "PROCEDUREEVENTS_MV", "PROCEDURES_ICD", "SERVICES", "TRANSFERS",
)
# A folder this large is no earlier output of a small generation: refused rather than walked.
MAX_ENTRIES_WALKED = 20_000


class OutputRefused(ValueError):
    """The target folder may not be written; the message names it and what to do instead."""


def _mimic_file_names() -> set[str]:
    from synehrgy_assets.core.mimic_layout import candidate_names

    return {name.lower() for table in MIMIC_III_TABLES for name in candidate_names(table)}


def mimic_tables_in(folder: str | Path) -> list[Path]:
    """MIMIC-III table files (`PATIENTS.csv.gz`, `chartevents.csv`, ...) anywhere under `folder`
    that no output of ours holds (a subfolder with OWNER_MARKER is ours)."""
    names, found, seen = _mimic_file_names(), [], 0
    for root, dirs, files in os.walk(folder):
        seen += len(dirs) + len(files)
        if seen > MAX_ENTRIES_WALKED:
            raise OutputRefused(f"{folder} holds more than {MAX_ENTRIES_WALKED:,} files and folders: it is no earlier "
                                "output of ours; choose a new folder")
        if OWNER_MARKER in files:
            dirs.clear()
            continue
        found += [Path(root) / f for f in files if f.lower() in names]
    return sorted(found)


def check_target(out_dir: str | Path, *, overwrite: bool = False) -> None:
    """Raise OutputRefused (one line) unless `out_dir` may be written (see the module doc)."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"{out} exists and is a file, not a folder: choose a folder for --out")
    if not out.exists() or not any(out.iterdir()):
        return
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise OutputRefused(f"{out} holds the current directory: choose a folder of its own for --out")
    if (out / OWNER_MARKER).is_file():
        if not overwrite:
            raise OutputRefused(f"{out} holds an earlier output of synehrgy: pass --overwrite to replace it whole, "
                                "or choose a new folder")
        return
    tables = mimic_tables_in(out)
    if tables:
        shown = ", ".join(str(p.relative_to(out)) for p in tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise OutputRefused(f"{out} holds MIMIC-III tables that synehrgy did not write ({shown}): refusing to write "
                            "into real data, even with --overwrite; choose a new folder")
    if not overwrite:
        raise OutputRefused(f"{out} is not empty and synehrgy did not write it (no {OWNER_MARKER}): choose a new or "
                            "empty folder, or pass --overwrite to replace it whole")


def swap_in(new: Path, out: Path, trash: Path) -> None:
    """Put the folder `new` at `out`: the old `out` is moved to `trash` first (same filesystem, so
    each step is one rename) and put back if the second rename fails."""
    if out.exists():
        out.rename(trash)
        try:
            new.rename(out)
        except BaseException:
            trash.rename(out)
            raise
    else:
        new.rename(out)


@contextmanager
def atomic_file(path: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it replaces `path` in one rename
    (with permissions `mode` when given), on failure it is removed and `path` stays as it was.

    The temporary name is unique (pid and a random part), so two writers never share one; a file
    left by a process killed mid-write starts with `.<name>.tmp-` (`stale_temp_files`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, *, mode: int | None = None) -> Path:
    """`path` holds `text`, written through `atomic_file`."""
    with atomic_file(path, mode=mode) as tmp:
        tmp.write_text(text)
    return Path(path)


def stale_temp_files(path: str | Path) -> list[Path]:
    """Temporary files of `atomic_file` for `path` that a killed writer left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.tmp-*"))


@contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `out_dir`; on success it replaces `out_dir` whole, on failure it is
    removed and `out_dir` stays as it was."""
    out = Path(out_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    work = scratch / out.name
    work.mkdir()
    try:
        yield work
        swap_in(work, out, scratch / "previous")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def replaced_dir(out_dir: str | Path, *, overwrite: bool = False, what: str = "") -> Iterator[Path]:
    """`check_target`, then `staged_dir` with OWNER_MARKER written into the new content."""
    check_target(out_dir, overwrite=overwrite)
    with staged_dir(out_dir) as work:
        yield work
        (work / OWNER_MARKER).write_text(json.dumps(
            {"written_by": "synehrgy", "what": what, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
