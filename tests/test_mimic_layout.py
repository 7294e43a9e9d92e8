"""resolve_mimic_dir on the real demo, an UPPERCASE-header copy, and broken folders."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from synehrgy_assets.core.mimic_layout import (
    REQUIRED_COLUMNS,
    MimicFiles,
    MimicLayoutError,
    candidate_names,
    resolve_mimic_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = Path(
    os.environ.get("SYNEHRGY_MIMIC_DEMO_DIR", str(REPO_ROOT.parent / "shared" / "data" / "mimic-iii-demo"))
)
needs_demo = pytest.mark.skipif(
    not DEMO_DIR.is_dir(),
    reason=f"MIMIC-III demo folder not found at {DEMO_DIR} (set SYNEHRGY_MIMIC_DEMO_DIR)",
)

# Tables rewritten with UPPERCASE quoted headers in the upper-case copy; a mix of .csv and .csv.gz.
UPPER_AS_CSV = ("patients", "icustays", "diagnoses_icd")
UPPER_AS_GZ = ("admissions", "procedures_icd")


def _demo_lines(table: str, n_rows: int) -> list[str]:
    with gzip.open(DEMO_DIR / f"{table.upper()}.csv.gz", "rt", encoding="utf-8") as handle:
        return [handle.readline() for _ in range(n_rows + 1)]


def _upper_quoted(header_line: str) -> str:
    return ",".join(f'"{name.upper()}"' for name in header_line.strip().split(",")) + "\n"


def _make_upper_copy(target: Path) -> None:
    """Demo copy: some tables with UPPERCASE quoted headers (plain and gzip), the rest linked."""
    target.mkdir()
    for table in REQUIRED_COLUMNS:
        if table in UPPER_AS_CSV + UPPER_AS_GZ:
            header, *rows = _demo_lines(table, 5)
            text = _upper_quoted(header) + "".join(rows)
            if table in UPPER_AS_CSV:
                (target / f"{table.upper()}.csv").write_text(text, encoding="utf-8")
            else:
                with gzip.open(target / f"{table}.csv.gz", "wt", encoding="utf-8") as handle:
                    handle.write(text)
        else:
            (target / f"{table.upper()}.csv.gz").symlink_to(DEMO_DIR / f"{table.upper()}.csv.gz")


def _write_minimal(directory: Path, tables=REQUIRED_COLUMNS, upper: bool = False) -> None:
    """Header-only files (plus one empty row) with exactly the required columns."""
    directory.mkdir(exist_ok=True)
    for table in tables:
        cols = REQUIRED_COLUMNS[table]
        header = ",".join(f'"{c.upper()}"' for c in cols) if upper else ",".join(cols)
        (directory / f"{table.upper()}.csv").write_text(header + "\n" + "," * (len(cols) - 1) + "\n")


@needs_demo
def test_demo_resolves_with_lowercase_headers():
    files = resolve_mimic_dir(DEMO_DIR)
    assert isinstance(files, MimicFiles)
    assert set(files.files) == set(REQUIRED_COLUMNS)
    assert files.header_case == "lower"
    assert all(p.name == f"{t.upper()}.csv.gz" for t, p in files.files.items())
    paths = files.dbt_vars()["mimic_files"]
    assert set(paths) == set(REQUIRED_COLUMNS)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths.values())


@needs_demo
def test_uppercase_quoted_copy_resolves(tmp_path):
    copy = tmp_path / "upper"
    _make_upper_copy(copy)
    files = resolve_mimic_dir(copy)
    assert set(files.files) == set(REQUIRED_COLUMNS)
    assert files.files["patients"].name == "PATIENTS.csv"
    assert files.files["admissions"].name == "admissions.csv.gz"
    # Linked demo tables are lowercase, rewritten ones UPPERCASE: the folder is reported as mixed.
    assert files.header_case == "mixed"


def test_all_uppercase_folder_reports_upper(tmp_path):
    _write_minimal(tmp_path / "full", upper=True)
    assert resolve_mimic_dir(tmp_path / "full").header_case == "upper"


def test_csv_and_csv_gz_twins_are_an_error_unless_one_is_picked(tmp_path):
    _write_minimal(tmp_path)
    cols = ",".join(REQUIRED_COLUMNS["patients"])
    with gzip.open(tmp_path / "PATIENTS.csv.gz", "wt") as handle:
        handle.write(cols + "\n")
    with pytest.raises(MimicLayoutError) as err:
        resolve_mimic_dir(tmp_path)
    assert f"table PATIENTS has two files, {tmp_path / 'PATIENTS.csv'} and {tmp_path / 'PATIENTS.csv.gz'}" in str(err.value)
    assert resolve_mimic_dir(tmp_path, twins="csv").files["patients"].name == "PATIENTS.csv"
    assert resolve_mimic_dir(tmp_path, twins="csv.gz").files["patients"].name == "PATIENTS.csv.gz"


def test_a_column_named_twice_in_a_header_is_named(tmp_path):
    _write_minimal(tmp_path)
    cols = REQUIRED_COLUMNS["icustays"]
    (tmp_path / "ICUSTAYS.csv").write_text(",".join(["ICUSTAY_ID", *cols]) + "\n")
    with pytest.raises(MimicLayoutError, match=r"ICUSTAYS.csv: the header names a column more than once "
                       r"\(compared case-insensitively\): icustay_id \(columns 1, 4\)"):
        resolve_mimic_dir(tmp_path)


def test_only_the_header_line_is_read(tmp_path):
    _write_minimal(tmp_path)
    (tmp_path / "CHARTEVENTS.csv").unlink()
    text = ",".join(REQUIRED_COLUMNS["chartevents"]) + "\n" + ("1," * 9 + "1\n") * 20000
    payload = gzip.compress(text.encode())
    # A truncated gzip stream: the header is intact, the tail is not.
    (tmp_path / "CHARTEVENTS.csv.gz").write_bytes(payload[: len(payload) // 2])
    assert resolve_mimic_dir(tmp_path).files["chartevents"].name == "CHARTEVENTS.csv.gz"


def test_missing_table_lists_the_names_looked_for(tmp_path):
    _write_minimal(tmp_path)
    (tmp_path / "LABEVENTS.csv").unlink()
    with pytest.raises(MimicLayoutError) as info:
        resolve_mimic_dir(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "LABEVENTS" in message
    for name in candidate_names("labevents"):
        assert name in message


def test_missing_column_names_file_column_and_found_columns(tmp_path):
    _write_minimal(tmp_path)
    cols = [c for c in REQUIRED_COLUMNS["diagnoses_icd"] if c != "icd9_code"] + ["row_id"]
    (tmp_path / "DIAGNOSES_ICD.csv").write_text(",".join(cols) + "\n")
    with pytest.raises(MimicLayoutError) as info:
        resolve_mimic_dir(tmp_path)
    message = str(info.value)
    assert "DIAGNOSES_ICD.csv" in message
    assert "icd9_code" in message
    assert "columns found: subject_id, hadm_id, seq_num, row_id" in message


@needs_demo
def test_missing_column_in_uppercase_demo_copy(tmp_path):
    copy = tmp_path / "upper"
    _make_upper_copy(copy)
    path = copy / "ICUSTAYS.csv"
    header, *rows = path.read_text().splitlines(keepends=True)
    path.write_text(header.replace('"INTIME",', "") + "".join(rows))
    with pytest.raises(MimicLayoutError, match=r"ICUSTAYS\.csv: missing column\(s\) intime"):
        resolve_mimic_dir(copy)


def test_every_problem_is_reported_at_once(tmp_path):
    _write_minimal(tmp_path)
    (tmp_path / "PATIENTS.csv").write_text("")
    (tmp_path / "D_ITEMS.csv").unlink()
    (tmp_path / "D_LABITEMS.csv").write_text("itemid\n")
    with pytest.raises(MimicLayoutError) as info:
        resolve_mimic_dir(tmp_path)
    message = str(info.value)
    assert "PATIENTS.csv: the file is empty" in message
    assert "missing table D_ITEMS" in message
    assert "D_LABITEMS.csv: missing column(s) label, fluid, category" in message


def test_corrupt_gzip_is_reported(tmp_path):
    _write_minimal(tmp_path)
    (tmp_path / "ICUSTAYS.csv").unlink()
    (tmp_path / "ICUSTAYS.csv.gz").write_bytes(b"not a gzip stream at all")
    with pytest.raises(MimicLayoutError, match=r"ICUSTAYS\.csv\.gz: cannot read the header line"):
        resolve_mimic_dir(tmp_path)


def test_names_differing_only_in_case_are_ambiguous(tmp_path):
    _write_minimal(tmp_path)
    (tmp_path / "patients.csv").write_text((tmp_path / "PATIENTS.csv").read_text())
    if len(list(tmp_path.glob("[Pp][Aa]*"))) < 2:
        pytest.skip("case-insensitive file system")
    with pytest.raises(MimicLayoutError, match="PATIENTS is ambiguous"):
        resolve_mimic_dir(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(MimicLayoutError, match="does not exist"):
        resolve_mimic_dir(tmp_path / "nowhere")


def test_subset_of_tables(tmp_path):
    _write_minimal(tmp_path, tables=["patients", "icustays"])
    files = resolve_mimic_dir(tmp_path, tables=["PATIENTS", "icustays"])
    assert set(files.files) == {"patients", "icustays"}
    with pytest.raises(MimicLayoutError, match="unknown MIMIC-III table"):
        resolve_mimic_dir(tmp_path, tables=["noteevents"])
