"""Exports of synthetic cohorts: the release's MIMIC-III CSV layout (re-staged by our own dbt project),
MEDS 0.4 through the real cohort's exporter, and the datacard in the registry descriptions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synehrgy_assets.core.datacard import release_datacard
from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.mimic_writer import cohort_to_mimic_tables
from synehrgy_assets.core.exports import FORMATS, MART_TABLES, export_cohort, read_parquet_cohort, write_meds
from synehrgy_assets.core.output_dirs import OWNER_MARKER, OutputRefused
from synehrgy_assets.core.meds import MedsExportError
from synehrgy_assets.core.meds_checks import check_meds_dir
from synehrgy_assets.core.mimic_csv_checks import check_mimic_csv
from synehrgy_assets.core.mimic_layout import resolve_mimic_dir
from synehrgy_assets.core.mimic_tables import HEADER_ONLY_TABLES, MIMIC_TABLES

REPO = Path(__file__).resolve().parents[1]
DBT_DIR = REPO / "dbt_mimic"
STAGED = {  # released MIMIC table -> the staging model that reads it
    "PATIENTS": "stg_mimic__patients", "ADMISSIONS": "stg_mimic__admissions", "ICUSTAYS": "stg_mimic__icustays",
    "DIAGNOSES_ICD": "stg_mimic__diagnoses_icd", "PROCEDURES_ICD": "stg_mimic__procedures_icd",
    "CHARTEVENTS": "stg_mimic__chartevents", "LABEVENTS": "stg_mimic__labevents",
}


@pytest.fixture(scope="module")
def release(released_workspace, tmp_path_factory) -> Path:
    """The release, downloaded from the registry like a consumer would."""
    import mlflow

    from synehrgy_assets.resources import point_mlflow_at

    point_mlflow_at(released_workspace.tracking_uri)
    dst = tmp_path_factory.mktemp("release")
    version = released_workspace.mats["synthetic_release"]["release_version"]
    path = Path(mlflow.artifacts.download_artifacts(
        f"models:/{released_workspace.mlflow.release_name}/{version}", dst_path=str(dst)))
    return path / "artifacts"


@pytest.mark.integration
def test_release_carries_parquet_mimic_csv_meds_and_datacard(release):
    tables = release / "tables"
    assert {p.stem for p in tables.glob("*.parquet")} >= {"PATIENTS", "CHARTEVENTS", *MART_TABLES}
    csvs = sorted(p.name for p in (release / "mimic_csv").iterdir() if p.name != OWNER_MARKER)
    assert csvs == sorted(f"{t}.csv.gz" for t in MIMIC_TABLES), csvs
    for name in csvs:  # every CSV holds the same rows as its Parquet twin; the others are header-only
        table = name.split(".")[0]
        twin = tables / f"{table}.parquet"
        want = pq.read_metadata(twin).num_rows if twin.exists() else 0
        assert (table in HEADER_ONLY_TABLES) == (not twin.exists()), table
        assert len(pd.read_csv(release / "mimic_csv" / name, dtype=str)) == want, name
    meds = release / "meds"
    dataset = json.loads((meds / "metadata" / "dataset.json").read_text())
    assert dataset["meds_version"].startswith("0.4.") and dataset["dataset_name"].startswith("synehrgy synthetic cohort")
    events = pd.concat([pd.read_parquet(p) for p in sorted((meds / "data").glob("*.parquet"))])
    patients = pd.read_parquet(tables / "visits.parquet")["subject_id"].nunique()
    assert events["subject_id"].nunique() == patients
    splits = pd.read_parquet(meds / "metadata" / "subject_splits.parquet")
    assert set(splits["split"]) == {"train"} and len(splits) == patients
    text = next(release.rglob("datacard.md")).read_text()
    assert "## Gate results" in text and "PASSED" in text and "mimic_csv/" in text


@pytest.mark.integration
def test_released_exports_are_timed_and_their_flags_hold(release, released_workspace):
    """What the graph wrote: every non-static MEDS event has a time and the events are in order (the
    decoded visits carry no times of their own: they come from the cohort's ICU stays), and the MIMIC-III
    CSV flags agree with the rows."""
    meds = check_meds_dir(release / "meds")
    assert meds.passed, meds.problems
    assert meds.untimed == 0 and meds.out_of_order_rows == 0 and meds.events > meds.subjects > 0
    mimic = check_mimic_csv(release / "mimic_csv")
    assert mimic.passed, mimic.problems
    assert mimic.rows["ADMISSIONS"] == pq.read_metadata(release / "tables" / "visits.parquet").num_rows
    assert mimic.rows["OUTPUTEVENTS"] == 0


# What mimic3-benchmarks' extraction reads (its scripts extract_subjects, validate_events and
# extract_episodes_from_subjects): plain TABLE.csv files read with the first column as the index, these
# UPPERCASE columns, and the events of three tables read row by row by these field names.
BENCHMARK_COLUMNS = {
    "PATIENTS": ["SUBJECT_ID", "GENDER", "DOB", "DOD"],
    "ADMISSIONS": ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ETHNICITY", "DIAGNOSIS"],
    "ICUSTAYS": ["SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "FIRST_CAREUNIT", "LAST_CAREUNIT", "FIRST_WARDID",
                 "LAST_WARDID", "DBSOURCE", "INTIME", "OUTTIME", "LOS"],
    "D_ICD_DIAGNOSES": ["ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
    "DIAGNOSES_ICD": ["SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
}
BENCHMARK_EVENT_FIELDS = ["SUBJECT_ID", "HADM_ID", "CHARTTIME", "ITEMID", "VALUE", "VALUEUOM"]


@pytest.mark.integration
def test_released_mimic_csv_opens_as_mimic3_benchmarks_opens_it(release, tmp_path):
    """The release as plain CSV (`mimic-csv-plain`) read the way mimic3-benchmarks reads it: its
    columns are there, its stay selection (no transfer, one ICU stay per admission, adult) keeps
    stays, every kept subject has event rows (its validate_events needs them), and its in-hospital
    mortality (DOD or DEATHTIME inside the admission) agrees with HOSPITAL_EXPIRE_FLAG."""
    import csv

    marts, mimic = read_parquet_cohort(release / "tables")
    export_cohort("mimic-csv-plain", tmp_path / "plain", marts, mimic)
    folder = tmp_path / "plain"
    read = {t: pd.read_csv(folder / f"{t}.csv", header=0, index_col=0) for t in BENCHMARK_COLUMNS}
    for table, columns in BENCHMARK_COLUMNS.items():
        assert set(columns) <= set(read[table].columns), table
    assert read["DIAGNOSES_ICD"]["SEQ_NUM"].notna().all()
    subjects_with_events = set()
    for table in ("CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS"):
        with open(folder / f"{table}.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            assert set(BENCHMARK_EVENT_FIELDS) <= set(reader.fieldnames), table
            subjects_with_events |= {int(row["SUBJECT_ID"]) for row in reader}
    stays = read["ICUSTAYS"]
    stays = stays[(stays["FIRST_WARDID"] == stays["LAST_WARDID"]) & (stays["FIRST_CAREUNIT"] == stays["LAST_CAREUNIT"])]
    stays = stays.merge(read["ADMISSIONS"], on=["SUBJECT_ID", "HADM_ID"]).merge(read["PATIENTS"], on="SUBJECT_ID")
    stays = stays[stays.groupby("HADM_ID")["ICUSTAY_ID"].transform("count") == 1]
    for column in ("INTIME", "OUTTIME", "DOB", "DOD", "ADMITTIME", "DISCHTIME", "DEATHTIME"):
        stays[column] = pd.to_datetime(stays[column])
    age = (stays["INTIME"] - stays["DOB"]).dt.total_seconds() / (365 * 86400)
    stays = stays[age.where(age >= 0, 90) >= 18]
    assert len(stays) > 0
    assert set(stays["SUBJECT_ID"]) <= subjects_with_events
    inside = (stays["ADMITTIME"] <= stays["DOD"]) & (stays["DOD"] <= stays["DISCHTIME"])
    died = inside | ((stays["ADMITTIME"] <= stays["DEATHTIME"]) & (stays["DEATHTIME"] <= stays["DISCHTIME"]))
    assert died.astype(int).tolist() == stays["HOSPITAL_EXPIRE_FLAG"].tolist()
    print(f"\nmimic3-benchmarks selection on the release: {stays['SUBJECT_ID'].nunique()} subjects, "
          f"{len(stays)} ICU stays of {len(read['ICUSTAYS'])}")


@pytest.mark.integration
def test_registry_descriptions_hold_the_datacards(released_workspace):
    ws = released_workspace
    client = ws.mlflow.client()
    rel_version = str(ws.mats["synthetic_release"]["release_version"])
    gen_version = str(ws.mats["gpt_checkpoint"]["model_version"])
    for description in (client.get_registered_model(ws.mlflow.release_name).description,
                        client.get_model_version(ws.mlflow.release_name, rel_version).description):
        assert f"v{rel_version}" in description
        assert ws.mats["synthetic_cohort"]["cohort_id"] in description
        assert f"`{ws.mlflow.model_name}` version {gen_version}" in description
        assert "staging build" in description
        assert "| `utility_gate` | PASSED |" in description
        assert "mlflow.artifacts.download_artifacts" in description and "orchestration.cli generate" in description
    gen_model = client.get_registered_model(ws.mlflow.model_name).description
    assert "How to generate" in gen_model and "orchestration.cli generate" in gen_model
    gen = client.get_model_version(ws.mlflow.model_name, gen_version).description
    assert f"v{gen_version}" in gen and "| `utility_gate` | PASSED |" in gen
    assert ws.mats["gpt_checkpoint"]["mlflow_run_id"] in gen


def _dbt(args: list[str], work: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYNEHRGY_DUCKDB_PATH=str(work / "warehouse.duckdb"), SYNEHRGY_DUCKDB_THREADS="1",
               SYNEHRGY_DUCKDB_MEMORY_LIMIT="2GB", SYNEHRGY_DUCKDB_TEMP_DIR=str(work / "spill"),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false", DBT_VERSION_CHECK="false", DBT_PARTIAL_PARSE="false")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), *args, "--project-dir", str(DBT_DIR), "--profiles-dir",
         str(DBT_DIR), "--target-path", str(work / "target"), "--log-path", str(work / "logs")],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_released_mimic_csv_restages_through_dbt_like_real_data(release, tmp_path):
    """The released CSV folder is a MIMIC folder: our layout resolver accepts it and our dbt project
    stages every row of it (synthetic data re-staged like real data)."""
    files = resolve_mimic_dir(release / "mimic_csv")
    assert files.header_case == "upper"
    seeded = _dbt(["seed"], tmp_path)
    assert seeded.returncode == 0, seeded.stdout[-3000:]
    built = _dbt(["run", "--vars", json.dumps(files.dbt_vars())], tmp_path)
    assert built.returncode == 0, built.stdout[-3000:]
    tables = release / "tables"
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        for table, model in STAGED.items():
            staged = con.execute(f"select count(*) from main.{model}").fetchone()[0]
            assert staged == pq.read_metadata(tables / f"{table}.parquet").num_rows, table
        restaged_visits = con.execute("select count(*) from main.visits").fetchone()[0]
    released_visits = pq.read_metadata(tables / "visits.parquet").num_rows
    # The marts apply the cohort criteria again: most decoded visits meet them.
    assert 0.5 * released_visits <= restaged_visits <= released_visits


# ------------------------------------------------------------------------ MEDS of a synthetic cohort


def _tiny_cohort():
    t0 = pd.Timestamp("2150-01-01 08:00")
    visits = pd.DataFrame({
        "subject_id": [1, 1, 2], "hadm_id": [10, 11, 20], "icustay_id": [100, 101, 200], "visit_index": [0, 1, 0],
        "intime": [t0, t0 + pd.Timedelta(days=30), t0], "outtime": [t0 + pd.Timedelta(hours=40),
                                                                  t0 + pd.Timedelta(days=31), t0 + pd.Timedelta(hours=20)],
        "los_hours": [40.0, 24.0, 20.0], "hours_since_previous_visit": [None, 680.0, None],
        "age_years": [70.0, 70.1, 90.0], "age_is_capped": [False, False, True], "gender": ["M", "M", "F"],
        "ethnicity_group": ["WHITE", "WHITE", "ASIAN"], "insurance": ["Medicare"] * 3,
        "admission_type": ["EMERGENCY"] * 3, "first_careunit": ["MICU", "SICU", "CCU"],
        "mortality_inhospital": [0, 0, 1],
    })
    codes = pd.DataFrame({"subject_id": [1, 1, 2], "icustay_id": [100, 100, 200],
                          "code_type": ["diagnosis", "procedure", "diagnosis"], "icd9_code": ["4019", "9604", "0389"],
                          "seq_num": [1, 1, 1]})
    phenotypes = pd.DataFrame({"subject_id": [2], "icustay_id": [200], "phenotype": ["Septicemia (except in labor)"]})
    measurements = pd.DataFrame({"subject_id": [1, 1, 2], "icustay_id": [100, 101, 200], "hours": [0.5, 1.0, 2.0],
                                 "variable": pd.Categorical(["heart_rate", "heart_rate", "gcs_eye_opening"]),
                                 "value": [80.0, 90.0, 4.0], "value_text": [None, None, "Spontaneously"]})
    return {"visits": visits, "visit_codes": codes, "visit_phenotypes": phenotypes, "measurements": measurements}


def test_meds_of_a_synthetic_cohort_uses_the_real_exporter(tmp_path):
    marts = _tiny_cohort()
    d_icd = pd.DataFrame({"row_id": [1], "icd9_code": ["4019"], "short_title": ["HTN"],
                          "long_title": ["Unspecified essential hypertension"]})
    result = write_meds(marts, tmp_path / "meds", mimic_tables={"D_ICD_DIAGNOSES": d_icd,
                                                                "D_ICD_PROCEDURES": d_icd.iloc[:0]})
    data = pd.read_parquet(tmp_path / "meds" / "data")
    assert result.details["subjects"] == 2 and len(data) == result.details["events"]
    assert (data["code"] == "MEASUREMENT//heart_rate").sum() == 2
    assert set(data["code"]) >= {"ICD9CM//4019", "ICD9PROC//9604", "MEDS_DEATH", "GENDER//F", "MEDS_BIRTH"}
    assert data.loc[data["code"] == "MEDS_BIRTH", "text_value"].fillna("-").tolist() == ["-", "AGE_CAPPED_AT_90"]
    codes = pd.read_parquet(tmp_path / "meds" / "metadata" / "codes.parquet").set_index("code")["description"]
    assert codes["ICD9CM//4019"].startswith("Unspecified essential hypertension")
    assert codes["ICD9CM//0389"].startswith("ICD-9-CM diagnosis 0389")  # not in the cohort's dictionary
    splits = pd.read_parquet(tmp_path / "meds" / "metadata" / "subject_splits.parquet")
    assert splits.to_dict("list") == {"subject_id": [1, 2], "split": ["train", "train"]}


def test_meds_of_a_synthetic_cohort_names_a_broken_table(tmp_path):
    marts = _tiny_cohort()
    bad = dict(marts, measurements=marts["measurements"].drop(columns=["value_text"]))
    with pytest.raises(MedsExportError, match=r"synthetic\.measurements lacks column\(s\) \['value_text'\]"):
        write_meds(bad, tmp_path / "meds")
    with pytest.raises(ValueError, match=r"missing marts-shaped table\(s\) \['visit_phenotypes'\]"):
        write_meds({k: v for k, v in marts.items() if k != "visit_phenotypes"}, tmp_path / "meds")
    orphan = dict(marts, measurements=pd.concat([marts["measurements"], marts["measurements"].assign(icustay_id=999)]))
    with pytest.raises(MedsExportError, match=r"rows of synthetic\.measurements have an icustay_id that is not in "
                                              r"synthetic\.visits"):
        write_meds(orphan, tmp_path / "meds")
    assert not (tmp_path / "meds").exists()  # nothing half-written
    with pytest.raises(ValueError, match="unknown export format 'csv'"):
        export_cohort("csv", tmp_path / "x", marts, {})


def _untimed(marts: dict) -> dict:
    """The cohort as the token decoder gives it: visits without intime/outtime."""
    visits = marts["visits"].assign(intime=pd.NaT, outtime=pd.NaT)
    return dict(marts, visits=visits)


def test_meds_takes_the_times_of_untimed_visits_from_icustays(tmp_path):
    from synehrgy_assets.core.cohort import StagedCohort
    from synehrgy_assets.core.mimic_writer import cohort_to_mimic_tables
    from synehrgy_assets.core.meds_checks import check_meds_dir

    marts = _untimed(_tiny_cohort())
    mimic = cohort_to_mimic_tables(StagedCohort(*(marts[t] for t in MART_TABLES)), seed=3)
    result = write_meds(marts, tmp_path / "meds", mimic_tables=mimic)
    check = check_meds_dir(tmp_path / "meds")
    assert check.passed and check.untimed == 0, check.problems
    data = pd.read_parquet(tmp_path / "meds" / "data")
    assert data["time"].isna().sum() == 2 and set(data.loc[data["time"].isna(), "code"]) == {"GENDER//M", "GENDER//F"}
    stays = mimic["ICUSTAYS"].sort_values("intime")
    icu_in = data.loc[data["code"].str.startswith("ICU_ADMISSION//"), "time"].sort_values().tolist()
    assert icu_in == pd.to_datetime(stays["intime"]).tolist()
    from synehrgy_assets.core.mimic_dictionaries import CANONICAL_ITEMS

    chart = mimic["CHARTEVENTS"]
    heart = chart.loc[chart["itemid"] == CANONICAL_ITEMS["heart_rate"].itemid, "charttime"]
    meas = data.loc[data["code"] == "MEASUREMENT//heart_rate", "time"].sort_values().tolist()
    assert meas == pd.to_datetime(heart).sort_values().tolist() and len(meas) == 2
    assert result.details["events"] == len(data)


def test_meds_refuses_untimed_visits_it_cannot_time(tmp_path):
    from synehrgy_assets.core.cohort import StagedCohort
    from synehrgy_assets.core.mimic_writer import cohort_to_mimic_tables

    marts = _untimed(_tiny_cohort())
    with pytest.raises(ValueError, match=r"3 of 3 rows of `visits` have no intime/outtime, and no ICUSTAYS"):
        write_meds(marts, tmp_path / "meds")
    mimic = cohort_to_mimic_tables(StagedCohort(*(marts[t] for t in MART_TABLES)), seed=3)
    other = dict(mimic, ICUSTAYS=mimic["ICUSTAYS"].iloc[:2])
    with pytest.raises(ValueError, match=r"does not pair with them \(3 visits of 2 patients\)"):
        write_meds(marts, tmp_path / "meds", mimic_tables=other)
    stretched = mimic["ICUSTAYS"].assign(outtime=pd.to_datetime(mimic["ICUSTAYS"]["outtime"]) + pd.Timedelta(hours=2))
    with pytest.raises(ValueError, match=r"3 stays differ from `visits.los_hours`"):
        write_meds(marts, tmp_path / "meds", mimic_tables=dict(mimic, ICUSTAYS=stretched))
    assert not (tmp_path / "meds").exists()


def _tiny_mimic(marts: dict) -> dict:
    from synehrgy_assets.core.cohort import StagedCohort
    from synehrgy_assets.core.mimic_writer import cohort_to_mimic_tables

    return cohort_to_mimic_tables(StagedCohort(*(marts[t] for t in MART_TABLES)), seed=3)


@pytest.mark.parametrize("fmt", ["mimic-csv", "mimic-csv-plain"])
def test_mimic_csv_is_the_full_release_layout(tmp_path, fmt):
    import gzip

    from synehrgy_assets.core.mimic_csv_checks import check_mimic_csv
    from synehrgy_assets.core.mimic_tables import HEADER_ONLY_TABLES, MIMIC_TABLES

    marts = _tiny_cohort()
    mimic = _tiny_mimic(marts)
    result = export_cohort(fmt, tmp_path / "csv", marts, mimic)
    suffix = ".csv.gz" if fmt == "mimic-csv" else ".csv"
    assert sorted(p.name for p in (tmp_path / "csv").iterdir() if p.name != OWNER_MARKER) == \
        sorted(t + suffix for t in MIMIC_TABLES)
    assert len(MIMIC_TABLES) == 26 and "OUTPUTEVENTS" in HEADER_ONLY_TABLES
    assert result.details["header_only"] == sorted(HEADER_ONLY_TABLES)
    opener = gzip.open if suffix == ".csv.gz" else open
    with opener(tmp_path / "csv" / f"OUTPUTEVENTS{suffix}", "rt") as fh:
        assert fh.read() == ('"ROW_ID","SUBJECT_ID","HADM_ID","ICUSTAY_ID","CHARTTIME","ITEMID","VALUE","VALUEUOM",'
                             '"STORETIME","CGID","STOPPED","NEWBOTTLE","ISERROR"\n')
    assert resolve_mimic_dir(tmp_path / "csv").header_case == "upper"
    check = check_mimic_csv(tmp_path / "csv")
    assert check.passed, check.problems
    assert check.rows["ADMISSIONS"] == 3 and check.rows["OUTPUTEVENTS"] == 0 and check.icu_stays_without_events == 0
    admissions = pd.read_csv(tmp_path / "csv" / f"ADMISSIONS{suffix}", index_col=0)  # as mimic3-benchmarks reads
    assert {"SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ETHNICITY", "DIAGNOSIS"} <= set(admissions)
    assert admissions["HOSPITAL_EXPIRE_FLAG"].tolist() == [0, 0, 1]
    patients = pd.read_csv(tmp_path / "csv" / f"PATIENTS{suffix}", index_col=0)
    assert patients["EXPIRE_FLAG"].tolist() == patients["DOD"].notna().astype(int).tolist() == [0, 1]


def test_mimic_csv_check_fails_on_flags_that_disagree_with_the_rows(tmp_path):
    from synehrgy_assets.core.mimic_csv_checks import check_mimic_csv

    marts = _tiny_cohort()
    mimic = _tiny_mimic(marts)
    chart = mimic["CHARTEVENTS"]
    first_hadm = mimic["ADMISSIONS"]["hadm_id"].iloc[0]
    no_chart = chart[chart["hadm_id"] != first_hadm].reset_index(drop=True)
    assert len(no_chart) < len(chart)
    # The decoder's flag follows the rows: the admission without chart events is flagged 0 ...
    mimic_ok = _tiny_mimic(dict(marts, measurements=marts["measurements"][marts["measurements"]["icustay_id"] != 100]))
    assert mimic_ok["ADMISSIONS"]["has_chartevents_data"].tolist() == [0, 1, 1]
    # ... and a folder whose flags disagree with the rows fails the check, naming the table and the flag.
    patients = mimic["PATIENTS"].assign(expire_flag=0)
    admissions = mimic["ADMISSIONS"].assign(deathtime=pd.NaT)
    write = dict(mimic, CHARTEVENTS=no_chart, PATIENTS=patients, ADMISSIONS=admissions)
    export_cohort("mimic-csv", tmp_path / "bad", marts, write)
    check = check_mimic_csv(tmp_path / "bad")
    assert not check.passed
    text = " | ".join(check.problems)
    assert "ADMISSIONS: 1 admissions have HAS_CHARTEVENTS_DATA that disagrees" in text
    assert "PATIENTS: 1 patients have EXPIRE_FLAG that disagrees with DOD" in text
    assert "ADMISSIONS: 1 admissions have a DEATHTIME that disagrees with HOSPITAL_EXPIRE_FLAG" in text
    (tmp_path / "bad" / "OUTPUTEVENTS.csv.gz").unlink()
    assert check_mimic_csv(tmp_path / "bad").problems == [
        f"OUTPUTEVENTS: no OUTPUTEVENTS.csv.gz or OUTPUTEVENTS.csv in {tmp_path / 'bad'}"]


def test_parquet_export_round_trips(tmp_path):
    marts = _tiny_cohort()
    mimic = {"PATIENTS": pd.DataFrame({"row_id": [1], "subject_id": [1]})}
    result = export_cohort("parquet", tmp_path / "pq", marts, mimic)
    assert result.rows["visits.parquet"] == 3 and result.rows["PATIENTS.parquet"] == 1
    back_marts, back_mimic = read_parquet_cohort(tmp_path / "pq")
    assert list(back_mimic) == ["PATIENTS"] and len(back_marts["measurements"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pq"]  # no temporary folder left beside it
    assert (tmp_path / "pq" / OWNER_MARKER).is_file()


# ------------------------------------------------------------------------ never write into real data


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _mimic_tables(marts):
    return cohort_to_mimic_tables(StagedCohort(*(marts[t] for t in MART_TABLES)), seed=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_writer_refuses_a_real_mimic_folder_and_leaves_it_byte_identical(fmt, mimic_demo_dir, tmp_path):
    marts = _tiny_cohort()
    real = shutil.copytree(mimic_demo_dir, tmp_path / "data" / "mimic-iii")
    before = _digest(real)
    for target in (real, real.parent):  # the MIMIC folder, and a folder holding one
        for overwrite in (False, True):
            with pytest.raises(OutputRefused, match=r"holds MIMIC-III tables that synehrgy did not write \("
                                                    r".*refusing to write into real data, even with --overwrite"):
                export_cohort(fmt, target, marts, _mimic_tables(marts), overwrite=overwrite)
    assert _digest(real) == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mimic-iii"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_replaces_our_own_output_whole_and_nothing_else(fmt, tmp_path):
    marts = _tiny_cohort()
    mimic = _mimic_tables(marts)
    out = tmp_path / "out"
    export_cohort(fmt, out, marts, mimic)
    first = _digest(out)
    with pytest.raises(OutputRefused, match=r"holds an earlier output of synehrgy: pass --overwrite"):
        export_cohort(fmt, out, marts, mimic)
    (out / "stale.txt").write_text("left by an earlier run")
    one = dict(zip(MART_TABLES, StagedCohort(*(marts[t] for t in MART_TABLES)).subset([1]).frames()))
    export_cohort(fmt, out, one, _mimic_tables(one), overwrite=True)
    assert not (out / "stale.txt").exists() and (out / OWNER_MARKER).is_file()  # replaced whole
    assert _digest(out).keys() - {OWNER_MARKER} == first.keys() - {OWNER_MARKER}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(OutputRefused, match=r"is not empty and synehrgy did not write it .*--overwrite"):
        export_cohort(fmt, foreign, marts, mimic)
    assert (foreign / "todo.txt").read_text() == "mine"
    export_cohort(fmt, foreign, marts, mimic, overwrite=True)  # named explicitly: replaced
    assert not (foreign / "todo.txt").exists()
    with pytest.raises(OutputRefused, match=r"exists and is a file, not a folder"):
        export_cohort(fmt, foreign / OWNER_MARKER, marts, mimic, overwrite=True)


def test_a_failed_write_leaves_the_previous_output_intact(tmp_path):
    marts = _tiny_cohort()
    out = tmp_path / "out"
    export_cohort("parquet", out, marts, {})
    before = _digest(out)
    broken = dict(marts, measurements=marts["measurements"].assign(value=[1.0, "x", None]))
    with pytest.raises(Exception, match="value"):
        export_cohort("parquet", out, broken, {}, overwrite=True)
    with pytest.raises(Exception, match="measurements"):
        write_meds(dict(marts, measurements=marts["measurements"].drop(columns=["value_text"])), out,
                   overwrite=True)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_datacard_reports_failed_gates_with_reasons_and_how_to_pull():
    card = release_datacard(
        release_name="synehrgy-synthetic-cohort", release_version="4", tracking_uri="sqlite:///x/mlflow.db",
        passed=False,
        gates={"utility_gate": {"passed": False, "reason": "TSTR/TRTR 0.61 < 0.80"},
               "gx_visits": {"passed": True, "reason": "12 of 12 expectations"}},
        cohort={"cohort_id": "abc123", "patients": 40, "visits": 55, "seed": 0, "temperature": 1.0},
        generator={"name": "synehrgy-gpt", "version": "3", "mlflow_run_id": "r1", "vocabulary_version": "v9"},
        data_versions={"staging build (Dagster run of the `visits` mart)": "run-7"},
        contents={"tables/PATIENTS.parquet": 40})
    assert "**Validation: FAILED** (1 of 2 gates passed" in card
    assert "| `utility_gate` | FAILED | TSTR/TRTR 0.61 < 0.80 |" in card
    assert "`synehrgy-gpt` version 3 (MLflow run `r1`)" in card and "`run-7`" in card
    assert 'download_artifacts("models:/synehrgy-synthetic-cohort/4")' in card
    assert "--model models:/synehrgy-gpt/3" in card
