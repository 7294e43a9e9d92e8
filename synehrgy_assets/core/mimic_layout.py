"""Resolve a MIMIC-III v1.4 folder to one file per table and validate the header lines.

Both official layouts are accepted:

* the open demo: lowercase headers, `TABLE.csv.gz` (or a gunzipped `TABLE.csv`);
* the full credentialed release: UPPERCASE, double-quoted headers, `TABLE.csv.gz`.

File names may be upper or lower case. Only the first line of each file is read. When both
`TABLE.csv` and `TABLE.csv.gz` exist they may not hold the same rows (a fresh export beside a stale
one), so that is an error naming both files, unless `twins` picks one for every table: `"csv"`
(the plain file, which DuckDB parses on all threads) or `"csv.gz"`. A header that names a column
twice is an error naming the file and the column (DuckDB would read one of them silently).
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

# The lowercase columns the dbt project reads from each raw table. The dbt project keeps the
# same lists in `dbt_mimic/dbt_project.yml` (var `mimic_columns`); a test keeps the two equal.
REQUIRED_COLUMNS: dict[str, list[str]] = {
    "patients": ["subject_id", "gender", "dob", "dod", "expire_flag"],
    "admissions": [
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "insurance",
        "ethnicity",
        "hospital_expire_flag",
    ],
    "icustays": [
        "subject_id",
        "hadm_id",
        "icustay_id",
        "dbsource",
        "first_careunit",
        "last_careunit",
        "intime",
        "outtime",
    ],
    "diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd9_code"],
    "procedures_icd": ["subject_id", "hadm_id", "seq_num", "icd9_code"],
    "d_icd_diagnoses": ["icd9_code", "short_title", "long_title"],
    "d_icd_procedures": ["icd9_code", "short_title", "long_title"],
    "chartevents": [
        "row_id",
        "subject_id",
        "hadm_id",
        "icustay_id",
        "itemid",
        "charttime",
        "value",
        "valuenum",
        "error",
    ],
    "labevents": ["row_id", "subject_id", "hadm_id", "itemid", "charttime", "value", "valuenum"],
    "d_items": ["itemid", "label", "dbsource", "linksto", "unitname"],
    "d_labitems": ["itemid", "label", "fluid", "category"],
}

HEADER_CASES = ("lower", "upper", "mixed")


class MimicLayoutError(ValueError):
    """The folder is not a usable MIMIC-III layout; the message names the file and what is missing."""


@dataclass(frozen=True)
class MimicFiles:
    """One resolved file per required table."""

    directory: Path
    files: dict[str, Path]  # lowercase table name -> file
    header_case: str  # 'lower' (demo) | 'upper' (full release) | 'mixed' (files disagree)

    def dbt_vars(self) -> dict:
        """The `--vars` payload of `dbt build` for dbt_mimic."""
        return {"mimic_files": {table: str(path.resolve()) for table, path in sorted(self.files.items())}}


TWIN_CHOICES = ("error", "csv", "csv.gz")


def candidate_names(table: str) -> list[str]:
    """File names looked for: the plain `.csv`, then the `.csv.gz` (see module doc for twins)."""
    upper, lower = table.upper(), table.lower()
    return [f"{upper}.csv", f"{lower}.csv", f"{upper}.csv.gz", f"{lower}.csv.gz"]


def _duplicated_names(path: Path, header: list[str]) -> str | None:
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(header, start=1):
        seen.setdefault(name.lower(), []).append(i)
    dups = {name: cols for name, cols in seen.items() if len(cols) > 1}
    if not dups:
        return None
    shown = "; ".join(f"{name} (columns {', '.join(map(str, cols))})" for name, cols in dups.items())
    return (f"{path}: the header names a column more than once (compared case-insensitively): {shown}; "
            "expected each column name once")


def _read_header(path: Path) -> list[str]:
    """Column names of the first line, quotes removed; raises MimicLayoutError on empty/corrupt files."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        # Bytes first, then decode the one line: a text reader decodes a whole chunk ahead, so a
        # bad byte in a later data row would be blamed on the header.
        with opener(path, "rb") as handle:
            first_line = handle.readline().decode("utf-8-sig")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise MimicLayoutError(f"{path}: cannot read the header line ({exc})") from exc
    if not first_line.strip():
        raise MimicLayoutError(f"{path}: the file is empty (no header line)")
    return [name.strip() for name in next(csv.reader([first_line]))]


def _case_of(names: list[str]) -> str:
    letters = "".join(names)
    if letters == letters.lower():
        return "lower"
    if letters == letters.upper():
        return "upper"
    return "mixed"


def _pick_file(directory: Path, table: str, by_lower_name: dict[str, list[Path]], twins: str = "error") -> Path | None:
    found: dict[str, Path] = {}
    for name in candidate_names(table):
        hits = by_lower_name.get(name.lower(), [])
        if len(hits) > 1:
            raise MimicLayoutError(
                f"{directory}: table {table.upper()} is ambiguous, several files differ only in case: "
                + ", ".join(sorted(p.name for p in hits))
            )
        if hits:
            found.setdefault("csv.gz" if name.lower().endswith(".gz") else "csv", hits[0])
    if len(found) == 2:
        if twins == "error":
            raise MimicLayoutError(
                f"table {table.upper()} has two files, {found['csv']} and {found['csv.gz']}: they may not hold "
                "the same rows (a fresh export beside a stale one). Remove the stale one, or pick one for every "
                "table: twin_files='csv' or 'csv.gz' (env MIMIC_TWIN_FILES)"
            )
        return found[twins]
    return next(iter(found.values()), None)


def resolve_mimic_dir(directory: str | Path, tables: list[str] | None = None, twins: str = "error") -> MimicFiles:
    """Find and validate one file per table (default: every table of REQUIRED_COLUMNS).

    Every problem found is reported in one MimicLayoutError: missing tables (with the file names
    looked for), `.csv` / `.csv.gz` twins (unless `twins` is "csv" or "csv.gz"), missing or
    duplicated columns (with the columns found), empty or unreadable files.
    """
    if twins not in TWIN_CHOICES:
        raise MimicLayoutError(f"twin_files must be one of {', '.join(TWIN_CHOICES)}, got {twins!r}")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise MimicLayoutError(f"MIMIC-III directory {directory} does not exist or is not a directory")
    wanted = [t.lower() for t in (tables if tables is not None else REQUIRED_COLUMNS)]
    unknown = [t for t in wanted if t not in REQUIRED_COLUMNS]
    if unknown:
        raise MimicLayoutError(f"unknown MIMIC-III table(s) {unknown}; known: {sorted(REQUIRED_COLUMNS)}")

    by_lower_name: dict[str, list[Path]] = {}
    for entry in directory.iterdir():
        if entry.is_file():
            by_lower_name.setdefault(entry.name.lower(), []).append(entry)

    problems: list[str] = []
    files: dict[str, Path] = {}
    cases: set[str] = set()
    for table in wanted:
        try:
            path = _pick_file(directory, table, by_lower_name, twins)
            if path is None:
                problems.append(
                    f"missing table {table.upper()}: none of {', '.join(candidate_names(table))} exists"
                )
                continue
            header = _read_header(path)
        except MimicLayoutError as exc:
            problems.append(str(exc))
            continue
        duplicated = _duplicated_names(path, header)
        if duplicated:
            problems.append(duplicated)
            continue
        found = [name.lower() for name in header]
        missing = [col for col in REQUIRED_COLUMNS[table] if col not in found]
        if missing:
            problems.append(
                f"{path}: missing column(s) {', '.join(missing)} (compared case-insensitively); "
                f"columns found: {', '.join(header)}"
            )
            continue
        files[table] = path
        cases.add(_case_of(header))
    if problems:
        raise MimicLayoutError(
            f"MIMIC-III directory {directory} is not usable:\n  - " + "\n  - ".join(problems)
        )
    header_case = cases.pop() if len(cases) == 1 else "mixed"
    return MimicFiles(directory=directory.resolve(), files=files, header_case=header_case)
