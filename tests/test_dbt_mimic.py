"""dbt_mimic: real `dbt build` on the MIMIC-III demo, as given and as an UPPERCASE-quoted copy.

The two builds and a `dbt parse` without vars run concurrently in one module-scoped fixture; the
marts are then checked against the architecture contract and against direct SQL on the raw files.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from synehrgy_assets.core.mimic_layout import REQUIRED_COLUMNS, resolve_mimic_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = REPO_ROOT / "dbt_mimic"
STAGING_DOC = REPO_ROOT / "docs" / "staging.md"
DEMO_DIR = Path(
    os.environ.get("SYNEHRGY_MIMIC_DEMO_DIR", str(REPO_ROOT.parent / "shared" / "data" / "mimic-iii-demo"))
)
HCUP_YAML = DEMO_DIR.parent / "mimic3-benchmarks-resources" / "hcup_ccs_2015_definitions.yaml"
LAYOUTS = ("demo", "upper")
TOLERANCE_HOURS = 1  # var stay_window_tolerance_hours in dbt_project.yml (checked below)

needs_demo = pytest.mark.skipif(
    not DEMO_DIR.is_dir(),
    reason=f"MIMIC-III demo folder not found at {DEMO_DIR} (set SYNEHRGY_MIMIC_DEMO_DIR)",
)
pytestmark = pytest.mark.demo

# docs/architecture.md, "dbt marts contract" (+ cohort and staging_audit from the staging brief).
CONTRACT = {
    "visits": {
        "subject_id": "BIGINT",
        "hadm_id": "BIGINT",
        "icustay_id": "BIGINT",
        "visit_index": "INTEGER",
        "intime": "TIMESTAMP",
        "outtime": "TIMESTAMP",
        "admittime": "TIMESTAMP",
        "dischtime": "TIMESTAMP",
        "los_hours": "DOUBLE",
        "hours_since_previous_visit": "DOUBLE",
        "age_years": "DOUBLE",
        "age_is_capped": "BOOLEAN",
        "gender": "VARCHAR",
        "ethnicity_group": "VARCHAR",
        "insurance": "VARCHAR",
        "admission_type": "VARCHAR",
        "first_careunit": "VARCHAR",
        "icu_database": "VARCHAR",
        "mortality_inhospital": "INTEGER",
    },
    "visit_codes": {
        "subject_id": "BIGINT",
        "icustay_id": "BIGINT",
        "code_type": "VARCHAR",
        "icd9_code": "VARCHAR",
        "seq_num": "INTEGER",
    },
    "visit_phenotypes": {"subject_id": "BIGINT", "icustay_id": "BIGINT", "phenotype": "VARCHAR"},
    "measurements": {
        "subject_id": "BIGINT",
        "icustay_id": "BIGINT",
        "hours": "DOUBLE",
        "variable": "VARCHAR",
        "value": "DOUBLE",
        "value_text": "VARCHAR",
    },
    "cohort": {"subject_id": "BIGINT", "gender": "VARCHAR", "n_visits": "INTEGER", "first_intime": "TIMESTAMP"},
    "staging_audit": {"section": "VARCHAR", "item": "VARCHAR", "metric": "VARCHAR", "n": "BIGINT"},
}

CSV_OPTIONS = """header = true, all_varchar = true, delim = ',', quote = '"', escape = '"'"""


@functools.cache
def _hcup_definitions() -> dict:
    return yaml.load(HCUP_YAML.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("no dbt executable next to the interpreter or on PATH")
    return found


def _dbt_env(duckdb_path: Path, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        SYNEHRGY_DUCKDB_PATH=str(duckdb_path),
        SYNEHRGY_DUCKDB_THREADS="1",
        SYNEHRGY_DUCKDB_MEMORY_LIMIT="2GB",
        SYNEHRGY_DUCKDB_TEMP_DIR=str(work / "spill"),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        DBT_VERSION_CHECK="false",
        DBT_PARTIAL_PARSE="false",
    )
    return env


def _start_dbt(args: list[str], work: Path) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    command = [
        _dbt_executable(),
        *args,
        "--project-dir", str(DBT_DIR),
        "--profiles-dir", str(DBT_DIR),
        "--target-path", str(work / "target"),
        "--log-path", str(work / "logs"),
    ]  # fmt: skip
    # Output to a file, not a pipe: concurrent processes must never block on a full pipe.
    with open(work / "dbt.out", "w") as out:
        return subprocess.Popen(
            command, cwd=work, env=_dbt_env(work / "warehouse.duckdb", work), stdout=out, stderr=subprocess.STDOUT
        )


def _write_uppercase_copy(target: Path) -> None:
    """The needed demo tables re-written like the full release: UPPERCASE quoted header, every
    value quoted, `.csv.gz`. CHARTEVENTS keeps the seed's ITEMIDs plus every 20th other row: the
    marts are the same (staging filters on ITEMID first) and the copy takes a second, not six."""
    target.mkdir(parents=True)
    seed_items = DBT_DIR / "seeds" / "variable_itemids.csv"
    with duckdb.connect() as con:
        con.execute("set enable_progress_bar = false")
        for table in REQUIRED_COLUMNS:
            source = DEMO_DIR / f"{table.upper()}.csv.gz"
            names = [row[0] for row in con.sql(f"describe select * from read_csv('{source}', {CSV_OPTIONS})").fetchall()]
            renamed = ", ".join(f'"{n}" as "{n.upper()}"' for n in names)
            where = (
                f"where itemid in (select itemid::varchar from read_csv('{seed_items}')) or row_id::bigint % 20 = 0"
                if table == "chartevents"
                else ""
            )
            con.execute(
                f"copy (select {renamed} from read_csv('{source}', {CSV_OPTIONS}) {where}) "
                f"to '{target / (table.upper() + '.csv.gz')}' (header, force_quote *)"
            )


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """layout -> DuckDB file of a green `dbt build`; also checks `dbt parse` without vars."""
    if not DEMO_DIR.is_dir():
        pytest.skip(f"MIMIC-III demo folder not found at {DEMO_DIR} (set SYNEHRGY_MIMIC_DEMO_DIR)")
    root = tmp_path_factory.mktemp("dbt_mimic")
    processes = {"parse": _start_dbt(["parse"], root / "parse")}
    sources = {"demo": DEMO_DIR}
    for layout in LAYOUTS:
        if layout == "upper":
            sources[layout] = root / "upper_raw"
            _write_uppercase_copy(sources[layout])
        files = resolve_mimic_dir(sources[layout])
        assert files.header_case == ("lower" if layout == "demo" else "upper")
        processes[layout] = _start_dbt(["build", "--vars", json.dumps(files.dbt_vars())], root / layout)
    _raw_connection()  # load the raw tables for the direct-SQL checks while dbt runs
    for name, proc in processes.items():
        proc.wait(timeout=300)
        output = (root / name / "dbt.out").read_text()
        assert proc.returncode == 0, f"dbt {name} failed:\n{output[-6000:]}"
    for layout in LAYOUTS:
        results = json.loads((root / layout / "target" / "run_results.json").read_text())["results"]
        not_green = [(r["unique_id"], r["status"]) for r in results if r["status"] not in ("success", "pass")]
        assert not not_green, f"{layout}: {not_green}"
        assert len(results) > 100
    return {layout: root / layout / "warehouse.duckdb" for layout in LAYOUTS}


def _query(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(sql).fetchall()


@functools.cache
def _raw_connection() -> duckdb.DuckDBPyConnection:
    """In-memory copy of the raw demo tables (all VARCHAR), loaded once for every direct query."""
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    for table in REQUIRED_COLUMNS:
        con.execute(
            f"create table {table} as select * from read_csv('{DEMO_DIR / (table.upper() + '.csv.gz')}', {CSV_OPTIONS})"
        )
    con.execute(
        """
        create view adult_stays as
        select i.icustay_id::bigint as icustay_id, i.hadm_id::bigint as hadm_id,
               i.subject_id::bigint as subject_id, i.intime::timestamp as intime,
               i.outtime::timestamp as outtime, p.dob::timestamp as dob
        from icustays as i join patients as p using (subject_id)
        where i.intime::timestamp >= p.dob::timestamp + interval 18 year
        """
    )
    return con


def _raw(sql: str) -> list[tuple]:
    """Direct SQL on the raw demo files (tables named after the lowercase tables, + adult_stays)."""
    return _raw_connection().cursor().sql(sql).fetchall()


def _scalar_raw(sql: str):
    return _raw(sql)[0][0]


# ---------------------------------------------------------------- independent of the builds


def test_required_columns_match_dbt_project():
    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())
    assert project["vars"]["mimic_columns"] == REQUIRED_COLUMNS
    assert project["vars"]["stay_window_tolerance_hours"] == TOLERANCE_HOURS
    assert project["vars"]["mimic_files"] == {}


@pytest.mark.skipif(not HCUP_YAML.is_file(), reason=f"HCUP CCS reference yaml not found at {HCUP_YAML}")
def test_phenotype_seed_matches_hcup_ccs_benchmark_groups():
    definitions = _hcup_definitions()
    benchmark = {name: group for name, group in definitions.items() if group["use_in_benchmark"] is True}
    assert len(benchmark) == 25
    with duckdb.connect() as con:
        seed = con.sql(
            f"select icd9_code, phenotype, phenotype_type from read_csv('{DBT_DIR / 'seeds' / 'phenotype_icd9_codes.csv'}', all_varchar = true)"
        ).fetchall()
    seed_pairs = {(code, phenotype) for code, phenotype, _ in seed}
    for phenotype, group in benchmark.items():
        for code in group["codes"]:
            assert (str(code), phenotype) in seed_pairs, f"{code} not mapped to {phenotype}"
    expected_pairs = {(str(c), p) for p, g in benchmark.items() for c in g["codes"]}
    assert seed_pairs == expected_pairs
    assert {(p, t) for _, p, t in seed} == {(p, g["type"]) for p, g in benchmark.items()}


def test_seed_itemids_follow_the_reference_with_documented_changes():
    with duckdb.connect() as con:
        rows = con.sql(
            f"select itemid::int, source_table, variable, conversion from read_csv('{DBT_DIR / 'seeds' / 'variable_itemids.csv'}', all_varchar = true)"
        ).fetchall()
        variables = {r[0] for r in con.sql(f"select variable from read_csv('{DBT_DIR / 'seeds' / 'variables.csv'}')").fetchall()}
    by_item = {r[0]: r for r in rows}
    assert {r[2] for r in rows} == variables and len(variables) == 53
    assert by_item[51274][2] == "prothrombin_time" and by_item[51237][2] == "inr"
    assert by_item[223761][3] == by_item[678][3] == "fahrenheit_to_celsius"
    assert by_item[223762][3] == by_item[676][3] == "none"
    assert by_item[223835][3] == "percent_to_fraction" and by_item[220277][3] == "fraction_to_percent"
    # Weight in kg and height in cm: only kg weight items; CareVue's heights in inches are converted.
    assert by_item[920][3] == by_item[1394][3] == "inch_to_centimetre" and by_item[226730][3] == "none"
    assert not {226531, 3581, 3582, 226707} & set(by_item)  # lb / oz weights, the inch twin of 226730
    # Left out on purpose (docs/staging.md): urine / other-fluid labs and the computed twins of 676/678.
    assert not {51478, 51094, 51491, 50831, 677, 679} & set(by_item)


# ---------------------------------------------------------------- the builds


@needs_demo
@pytest.mark.parametrize("layout", LAYOUTS)
def test_marts_match_the_contract(builds, layout):
    for table, columns in CONTRACT.items():
        rows = _query(
            builds[layout],
            f"select column_name, data_type from information_schema.columns "
            f"where table_schema = 'main' and table_name = '{table}' order by ordinal_position",
        )
        assert dict(rows) == columns, table
        kind = _query(builds[layout], f"select table_type from information_schema.tables where table_name = '{table}'")
        assert kind == [("BASE TABLE",)], f"{table} must be a table"


@needs_demo
@pytest.mark.parametrize("layout", LAYOUTS)
def test_visits_match_direct_sql(builds, layout):
    db = builds[layout]
    n_adult = _scalar_raw("select count(*) from adult_stays")
    assert _query(db, "select count(*) from visits")[0][0] == n_adult
    n_raw = _scalar_raw("select count(*) from icustays")
    assert n_adult < n_raw  # the demo has one stay under 18
    min_age, max_age = _query(db, "select min(age_years), max(age_years) from visits")[0]
    assert 18 <= min_age and max_age <= 90
    n_capped = _scalar_raw("select count(*) from adult_stays where intime >= dob + interval 90 year")
    assert n_capped > 0
    assert _query(db, "select count(*) from visits where age_is_capped and age_years = 90")[0][0] == n_capped
    assert _query(db, "select count(*) from cohort")[0][0] == _scalar_raw(
        "select count(distinct subject_id) from adult_stays"
    )
    deaths = _scalar_raw(
        """select count(*) from adult_stays s join admissions a on a.hadm_id::bigint = s.hadm_id
           where a.hospital_expire_flag = '1'
              or a.deathtime::timestamp between a.admittime::timestamp and a.dischtime::timestamp"""
    )
    assert _query(db, "select sum(mortality_inhospital) from visits")[0][0] == deaths
    # visit_index follows intime; the first visit has no previous one, later ones count from the previous outtime.
    expected = _raw(
        """select icustay_id, row_number() over w - 1,
                  date_diff('second', lag(outtime) over w, intime) / 3600.0
           from adult_stays window w as (partition by subject_id order by intime) order by icustay_id"""
    )
    got = _query(db, "select icustay_id, visit_index, hours_since_previous_visit from visits order by icustay_id")
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in expected]
    assert all((g is None and e is None) or abs(g - e) < 1e-9 for (_, _, g), (_, _, e) in zip(got, expected))
    assert max(b for _, b, _ in got) >= 1  # the demo has patients with several stays


@needs_demo
@pytest.mark.parametrize("layout", LAYOUTS)
def test_codes_match_direct_sql(builds, layout):
    db = builds[layout]
    for code_type, table in (("diagnosis", "diagnoses_icd"), ("procedure", "procedures_icd")):
        expected = _scalar_raw(
            f"select count(*) from {table} as c join adult_stays as s on s.hadm_id = c.hadm_id::bigint "
            f"where nullif(trim(c.icd9_code), '') is not null"
        )
        got = _query(db, f"select count(*) from visit_codes where code_type = '{code_type}'")[0][0]
        assert got == expected > 0, code_type
    raw_zero_codes = {
        r[0]
        for r in _raw(
            "select distinct c.icd9_code from procedures_icd as c join adult_stays as s on s.hadm_id = c.hadm_id::bigint "
            "where c.icd9_code like '0%'"
        )
    }
    assert raw_zero_codes, "the demo has procedure codes with a leading zero"
    kept = {r[0] for r in _query(db, "select distinct icd9_code from visit_codes where code_type = 'procedure' and icd9_code like '0%'")}
    assert kept == raw_zero_codes


@needs_demo
@pytest.mark.parametrize("layout", LAYOUTS)
def test_phenotypes_match_the_reference_yaml(builds, layout):
    definitions = _hcup_definitions()
    pairs = [(str(c), p) for p, g in definitions.items() if g["use_in_benchmark"] is True for c in g["codes"]]
    con = _raw_connection().cursor()
    con.execute("create or replace temp table ccs(code varchar, phenotype varchar)")
    con.executemany("insert into ccs values (?, ?)", pairs)
    expected = set(
        con.sql(
            """select distinct s.icustay_id, ccs.phenotype
               from adult_stays s join diagnoses_icd d on d.hadm_id::bigint = s.hadm_id
               join ccs on ccs.code = d.icd9_code"""
        ).fetchall()
    )
    got = set(_query(builds[layout], "select icustay_id, phenotype from visit_phenotypes"))
    assert got == expected and len(got) > 100


@needs_demo
@pytest.mark.parametrize("layout", LAYOUTS)
def test_heart_rate_count_matches_direct_sql(builds, layout):
    expected = _scalar_raw(
        f"""select count(*) from chartevents as c join adult_stays as s on s.icustay_id = c.icustay_id::bigint
            where c.itemid in ('211', '220045') and coalesce(c.error, '0') <> '1'
              and c.charttime::timestamp between s.intime - interval {TOLERANCE_HOURS} hour
                                             and s.outtime + interval {TOLERANCE_HOURS} hour
              and coalesce(try_cast(c.valuenum as double), try_cast(c.value as double)) between 0 and 350"""
    )
    got = _query(builds[layout], "select count(*) from measurements where variable = 'heart_rate'")[0][0]
    assert got == expected > 10_000


@needs_demo
@pytest.mark.parametrize("layout", LAYOUTS)
def test_measurement_semantics(builds, layout):
    db = builds[layout]
    stats = dict(
        (v, (n, med))
        for v, n, med in _query(db, "select variable, count(*), median(value) from measurements group by variable")
    )
    # PT (seconds, ~13) and INR (ratio, ~1) are two variables with their own scales.
    assert stats["prothrombin_time"][0] > 100 and stats["inr"][0] > 100
    assert stats["prothrombin_time"][1] > 8 > 3 > stats["inr"][1]
    # Harmonised units: Celsius, FiO2 fraction, SpO2 percent.
    assert 35 < stats["temperature"][1] < 39
    assert 0.21 <= stats["fraction_inspired_oxygen"][1] <= 1
    assert 90 < stats["oxygen_saturation"][1] <= 100
    assert _query(db, "select max(value) from measurements where variable = 'temperature'")[0][0] <= 45
    # GCS / capillary refill: numeric score plus category text; continuous variables have no text.
    categorical = set(
        _query(db, "select variable, value, value_text from measurements where value_text is not null group by all")
    )
    assert ("gcs_eye_opening", 4.0, "Spontaneously") in categorical
    assert ("gcs_verbal_response", 1.0, "No Response-ETT") in categorical
    assert ("capillary_refill_rate", 0.0, "Normal <3 secs") in categorical
    assert {v for v, _, _ in categorical} == {
        "capillary_refill_rate", "gcs_eye_opening", "gcs_motor_response", "gcs_total", "gcs_verbal_response"
    }  # fmt: skip
    hours = _query(
        db,
        "select min(m.hours), max(m.hours - v.los_hours) from measurements m join visits v using (icustay_id)",
    )[0]
    assert hours[0] >= -TOLERANCE_HOURS and hours[1] <= TOLERANCE_HOURS
    audit = _query(
        db,
        "select sum(n) filter (where metric = 'kept'), sum(n) filter (where metric = 'dropped_out_of_range') "
        "from staging_audit where section = 'measurements'",
    )[0]
    assert audit[0] == _query(db, "select count(*) from measurements")[0][0]
    assert audit[1] > 0


@needs_demo
def test_both_layouts_give_identical_marts(builds):
    for table, columns in CONTRACT.items():
        order = ", ".join(columns)
        fingerprints = [
            _query(builds[layout], f"select count(*), sum(hash({order})) from {table}")[0] for layout in LAYOUTS
        ]
        assert fingerprints[0] == fingerprints[1], table


# ---------------------------------------------------------------- docs/staging.md counts tables

MEASUREMENT_METRICS = (
    "kept",
    "dropped_out_of_range",
    "dropped_unparseable",
    "dropped_error_flag",
    "dropped_outside_stay_window",
    "dropped_stay_not_kept",
)


def _doc_block(name: str) -> list[list[str]]:
    """Cells of the markdown table rows between <!-- name:start --> and <!-- name:end -->."""
    text = STAGING_DOC.read_text(encoding="utf-8")
    block = text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0].startswith("`"):
            rows.append([cells[0].strip("`"), *cells[1:]])
    return rows


def _number(cell: str) -> int:
    return int(cell.replace(",", ""))


@needs_demo
def test_doc_headline_counts_match_direct_sql(builds):
    doc = {row[0]: _number(row[1]) for row in _doc_block("demo-counts")}
    direct = {
        "patients.raw": "select count(*) from patients",
        "patients.with_visit": "select count(distinct subject_id) from adult_stays",
        "admissions.raw": "select count(*) from admissions",
        "icustays.raw": "select count(*) from icustays",
        "icustays.kept": "select count(*) from adult_stays",
        "icustays.dropped_age_under_18": (
            "select count(*) from icustays i join patients p using (subject_id) "
            "where i.intime::timestamp < p.dob::timestamp + interval 18 year"
        ),
        "icustays.age_capped": "select count(*) from adult_stays where intime >= dob + interval 90 year",
        "codes.diagnosis_raw": "select count(*) from diagnoses_icd",
        "codes.procedure_raw": "select count(*) from procedures_icd",
        "codes.diagnosis_attached": (
            "select count(*) from diagnoses_icd c join adult_stays s on s.hadm_id = c.hadm_id::bigint"
        ),
        "codes.procedure_attached": (
            "select count(*) from procedures_icd c join adult_stays s on s.hadm_id = c.hadm_id::bigint"
        ),
    }
    assert set(direct) <= set(doc)
    for key, sql in direct.items():
        assert doc[key] == _scalar_raw(sql), key
    audit = dict(
        ((s, i, m), n) for s, i, m, n in _query(builds["demo"], "select section, item, metric, n from staging_audit")
    )
    assert doc["codes.phenotype_labels"] == audit[("codes", "phenotype", "visit_labels")]
    assert doc["icustays.kept_without_measurements"] == audit[("icustays", "", "kept_without_measurements")]
    assert doc["measurements.kept"] == _query(builds["demo"], "select count(*) from measurements")[0][0]


@needs_demo
def test_doc_measurement_table_matches_the_audit(builds):
    rows = _doc_block("demo-measurements")
    audit = dict(
        ((i, m), n)
        for i, m, n in _query(builds["demo"], "select item, metric, n from staging_audit where section = 'measurements'")
    )
    assert len(rows) == 53
    for variable, *cells in rows:
        assert [_number(c) for c in cells] == [audit[(variable, m)] for m in MEASUREMENT_METRICS], variable


@pytest.mark.parametrize("layout", LAYOUTS)
def test_measurements_mart_is_stored_in_reader_order(builds, layout):
    """The mart is written in (subject, stay, hours, variable) order, so readers scan it without
    a sort; a plain scan (no ORDER BY) must come back in exactly that order."""
    from synehrgy_assets.core.cohort import MART_ORDER, _is_sorted

    with duckdb.connect(str(builds[layout]), read_only=True) as con:
        frame = con.sql("select subject_id, icustay_id, hours, variable from measurements").df()
    frame["variable"] = frame["variable"].astype("category")
    frame["variable"] = frame["variable"].cat.reorder_categories(sorted(frame["variable"].cat.categories))
    assert len(frame) > 100_000
    assert _is_sorted(frame, MART_ORDER["measurements"])


def test_spill_directory_is_set_once_per_database():
    """dbt-duckdb re-applies `settings` on every cursor, and DuckDB refuses to set
    temp_directory again once something spilled to it (the sorted `measurements` mart spills at
    scale: a 100 M-row staging failed in the next model). It belongs in `config_options`."""
    import yaml

    profile = yaml.safe_load((DBT_DIR / "profiles.yml").read_text())["dbt_mimic"]["outputs"]["dev"]
    assert "temp_directory" not in profile.get("settings", {})
    assert "temp_directory" in profile["config_options"]


@needs_demo
@pytest.mark.parametrize("layout", LAYOUTS)
def test_demo_passes_every_loss_check(builds, layout):
    """The real demo loses nothing to bad data (only the age_under_18 rule drops a stay), and the
    audit has the rows the loss checks read, with zeros where nothing happened."""
    from synehrgy_assets.core.staging_checks import LOSS_CHECKS, LOSS_DEFAULTS, evaluate_loss

    audit = {(s, i, m): n for s, i, m, n in _query(builds[layout], "select section, item, metric, n from staging_audit")}
    for name in LOSS_CHECKS:
        result = evaluate_loss(name, audit, LOSS_DEFAULTS[name])
        assert result.severity == "PASS", result.message()
    assert audit[("icustays", "", "dropped_age_under_18")] == 1
    assert audit[("icustays", "", "patients_raw")] == 100
    for reason in ("dob_unparseable", "dob_after_admission", "dob_implausible", "outtime_before_intime"):
        assert audit[("icustays", "", f"dropped_{reason}")] == 0
        assert audit[("icustays", "", f"patients_dropped_{reason}")] == 0
    assert audit[("measurements", "", "valuenum_not_numeric")] == 0
    assert audit[("codes", "diagnosis", "orphan_admission")] == 0
