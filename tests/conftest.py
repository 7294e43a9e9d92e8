"""Shared fixtures: the MIMIC-III demo folder, an UPPERCASE-header copy of it, PATH for dbt."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.xdist_units import work_unit_scheduler, xdist_work_unit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEMO = REPO.parent / "shared" / "data" / "mimic-iii-demo"

# dbt-duckdb (through dagster-dbt) looks `dbt` up on PATH: use this interpreter's.
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core (scripts/test.sh): a second compute thread per worker (torch, OpenMP, BLAS,
    # and every subprocess a test starts) would only oversubscribe the cores.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
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
def released_workspace():
    """The session's small whole-graph materialization (tests/small_graph.py: synthetic hospital, 150
    patients, a 30-step generator, lax gates): a registered `synehrgy-gpt` and a promoted release
    with every export, for the export, `generate` CLI and browser tests."""
    from tests.small_graph import small_graph

    return small_graph()


@pytest.fixture(scope="session", autouse=True)
def _session_mlflow_environment():
    """The MLflow URI variables as the session found them (set up before any module fixture)."""
    from synehrgy_assets.resources import mlflow_environment

    return mlflow_environment()


@pytest.fixture(autouse=True)
def _keep_mlflow_environment(_session_mlflow_environment):
    """mlflow.set_tracking_uri (called by MLflow itself, and by a test that forgets
    `point_mlflow_at`) exports MLFLOW_TRACKING_URI: without this, every workspace built later in the
    session (build_resources reads that variable) would read and write an earlier test's MLflow
    store. Restored to the session's start, not to the test's: a module-scoped fixture runs before
    this fixture, so what it exports would otherwise outlive its module."""
    from synehrgy_assets.resources import restore_mlflow_environment

    yield
    restore_mlflow_environment(_session_mlflow_environment)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """The shared-workspace modules on one worker, every other module a unit of its own
    (tests/helpers/xdist_units.py says why this is not `--dist loadgroup`)."""
    return work_unit_scheduler(config, log)


def pytest_collection_modifyitems(config, items):
    misplaced = sorted({item.nodeid.split("::")[0] for item in items if "released_workspace" in item.fixturenames
                        and xdist_work_unit(item.nodeid) != "shared_workspace"})
    if misplaced:
        raise pytest.UsageError(f"{', '.join(misplaced)} use(s) the shared workspace: add the module to "
                                "SHARED_WORKSPACE_MODULES in tests/helpers/xdist_units.py (else each worker builds it)")
