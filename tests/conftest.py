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


@pytest.fixture(scope="session")
def released_workspace(tmp_path_factory):
    """One small whole-graph materialization (synthetic hospital, 150 patients, a 30-step generator,
    40 synthetic patients of at most 300 tokens, gates every cohort passes), shared by the export and
    `generate` CLI tests: a registered `synehrgy-gpt` (alias candidate) and a release with every export."""
    import copy
    from types import SimpleNamespace

    import dagster as dg

    from orchestration.definitions import build_definitions
    from tests.test_end_to_end import SMALL_RUN_CONFIG, failure_text, lax_gates, materialized

    home = tmp_path_factory.mktemp("released")
    run_config = copy.deepcopy(SMALL_RUN_CONFIG)
    run_config["ops"]["synthetic_sequences"]["config"]["max_tokens_per_patient"] = 300
    defs = build_definitions(home=str(home), mimic_dir="", synthetic_patients=150, release_gate=lax_gates())
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(home / "dagster_home"))
    result = defs.resolve_job_def("synehrgy_end_to_end").execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False)
    assert result.success, failure_text(result)
    ml = defs.resources["mlflow_tracking"]
    return SimpleNamespace(home=home, defs=defs, instance=instance, mats=materialized(result), mlflow=ml,
                           tracking_uri=ml.resolved_tracking_uri)


@pytest.fixture(autouse=True)
def _keep_mlflow_environment():
    """mlflow.set_tracking_uri (called by tests, and by MLflow itself) exports MLFLOW_TRACKING_URI:
    without this, every workspace built later in the session (build_resources reads that variable)
    would read and write an earlier test's MLflow store."""
    import os

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
