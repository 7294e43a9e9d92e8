"""Full materializations of the asset graph: real dbt, DuckDB, torch, MLflow registry, GX checks.

Small configs keep each run to about a minute on 2 CPU cores; the defaults are exercised by the
README's command 1 (see docs/benchmarks.md for its wall time).
"""

from __future__ import annotations

import copy
from pathlib import Path

import dagster as dg
import pytest

SMALL_RUN_CONFIG = {
    "ops": {
        # The default context: at 256 the demo's multi-visit histories no longer fit (history share
        # 0.91 < 0.95), and the check `train_tokens_with_full_history` rightly fails.
        "token_sequences": {"config": {"n_ctx": 512}},
        "gpt_checkpoint": {
            "config": {"n_layer": 1, "n_head": 2, "n_embd": 32, "max_steps": 30, "batch_size": 8, "eval_every": 15}
        },
        "synthetic_sequences": {"config": {"n_patients": 40, "batch_size": 20}},
    }
}


def lax_gates():
    """A ReleaseGateResource every measured cohort passes (each min far below, each max far above)."""
    from synehrgy_assets.defs.gates import ReleaseGateResource

    def lax(name: str) -> float:
        return -1e9 if name.startswith("min_") else 1e9

    return ReleaseGateResource(**{name: lax(name) for name in ReleaseGateResource.model_fields})


def materialize_graph(home: Path, mimic_dir: str = "", synthetic_hospital: bool = False, synthetic_patients: int = 150,
                      release_gate=None, run_config: dict | None = None):
    """The whole graph on `mimic_dir`, or on the simulated hospital when `synthetic_hospital` (asked for
    explicitly, as the resource wants)."""
    from synehrgy_assets.definitions import build_definitions

    defs = build_definitions(home=str(home), mimic_dir=mimic_dir, synthetic_hospital=synthetic_hospital,
                             synthetic_patients=synthetic_patients, release_gate=release_gate)
    job = defs.resolve_job_def("synehrgy_end_to_end")
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(home / "dagster_home"))
    result = job.execute_in_process(instance=instance, run_config=run_config or SMALL_RUN_CONFIG, raise_on_error=False)
    return defs, instance, result


def failure_text(result) -> str:
    return "\n".join(
        e.step_failure_data.error.to_string()
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    )


def materialized(result) -> dict[str, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


def check_results(result) -> dict[str, bool]:
    return {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def assert_whole_graph(result, home: Path, defs) -> dict:
    assert result.success, failure_text(result)
    mats = materialized(result)
    for key in ("mimic_raw/patients", "mimic_raw/chartevents", "visits", "measurements", "patient_split", "token_vocabulary",
                "token_sequences", "gpt_checkpoint", "synthetic_sequences", "synthetic_cohort",
                "evaluation", "synthetic_release"):
        assert key in mats, f"{key} was not materialized"
    checks = check_results(result)
    context_checks = ("train_tokens_with_visit_header", "train_tokens_with_full_history", "training_windows_parse")
    assert {"gx_visits", "gx_visit_codes", "gx_measurements", *context_checks} <= set(checks)
    for name in context_checks:
        assert checks[name] is True, f"{name} failed"
    for gx in ("gx_visits", "gx_visit_codes", "gx_measurements"):
        assert checks[gx] is True, f"{gx} failed on the synthetic cohort"

    # The MLflow registry holds the generator with alias `candidate`, and the release is recorded.
    import mlflow

    ml = defs.resources["mlflow_tracking"]
    client = ml.client()
    gen = client.get_model_version_by_alias(ml.model_name, "candidate")
    assert str(gen.version) == str(mats["gpt_checkpoint"]["model_version"])
    release_version = str(mats["synthetic_release"]["release_version"])
    rel = client.get_model_version(ml.release_name, release_version)
    promoted = mats["synthetic_release"]["promoted_to_champion"]
    assert rel.tags["validation_status"] == ("passed" if promoted else "failed")
    from synehrgy_assets.defs.release import GATING_CHECKS

    assert set(GATING_CHECKS) <= set(checks), "every gating check ran"
    assert promoted == all(checks[n] for n in GATING_CHECKS)
    assert mats["synthetic_release"]["cohort_id"] == mats["synthetic_cohort"]["cohort_id"]
    if promoted:
        assert str(client.get_model_version_by_alias(ml.release_name, "champion").version) == release_version
        tables = Path(mlflow.artifacts.download_artifacts(f"models:/{ml.release_name}@champion"))
        assert any(tables.rglob("PATIENTS.parquet"))
    # The run's MLflow metrics are there; no real patient identifiers travel to MLflow.
    run = client.get_run(str(mats["gpt_checkpoint"]["mlflow_run_id"]))
    assert "best_val_loss" in run.data.metrics
    return mats


def assert_no_real_rows_in_mlflow(home: Path, real_subject_ids) -> None:
    """Released tables carry synthetic ids only (privacy rule: no real patient row leaves DuckDB)."""
    import pandas as pd

    for f in (home / "mlartifacts").rglob("*.parquet"):
        frame = pd.read_parquet(f)
        if "subject_id" in frame.columns:
            assert not set(frame["subject_id"].astype("int64")) & set(real_subject_ids), f


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
