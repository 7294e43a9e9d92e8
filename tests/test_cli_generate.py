"""`python -m orchestration.cli generate`: patients from a registered generator, without the graph, in
each format; the same seed gives the same tables; the pyfunc gives the same tables as the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestration.cli import main
from synehrgy_assets.consumer import resolve_model_uri
from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.conditions import parse_where, satisfying_patients
from synehrgy_assets.core.exports import FORMATS, MART_TABLES
from synehrgy_assets.core.mimic_layout import resolve_mimic_dir

REPO = Path(__file__).resolve().parents[1]
N = 20
CAP = "256"  # tokens per patient: a 30-step generator rarely closes a patient by itself


def _generate(ws, out: Path, fmt: str, model: str = "models:/synehrgy-gpt@candidate", seed: int = 3,
              extra: tuple[str, ...] = (), n: int = N) -> int:
    tracking_uri = ws if isinstance(ws, str) else ws.tracking_uri
    return main(["generate", "--model", model, "--tracking-uri", tracking_uri, "-n", str(n), "--seed", str(seed),
                 "--device", "cpu", "--format", fmt, "--out", str(out), "--max-tokens-per-patient", CAP,
                 "--no-progress", *extra])


def _same_units(frame: pd.DataFrame) -> pd.DataFrame:
    """One representation for what a Parquet round trip changes: timestamps in one unit (Parquet stores
    MIMIC's second-resolution times as milliseconds), text as `str` with one kind of null."""
    frame = frame.reset_index(drop=True).copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            frame[column] = values.astype("datetime64[us]")
        elif not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            frame[column] = values.astype("str").where(values.notna(), None)
    return frame


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def parquet_run(released_workspace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "parquet"
    assert _generate(released_workspace, out, "parquet") == 0
    return out


@pytest.mark.integration
def test_parquet_has_every_table_and_the_same_seed_gives_the_same_tables(released_workspace, parquet_run, tmp_path,
                                                                        capsys):
    tables = _tables(parquet_run)
    assert {"PATIENTS", "ADMISSIONS", "ICUSTAYS", "CHARTEVENTS", "LABEVENTS", *MART_TABLES} <= set(tables)
    assert tables["visits"]["subject_id"].nunique() <= N and len(tables["PATIENTS"]) > 0
    # by version number instead of alias: the same generator, the same seed, the same tables
    version = released_workspace.mats["gpt_checkpoint"]["model_version"]
    assert _generate(released_workspace, tmp_path / "again", "parquet", model=f"models:/synehrgy-gpt/{version}") == 0
    again = _tables(tmp_path / "again")
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(frame, again[name], obj=name)
    out = capsys.readouterr().out
    assert "PATIENTS.parquet" in out and "rows" in out  # it says what it wrote
    assert _generate(released_workspace, tmp_path / "other", "parquet", seed=4) == 0
    assert not _tables(tmp_path / "other")["measurements"].equals(tables["measurements"])


@pytest.mark.integration
def test_mimic_csv_and_meds_parse(released_workspace, parquet_run, tmp_path):
    tables = _tables(parquet_run)
    assert _generate(released_workspace, tmp_path / "csv", "mimic-csv") == 0
    files = resolve_mimic_dir(tmp_path / "csv")  # a MIMIC folder our own staging accepts
    for table in ("PATIENTS", "ICUSTAYS", "CHARTEVENTS", "DIAGNOSES_ICD"):
        frame = pd.read_csv(files.files[table.lower()], dtype=str)
        assert len(frame) == len(tables[table]), table
    assert _generate(released_workspace, tmp_path / "meds", "meds") == 0
    events = pd.read_parquet(tmp_path / "meds" / "data")
    assert events["subject_id"].nunique() == tables["visits"]["subject_id"].nunique()
    assert (events["code"].str.startswith("MEASUREMENT//")).sum() == len(tables["measurements"])


@pytest.mark.integration
def test_pyfunc_gives_the_same_tables_as_the_cli(released_workspace, parquet_run):
    import mlflow

    from synehrgy_assets.resources import point_mlflow_at

    point_mlflow_at(released_workspace.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/synehrgy-gpt@candidate")
    tables = model.unwrap_python_model().configure(device="cpu", max_tokens_per_patient=int(CAP)).generate_tables(
        N, seed=3)
    cli = _tables(parquet_run)
    assert set(tables) == set(cli)
    for name, frame in cli.items():
        pd.testing.assert_frame_equal(_same_units(tables[name]), _same_units(frame), check_dtype=False,
                                      check_categorical=False, obj=name)
    visits = model.predict(pd.DataFrame({"n_patients": [N], "seed": [3]}))
    pd.testing.assert_frame_equal(_same_units(visits), _same_units(cli["visits"]), check_dtype=False,
                                  check_categorical=False)


@pytest.mark.integration
def test_bad_model_or_registry_is_a_clear_error(released_workspace, tmp_path, capsys):
    assert _generate(released_workspace, tmp_path / "x", "parquet", model="models:/synehrgy-gpt@nosuchalias") == 2
    err = capsys.readouterr().err
    assert "models:/synehrgy-gpt@nosuchalias" in err and released_workspace.tracking_uri in err
    version = released_workspace.mats["gpt_checkpoint"]["model_version"]
    # the versions that exist (with their validation status) and the aliases that point at them
    assert f"synehrgy-gpt has version(s) {version} (" in err and f"@candidate -> {version}" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert _generate(released_workspace, tmp_path / "x", "parquet", model="models:/nosuchmodel@champion") == 2
    assert "no registered model 'nosuchmodel'; registered models: synehrgy-gpt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected models:/<name>@<alias>"):
        resolve_model_uri("models:/synehrgy-gpt")
    assert resolve_model_uri("@candidate") == "models:/synehrgy-gpt@candidate"
    assert resolve_model_uri("3") == "models:/synehrgy-gpt/3"


@pytest.mark.integration
def test_the_command_line_shows_progress_and_what_it_wrote(released_workspace, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "generate", "--model", "@candidate", "--tracking-uri",
         released_workspace.tracking_uri, "-n", "8", "--max-tokens-per-patient", CAP, "--format", "parquet",
         "--out", str(tmp_path / "cli")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "8/8" in run.stderr  # the tqdm bar
    assert "visits.parquet" in run.stdout and "from models:/synehrgy-gpt@candidate on cpu" in run.stdout


# ------------------------------------------------------------------ conditional generation (--where)


@pytest.mark.integration
def test_where_gives_n_patients_that_all_satisfy_it(released_workspace, tmp_path, capsys):
    out = tmp_path / "women"
    assert _generate(released_workspace, out, "parquet", n=6, extra=("--where", "gender=F", "--batch-size", "8")) == 0
    stdout = capsys.readouterr().out
    assert "where gender=F:" in stdout and "sampled patients accepted" in stdout
    tables = _tables(out)
    cohort = StagedCohort(*(tables[t] for t in MART_TABLES))
    assert cohort.n_patients == 6 == len(tables["PATIENTS"])
    assert len(satisfying_patients(parse_where("gender=F"), cohort)) == 6
    assert set(tables["PATIENTS"]["gender"]) == {"F"}

    import mlflow

    from synehrgy_assets.resources import point_mlflow_at

    point_mlflow_at(released_workspace.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/synehrgy-gpt@candidate")
    model.unwrap_python_model().configure(device="cpu", max_tokens_per_patient=int(CAP))
    visits = model.predict(pd.DataFrame({"n_patients": [3], "seed": [1], "where": ["gender=M"]}))
    assert visits["subject_id"].nunique() == 3 and set(visits["gender"]) == {"M"}


@pytest.mark.integration
def test_an_infeasible_condition_is_refused_naming_it(released_workspace, tmp_path, capsys):
    args = ("--where", "age<0", "--max-attempts", "24", "--batch-size", "8")
    assert _generate(released_workspace, tmp_path / "none", "parquet", n=2, extra=args) == 2
    err = capsys.readouterr().err
    assert "--where age<0: 0 of 24 sampled patients satisfy it (acceptance 0.00%)" in err and "budget of 24" in err
    assert not (tmp_path / "none").exists()
    assert _generate(released_workspace, tmp_path / "none", "parquet", n=2, extra=("--where", "first_careunit=XICU")) == 2
    assert "the generator knows no first_careunit XICU; known:" in capsys.readouterr().err


# ------------------------------------------------------------------ arguments checked before any model loads


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_arguments_are_refused_in_one_line_before_the_model_loads(tmp_path, capsys, mimic_demo_dir):
    # The tracking URI names no store: every refusal below comes before the registry is even opened.
    store = tmp_path / "no-such-home" / "mlflow.db"
    uri = f"sqlite:///{store}"
    real = shutil.copytree(mimic_demo_dir, tmp_path / "mimic")
    before = _digest(real)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    cases = [
        (["-n", "0"], tmp_path / "out", "-n/--n-patients must be >= 1, got 0"),
        (["--where", "agee>=65"], tmp_path / "out", "unknown field 'agee'; valid fields: age, gender"),
        (["--top-p", "2"], tmp_path / "out", "top_p must be in (0, 1]"),
        (["--max-attempts", "3"], tmp_path / "out", "--max-attempts (3) must be at least the patients asked for"),
        ([], tmp_path / "a-file", "exists and is a file, not a folder"),
        ([], tmp_path / "notes", "is not empty and synehrgy did not write it"),
        *[(["--format", fmt, "--overwrite"], real, "holds MIMIC-III tables that synehrgy did not write")
          for fmt in FORMATS],
    ]
    for extra, out, message in cases:
        assert _generate(uri, out, "parquet", extra=tuple(extra)) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert _digest(real) == before and (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    assert not (tmp_path / "out").exists()
    # A valid call gets as far as the registry, which must exist: no empty store is created.
    assert _generate(uri, tmp_path / "out", "parquet") == 2
    assert f"no MLflow store at {store}" in capsys.readouterr().err
    assert not store.exists() and not store.parent.exists()
    with pytest.raises(SystemExit):
        main(["generate", "--out", str(tmp_path / "out"), "--format", "csv"])  # argparse: one usage line


@pytest.mark.integration
def test_overwrite_replaces_an_earlier_generation(released_workspace, parquet_run, tmp_path, capsys):
    out = tmp_path / "again"
    shutil.copytree(parquet_run, out)
    assert _generate(released_workspace, out, "meds") == 2
    assert "holds an earlier output of synehrgy: pass --overwrite" in capsys.readouterr().err
    assert _generate(released_workspace, out, "meds", extra=("--overwrite",)) == 0
    assert (out / "metadata" / "dataset.json").is_file() and not list(out.glob("*.parquet"))


def test_an_unknown_job_lists_the_jobs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # materialize puts the venv's bin first: restored after
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    before = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "SYNEHRGY_HOME", "MIMIC_DIR", "SYNEHRGY_SYNTHETIC_PATIENTS")}
    assert main(["materialize", "--job", "nosuch", "--home", str(tmp_path / "home"), "--synthetic-hospital",
                 "--patients", "7"]) == 2
    err = capsys.readouterr().err
    assert "no job 'nosuch'; jobs: " in err and "synehrgy_end_to_end" in err and "Traceback" not in err
    # the options went to the resources as arguments, not through the environment
    assert {k: os.environ.get(k) for k in before} == before
