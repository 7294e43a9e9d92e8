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
from synehrgy_assets.core.decoder import cohort_to_mimic_tables
from synehrgy_assets.core.exports import FORMATS, MART_TABLES, export_cohort, read_parquet_cohort, write_meds
from synehrgy_assets.core.output_dirs import OWNER_MARKER, OutputRefused
from synehrgy_assets.core.meds import MedsExportError
from synehrgy_assets.core.mimic_layout import resolve_mimic_dir

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

    mlflow.set_tracking_uri(released_workspace.tracking_uri)
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
    assert "PATIENTS.csv.gz" in csvs and "D_ICD_DIAGNOSES.csv.gz" in csvs, csvs
    for name in csvs:  # every CSV holds the same rows as its Parquet twin
        table = name.split(".")[0]
        assert len(pd.read_csv(release / "mimic_csv" / name, dtype=str)) == pq.read_metadata(
            tables / f"{table}.parquet").num_rows, name
    meds = release / "meds"
    dataset = json.loads((meds / "metadata" / "dataset.json").read_text())
    assert dataset["meds_version"] == "0.4.0" and dataset["dataset_name"].startswith("synehrgy synthetic cohort")
    events = pd.concat([pd.read_parquet(p) for p in sorted((meds / "data").glob("*.parquet"))])
    patients = pd.read_parquet(tables / "visits.parquet")["subject_id"].nunique()
    assert events["subject_id"].nunique() == patients
    splits = pd.read_parquet(meds / "metadata" / "subject_splits.parquet")
    assert set(splits["split"]) == {"train"} and len(splits) == patients
    text = next(release.rglob("datacard.md")).read_text()
    assert "## Gate results" in text and "PASSED" in text and "mimic_csv/" in text


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
    assert files.header_case == "lower"
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
