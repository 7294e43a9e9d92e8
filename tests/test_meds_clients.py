"""Real MEDS clients on the real and the synthetic MEDS exports: the `meds` package validates them,
`meds_reader` converts (and verifies) them, and ACES extracts the in-hospital mortality task of
docs/tasks/in_hospital_mortality.yaml from them and finds rows (tests/meds_clients.py runs the clients).

The exports are the ones the graph wrote: the real cohort's `meds_export` and the release's `meds/` of the
session's small workspace (tests/small_graph.py), and the real MIMIC-III demo's `meds_export`. Each test
prints its figures (rows ACES extracts, subjects meds_reader converts) for the docs.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import meds
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synehrgy_assets.core.meds_checks import check_meds_dir
from tests.meds_clients import aces_overlay, antlr_runtime_in, meds_reader_convert, run_aces


def validate_with_meds(root: Path) -> None:
    """The `meds` package's own validation of every data shard and metadata file."""
    for shard in sorted((root / "data").glob("*.parquet")):
        meds.DataSchema.validate(pq.read_table(shard))
    meds.CodeMetadataSchema.validate(pq.read_table(root / "metadata" / "codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(root / "metadata" / "subject_splits.parquet"))
    meds.DatasetMetadataSchema.validate(json.loads((root / "metadata" / "dataset.json").read_text()))


def run_clients(root: Path, work: Path, label: str) -> dict:
    """Every client on the MEDS dataset at `root`; returns the figures (counts only)."""
    import meds_reader

    validate_with_meds(root)
    check = check_meds_dir(root)
    assert check.passed, check.problems
    work.mkdir(parents=True, exist_ok=True)
    database = meds_reader_convert(root, work / "meds_reader")
    db = meds_reader.SubjectDatabase(str(database))
    converted = len(db)
    assert converted == check.subjects
    for subject_id in db:  # as the reader gives them: static events first, then timed ones in time order
        times = [e.time for e in db[subject_id].events]
        timed = times[sum(1 for t in times if t is None):]
        assert None not in timed and timed == sorted(timed), subject_id
    (work / "aces").mkdir()
    labels = pd.concat([pd.read_parquet(p) for p in run_aces(root, work / "aces")], ignore_index=True)
    deaths = pd.concat([pd.read_parquet(p, columns=["subject_id", "code"]) for p in
                        sorted((root / "data").glob("*.parquet"))]).query("code == 'MEDS_DEATH'")["subject_id"]
    # Positive labels only for subjects whose death the export holds.
    assert set(labels.loc[labels["boolean_value"], "subject_id"]) <= set(deaths)
    # Counts over whole cohorts only (no figure about a handful of real patients).
    figures = {"subjects": check.subjects, "events": check.events, "meds_reader_subjects": converted,
               "aces_rows": len(labels), "aces_subjects": int(labels["subject_id"].nunique())}
    print(f"\nMEDS clients on the {label} export: {figures}")
    assert figures["aces_rows"] > 0, f"ACES found no rows in the {label} export"
    return figures


def test_aces_runs_beside_our_environment_not_in_it():
    """Why ACES has a folder of its own: our environment keeps Dagster's antlr4 runtime, the overlay
    ACES's; and Dagster's parser works with ours."""
    import dagster as dg

    assert antlr_runtime_in(None).startswith("4.13.")
    assert antlr_runtime_in(aces_overlay()).startswith("4.9.")
    assert dg.AssetSelection.from_string("key:meds_export") is not None


@pytest.mark.integration
def test_meds_clients_on_the_real_and_the_synthetic_export(released_workspace, tmp_path):
    import mlflow

    ws = released_workspace
    real = ws.home / "private" / "meds"
    assert (real / "metadata" / "dataset.json").is_file(), "the end-to-end job materializes meds_export"
    real_figures = run_clients(real, tmp_path / "real", "real (built-in hospital)")

    from synehrgy_assets.resources import point_mlflow_at

    point_mlflow_at(ws.tracking_uri)
    version = ws.metadata("synthetic_release")["release_version"].value
    release = Path(mlflow.artifacts.download_artifacts(f"models:/{ws.mlflow.release_name}/{version}",
                                                       dst_path=str(tmp_path / "release"))) / "artifacts"
    synthetic_figures = run_clients(release / "meds", tmp_path / "synthetic", "synthetic (release)")
    assert synthetic_figures["meds_reader_subjects"] == pd.read_parquet(
        release / "tables" / "visits.parquet")["subject_id"].nunique()
    assert real_figures["meds_reader_subjects"] > synthetic_figures["meds_reader_subjects"] > 0


@pytest.mark.integration
@pytest.mark.demo
def test_meds_clients_on_the_real_mimic_demo(mimic_demo_dir, tmp_path):
    """The real MIMIC-III demo staged by the graph (raw, staging, patient_split, meds_export and its check)."""
    import dagster as dg

    from synehrgy_assets.definitions import build_definitions
    from tests.helpers.graph_runs import check_results, failure_text

    home = tmp_path / "demo"
    defs = build_definitions(home=str(home), mimic_dir=str(mimic_demo_dir))
    (home / "dagster_home").mkdir(parents=True)
    selection = (dg.AssetSelection.groups("raw", "staging") | dg.AssetSelection.assets("patient_split"))
    result = defs.resolve_job_def("synehrgy_end_to_end").execute_in_process(
        instance=dg.DagsterInstance.local_temp(str(home / "dagster_home")), raise_on_error=False,
        asset_selection=sorted(selection.resolve(defs.resolve_asset_graph()), key=str))
    assert result.success, failure_text(result)
    assert check_results(result)["meds_export_readable"] is True
    figures = run_clients(home / "private" / "meds", tmp_path / "clients", "real MIMIC-III demo")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        cohort = con.execute("select count(distinct subject_id) from main.visits").fetchone()[0]
    assert figures["meds_reader_subjects"] == figures["subjects"] == cohort > 90
