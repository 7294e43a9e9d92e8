"""Full materializations of the asset graph: real dbt, DuckDB, torch, MLflow registry, GX checks.

Small configs keep each run to about a minute on 2 CPU cores; the defaults are exercised by the
README's command 1 (see docs/benchmarks.md for its wall time).
"""

from __future__ import annotations

import copy
from pathlib import Path

import dagster as dg
import pytest

from tests.helpers.graph_runs import (
    SMALL_RUN_CONFIG, assert_no_real_rows_in_mlflow, assert_whole_graph, check_results, failure_text, lax_gates,
    materialize_graph, materialized,
)


@pytest.mark.integration
def test_whole_graph_on_the_synthetic_hospital(released_workspace, tmp_path):
    from synehrgy_assets.definitions import build_definitions
    from synehrgy_assets.defs.release import GATING_CHECKS

    from tests.small_graph import SHARED_RUN_CONFIG, copy_workspace

    # The session's shared run (tests/small_graph.py: this module's SMALL_RUN_CONFIG, gates every
    # cohort passes): the release is promoted, so there is a champion to protect. What follows
    # changes the workspace, so it runs on a copy.
    graph = released_workspace
    mats = assert_whole_graph(graph.result, graph.home, graph.defs)
    home, defs, instance = copy_workspace(graph, tmp_path / "ws")
    assert mats["mimic_raw/patients"]["data_source"] == "synthetic hospital"
    assert mats["mimic_raw/patients"]["simulated_patients"] == 150
    assert mats["patient_split"]["patients/train"] > mats["patient_split"]["patients/test"] > 0
    assert mats["visits"]["dagster/row_count"] > 150
    assert mats["synthetic_release"]["promoted_to_champion"] is True
    ml = defs.resources["mlflow_tracking"]
    client = ml.client()
    champion = str(client.get_model_version_by_alias(ml.release_name, "champion").version)

    # The default gates judge the same 30-step generator: it fails them, the release is recorded
    # as failed and `champion` stays where it was.
    honest = build_definitions(home=str(home), synthetic_hospital=True, synthetic_patients=150)
    job = honest.resolve_implicit_global_asset_job_def()
    rerun = job.execute_in_process(instance=instance, raise_on_error=False,
                                   asset_selection=[dg.AssetKey("evaluation"), dg.AssetKey("synthetic_release")])
    assert rerun.success, failure_text(rerun)
    checks = check_results(rerun)
    failed = sorted(n for n in GATING_CHECKS if n in checks and not checks[n])
    assert {"utility_gate", "structure_gate"} & set(failed), checks
    again = materialized(rerun)["synthetic_release"]
    assert again["promoted_to_champion"] is False and again["validation_status"] == "failed"
    assert client.get_model_version(ml.release_name, str(again["release_version"])).tags["validation_status"] == "failed"
    assert str(client.get_model_version_by_alias(ml.release_name, "champion").version) == champion

    # A cohort regenerated with another seed after the evaluation (its gates not re-run) is refused,
    # even with gates it would pass: no verdict judged it.
    regen = job.execute_in_process(
        instance=instance, raise_on_error=False,
        asset_selection=[dg.AssetKey("synthetic_sequences"), dg.AssetKey("synthetic_cohort")],
        run_config={"ops": {"synthetic_sequences": {"config": {**SHARED_RUN_CONFIG["ops"]["synthetic_sequences"]["config"],
                                                               "seed": 7}}}},
    )
    assert regen.success, failure_text(regen)
    assert materialized(regen)["synthetic_cohort"]["cohort_id"] != mats["synthetic_cohort"]["cohort_id"]
    lax = build_definitions(home=str(home), synthetic_hospital=True, synthetic_patients=150, release_gate=lax_gates())
    refused = lax.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("synthetic_release")])
    assert not refused.success
    text = failure_text(refused)
    assert "refuses cohort" in text and "STALE" in text and "utility_gate" in text, text
    assert str(client.get_model_version_by_alias(ml.release_name, "champion").version) == champion


# The demo's patients average 1,587 tokens: an under-trained generator left to the default cap (the
# 99.9th percentile of train lengths, about 17,000) spends most of the test writing them. 2,048 is
# still four context windows, so generation rolls the window on real data.
DEMO_RUN_CONFIG = copy.deepcopy(SMALL_RUN_CONFIG)
DEMO_RUN_CONFIG["ops"]["synthetic_sequences"]["config"]["max_tokens_per_patient"] = 2048

MARTS = ("cohort", "visits", "visit_codes", "visit_phenotypes", "measurements", "staging_audit")


@pytest.mark.integration
@pytest.mark.demo
def test_whole_graph_on_the_real_mimic_demo(tmp_path, mimic_demo_dir, mimic_demo_upper_dir):
    """The whole graph on the demo; then the full-release layout (UPPERCASE quoted headers, the demo
    re-written) staged by the same graph into another workspace gives the same marts. Past the marts
    the layout no longer exists (tests/test_dbt_mimic.py compares both builds column by column)."""
    import duckdb

    home = tmp_path / "demo"
    defs, _instance, result = materialize_graph(home, mimic_dir=str(mimic_demo_dir), run_config=DEMO_RUN_CONFIG)
    mats = assert_whole_graph(result, home, defs)
    assert mats["mimic_raw/patients"]["data_source"] == f"MIMIC-III folder {Path(mimic_demo_dir).resolve().name}"
    assert "simulated_patients" not in mats["mimic_raw/patients"]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        real_ids = {r[0] for r in con.execute("select subject_id from main.cohort").fetchall()}
        counts = {m: con.execute(f"select count(*) from main.{m}").fetchall()[0][0] for m in MARTS}
    assert len(real_ids) > 50
    assert_no_real_rows_in_mlflow(home, real_ids)
    # ... and no real values: DOBs, admission times, rare per-patient extremes, event triples.
    from tests.leak_scan import find_leaks

    assert find_leaks(home, home / "warehouse.duckdb") == []

    from synehrgy_assets.definitions import build_definitions

    upper = tmp_path / "upper"
    upper_defs = build_definitions(home=str(upper), mimic_dir=str(mimic_demo_upper_dir))
    (upper / "dagster_home").mkdir(parents=True)
    staged = upper_defs.resolve_job_def("synehrgy_end_to_end").execute_in_process(
        instance=dg.DagsterInstance.local_temp(str(upper / "dagster_home")), raise_on_error=False,
        asset_selection=sorted((dg.AssetSelection.groups("raw", "staging") - dg.AssetSelection.assets("meds_export"))
                               .resolve(upper_defs.resolve_asset_graph()),
                               key=str))
    assert staged.success, failure_text(staged)
    assert materialized(staged)["mimic_raw/patients"]["header_case"] == "upper"
    with duckdb.connect(str(upper / "warehouse.duckdb"), read_only=True) as con:
        assert {m: con.execute(f"select count(*) from main.{m}").fetchall()[0][0] for m in MARTS} == counts
