"""Shared fixtures: the MIMIC-III demo folder, an UPPERCASE-header copy of it, PATH for dbt."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEMO = REPO.parent / "shared" / "data" / "mimic-iii-demo"

# dbt-duckdb (through dagster-dbt) looks `dbt` up on PATH: use this interpreter's.
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def demo_dir() -> Path:
    return Path(os.environ.get("SYNEHRGY_MIMIC_DEMO_DIR", DEFAULT_DEMO))


@pytest.fixture(scope="session")
def mimic_demo_dir() -> Path:
    d = demo_dir()
    if not (d / "PATIENTS.csv.gz").exists():
        pytest.skip(f"MIMIC-III demo not found at {d} (set SYNEHRGY_MIMIC_DEMO_DIR); skipping real-data test")
    return d


NEEDED_TABLES = (
    "PATIENTS", "ADMISSIONS", "ICUSTAYS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "D_ICD_DIAGNOSES",
    "D_ICD_PROCEDURES", "CHARTEVENTS", "LABEVENTS", "D_ITEMS", "D_LABITEMS",
)


# The demo quotes only fields that need it; DuckDB's sniffer must not guess "no quoting".
CSV_OPTIONS = "all_varchar=true, header=true, quote='\"', escape='\"'"


def write_uppercase_copy(src: Path, dst: Path) -> Path:
    """The demo re-written in the full-release layout: UPPERCASE quoted headers, quoted strings, .csv.gz."""
    import duckdb

    dst.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for table in NEEDED_TABLES:
        rel = con.sql(f"select * from read_csv('{src / (table + '.csv.gz')}', {CSV_OPTIONS})")
        cols = ", ".join(f'"{c}" as "{c.upper()}"' for c in rel.columns)
        out = dst / f"{table}.csv.gz"
        con.execute(
            f"copy (select {cols} from read_csv('{src / (table + '.csv.gz')}', {CSV_OPTIONS})) "
            f"to '{out}' (header, force_quote *, compression gzip)"
        )
    con.close()
    with gzip.open(dst / "PATIENTS.csv.gz", "rt") as fh:
        assert fh.readline().startswith('"ROW_ID","SUBJECT_ID"')
    return dst


@pytest.fixture(scope="session")
def mimic_demo_upper_dir(mimic_demo_dir, tmp_path_factory) -> Path:
    return write_uppercase_copy(mimic_demo_dir, tmp_path_factory.mktemp("mimic_upper"))
