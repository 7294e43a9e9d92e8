"""`python -m orchestration.cli generate`: patients from a registered generator, without the graph, in
each format; the same seed gives the same tables; the pyfunc gives the same tables as the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestration.cli import main
from synehrgy_assets.consumer import resolve_model_uri
from synehrgy_assets.core.exports import MART_TABLES
from synehrgy_assets.core.mimic_layout import resolve_mimic_dir

REPO = Path(__file__).resolve().parents[1]
N = 20
CAP = "256"  # tokens per patient: a 30-step generator rarely closes a patient by itself


def _generate(ws, out: Path, fmt: str, model: str = "models:/synehrgy-gpt@candidate", seed: int = 3) -> int:
    return main(["generate", "--model", model, "--tracking-uri", ws.tracking_uri, "-n", str(N), "--seed", str(seed),
                 "--device", "cpu", "--format", fmt, "--out", str(out), "--max-tokens-per-patient", CAP,
                 "--no-progress"])


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

    mlflow.set_tracking_uri(released_workspace.tracking_uri)
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
    assert not (tmp_path / "x").exists()
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
