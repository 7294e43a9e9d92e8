"""Materializing the whole asset graph in tests: the small run config (about a minute on 2 CPU
cores), gates every cohort passes, and readers of a run's results (materializations, check
verdicts, failure text), with the assertions every whole-graph test makes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

SMALL_RUN_CONFIG = {
    "ops": {
        # The default context: at 256 the demo's multi-visit histories no longer fit (history share
        # 0.91 < 0.95), and the check `train_tokens_with_full_history` rightly fails.
        "token_sequences": {"config": {"n_ctx": 512}},
        "gpt_checkpoint": {
            # A 16-patient stay-end probe: the calibration runs, in seconds, on a model this small.
            "config": {"n_layer": 1, "n_head": 2, "n_embd": 32, "max_steps": 30, "batch_size": 8, "eval_every": 15,
                       "stay_end_probe_patients": 16}
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
    """The whole graph on `mimic_dir`, or on the synthetic hospital when `synthetic_hospital` (asked for
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
