"""The Definitions load, and the graph has every stage wired in order."""

from __future__ import annotations

import dagster as dg
import pytest
from pydantic import Field


def test_definitions_load_and_graph_is_complete(tmp_path):
    from synehrgy_assets.definitions import build_definitions

    defs = build_definitions(home=str(tmp_path))
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    expected = {
        "mimic_raw/patients", "mimic_raw/chartevents", "visits", "visit_codes", "visit_phenotypes", "measurements", "cohort",
        "patient_split", "token_vocabulary", "token_sequences", "gpt_checkpoint", "synthetic_sequences",
        "synthetic_cohort", "evaluation", "synthetic_release",
    }
    assert expected <= keys, expected - keys
    graph = repo.asset_graph
    # Lineage: the release sits downstream of staging through every stage.
    ancestors = set()
    frontier = [dg.AssetKey("synthetic_release")]
    while frontier:
        key = frontier.pop()
        for parent in graph.get(key).parent_keys:
            if parent not in ancestors:
                ancestors.add(parent)
                frontier.append(parent)
    assert {dg.AssetKey.from_user_string(k) for k in ("visits", "gpt_checkpoint", "evaluation", "mimic_raw/chartevents")} <= ancestors
    check_names = {k.name for k in repo.asset_graph.asset_check_keys}
    from synehrgy_assets.defs.release import GATING_CHECKS

    assert {"gx_visits", "gx_visit_codes", "gx_measurements", "utility_gate", "structure_gate", *GATING_CHECKS,
            "train_tokens_with_visit_header", "train_tokens_with_full_history",
            "training_windows_parse"} <= check_names
    assert {j.name for j in repo.get_all_jobs()} >= {"synehrgy_end_to_end", "synehrgy_retrain"}
    assert repo.has_schedule_def("weekly_retraining")
    assert repo.has_sensor_def("mimic_files_sensor")


def test_the_dg_project_layout_loads_everything_from_the_defs_folder(tmp_path):
    """pyproject's [tool.dg] names the code location `synehrgy`, its root and defs modules and the
    module `dg dev` loads; the defs folder alone holds every asset, check, job, schedule and sensor
    (nothing is listed by hand), and the code location adds the resources and the executor."""
    import tomllib

    from synehrgy_assets import definitions
    from tests.conftest import REPO

    dg_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]
    assert dg_config["directory_type"] == "project"
    assert dg_config["project"] == {
        "root_module": "synehrgy_assets", "defs_module": "synehrgy_assets.defs",
        "code_location_target_module": "synehrgy_assets.definitions", "code_location_name": "synehrgy"}
    assert "dagster" not in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"], "[tool.dagster] is superseded"
    assert not (REPO / "workspace.yaml").exists() and not (REPO / "orchestration" / "definitions.py").exists()

    folder = dg.load_from_defs_folder(path_within_project=REPO)
    assert not folder.resources and folder.executor is None  # those two come from definitions.py
    full = definitions.build_definitions(home=str(tmp_path)).get_repository_def()
    folder_assets = {key for assets_def in folder.assets for key in assets_def.keys}
    folder_checks = {key for checks_def in [*folder.assets, *folder.asset_checks] for key in checks_def.check_keys}
    assert folder_assets == set(full.asset_graph.get_all_asset_keys())
    assert folder_checks == set(full.asset_graph.asset_check_keys)
    assert {j.name for j in folder.jobs} == {j.name for j in full.get_all_jobs()} - {"__ASSET_JOB"}
    assert {s.name for s in folder.schedules} == {s.name for s in full.schedule_defs} == {"weekly_retraining"}
    assert {s.name for s in folder.sensors} == {s.name for s in full.sensor_defs} == {
        "mimic_files_sensor", "release_announcement_sensor"}
    assert set(full.get_top_level_resources()) == {"workspace", "mimic_source", "mlflow_tracking", "release_gate", "dbt"}


def test_resources_read_the_environment_through_envvar(monkeypatch, tmp_path):
    """Set variables reach the resources as `dg.EnvVar` (resolved by Dagster when a run starts, never
    stored with it); unset ones leave the defaults, so nothing fails for a variable nobody set."""
    from synehrgy_assets.definitions import build_resources

    for name in ("MIMIC_DIR", "SYNEHRGY_SYNTHETIC_HOSPITAL", "SYNEHRGY_SYNTHETIC_PATIENTS", "MIMIC_TWIN_FILES",
                 "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    plain = build_resources(home=str(tmp_path))
    assert plain["mimic_source"].mimic_dir == "" and plain["mimic_source"].synthetic_hospital is False
    assert plain["mlflow_tracking"].tracking_uri == "" and plain["mimic_source"].synthetic_patients == 1000

    monkeypatch.setenv("MIMIC_DIR", str(tmp_path / "mimic"))
    monkeypatch.setenv("SYNEHRGY_SYNTHETIC_PATIENTS", "77")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.org:5000")
    configured = build_resources(home=str(tmp_path))
    assert isinstance(configured["mimic_source"].mimic_dir, dg.EnvVar)
    # the tracking URI is read when the resources are built: the CLI, the sensors and tests use the
    # MLflow client outside a run, where no EnvVar resolves
    assert configured["mlflow_tracking"].tracking_uri == "http://mlflow.example.org:5000"
    with dg.build_resources({k: configured[k] for k in ("mimic_source", "mlflow_tracking")}) as resolved:
        assert resolved.mimic_source.mimic_dir == str(tmp_path / "mimic")
        assert resolved.mimic_source.synthetic_patients == 77
        assert resolved.mimic_source.data_source == "MIMIC-III folder mimic"
        assert resolved.mlflow_tracking.resolved_tracking_uri == "http://mlflow.example.org:5000"


def test_cli_runs_are_runs_of_the_code_location(tmp_path):
    """The CLI's runs carry the origin of the code location `synehrgy` (the UI's overview lists only
    runs whose origin names a loaded location): the adapter over Dagster's internals still works."""
    from orchestration.location_runs import execute_as_location_run

    @dg.asset
    def tiny() -> int:
        return 1

    job = dg.Definitions(assets=[tiny], jobs=[dg.define_asset_job("tiny_job")],
                         executor=dg.in_process_executor).resolve_job_def("tiny_job")
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        result = execute_as_location_run(job, instance, run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
                                         run_config={}, tags={"synehrgy/test": "yes"})
        assert result.success and result.run_id.startswith("00000000")
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["synehrgy/test"] == "yes"
        origin = run.remote_job_origin
        assert origin is not None, "the run has no code-location origin: the UI's overview would not list it"
        assert (origin.location_name, origin.repository_origin.repository_name, origin.job_name) == (
            "synehrgy", "__repository__", "tiny_job")
        assert run.tags["dagster/code_location"] == "synehrgy"
        assert [e.event_specific_data.materialization.asset_key for e in result.get_asset_materialization_events()] \
            == [dg.AssetKey("tiny")]
        # A plain in-process run has no origin: what the check above tells apart.
        plain = job.execute_in_process(instance=instance)
        assert instance.get_run_by_id(plain.run_id).remote_job_origin is None


# ---- launchpad knobs, executor, checks, sensors -------------------------------------------------

def undocumented_fields(job: dg.JobDefinition) -> list[str]:
    """`ops.<op>.config.<field>` and `resources.<resource>.config.<field>` paths of the job's run
    config (what the launchpad shows) that have no description, nested fields included."""
    missing: list[str] = []

    def walk(config_type, path: str) -> None:
        fields = getattr(config_type, "fields", None)
        if not isinstance(fields, dict):
            inner = getattr(config_type, "inner_type", None)
            if inner is not None:
                walk(inner, path)
            return
        for name, field in fields.items():
            if not (field.description or "").strip():
                missing.append(f"{path}.{name}")
            walk(field.config_type, f"{path}.{name}")

    schema = job.run_config_schema.config_type.fields
    for section in ("ops", "resources"):
        for name, field in schema[section].config_type.fields.items():
            config = getattr(field.config_type, "fields", {}).get("config")
            if config is not None and name != "io_manager":  # Dagster's own default IO manager
                walk(config.config_type, f"{section}.{name}.config")
    return missing


class _Knobs(dg.Config):
    documented: int = Field(default=1, description="has one")
    bare: int = 2


class _Res(dg.ConfigurableResource):
    nested_bare: str = ""


def _knobby(config, res) -> None: ...


_knobby.__annotations__ = {"config": _Knobs, "res": _Res}  # real types (this module's annotations are strings)
_knobby = dg.asset(_knobby)


def test_every_config_and_resource_field_has_a_description(tmp_path):
    from synehrgy_assets.definitions import build_definitions

    repo = build_definitions(home=str(tmp_path)).get_repository_def()
    jobs = repo.get_all_jobs()
    assert {"__ASSET_JOB", "synehrgy_end_to_end", "synehrgy_generate_shards"} <= {j.name for j in jobs}
    for job in jobs:
        assert undocumented_fields(job) == [], job.name
    # The walk sees undocumented fields (a check that can fail).
    bad = dg.Definitions(assets=[_knobby], resources={"res": _Res()}).get_repository_def().get_all_jobs()[0]
    assert sorted(undocumented_fields(bad)) == ["ops._knobby.config.bare", "resources.res.config.nested_bare"]


def test_in_process_by_default_and_multiprocess_by_run_config(tmp_path):
    from synehrgy_assets.definitions import build_definitions

    defs = build_definitions(home=str(tmp_path))
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():  # the Definitions' executor reaches ad-hoc (__ASSET_JOB) runs too
        assert job.executor_def.name == "in_process_or_multiprocess", job.name
        assert job.executor_def.config_schema.as_field().default_value == {"in_process": {}}
        for execution in ({"in_process": {}}, {"multiprocess": {"max_concurrent": 2}}):
            assert dg.validate_run_config(job, {"execution": {"config": execution}}) is not None


def test_the_executor_adapter_still_matches_dagsters_executor():
    """synehrgy_assets/defs/jobs.py reads the choices of Dagster's multi_or_in_process executor (no public
    API gives them) and restates its requirements: a Dagster that changes either fails here."""
    from synehrgy_assets.defs.jobs import _CHOICES, in_process_by_default_executor

    base = dg.multi_or_in_process_executor
    assert isinstance(_CHOICES, dg.Selector) and sorted(_CHOICES.fields) == ["in_process", "multiprocess"]
    for choice in ({"in_process": {}}, {"multiprocess": {}}):
        assert in_process_by_default_executor.get_requirements(choice) == base.get_requirements(choice), choice
    assert in_process_by_default_executor.get_requirements({"multiprocess": {}})  # the check can fail


def test_gating_checks_are_error_severity_and_never_block(tmp_path):
    """Labels and severities agree: the gating checks record ERROR results and do not block the
    release (which records a failed cohort as `failed`)."""
    from synehrgy_assets.definitions import build_definitions
    from synehrgy_assets.defs.release import GATING_CHECKS

    repo = build_definitions(home=str(tmp_path)).get_repository_def()
    specs = {key.name: spec for assets_def in repo.asset_graph.assets_defs for key, spec in
             ((s.key, s) for s in assets_def.check_specs)}
    assert set(GATING_CHECKS) <= set(specs)
    for name in GATING_CHECKS:
        assert specs[name].blocking is False, name
        assert "blocking" not in specs[name].description.replace("not blocking", ""), specs[name].description


@pytest.mark.integration
def test_gate_thresholds_from_run_config_change_the_verdict(released_workspace, tmp_path):
    """The launchpad's `resources.release_gate.config` is accepted and judges: the same evaluation
    passes the forced-closure gate with a lax threshold and fails it with an impossible one; the
    evaluation's metadata shows the gates first and links its full tables."""
    from tests.small_graph import copy_workspace

    graph = released_workspace
    meta = graph.metadata("evaluation")
    keys = list(meta)
    assert keys[:4] == ["release_gates_passed", "quality_targets_met", "release_gates", "quality_targets"]
    assert all(k.startswith("plot/") for k in keys[4:8]) and len(keys) <= 25, keys
    report = meta["full_report"].value
    assert report.endswith("artifacts/evaluation/report.md")
    assert "## Metrics" in (graph.home / "artifacts" / "evaluation" / "report.md").read_text()
    assert isinstance(meta["mlflow_artifacts"], dg.UrlMetadataValue)

    home, defs, instance = copy_workspace(graph, tmp_path / "ws")
    gates = dg.define_asset_job("gates_only", selection=dg.AssetSelection.checks_for_assets(
        dg.AssetKey("evaluation")))
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[gates])).resolve_job_def("gates_only")
    verdicts = {}
    for limit in (1.0, -1.0):
        run_config = {"resources": {"release_gate": {"config": {"max_forced_closure_rate": limit}}}}
        result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
        checks = {e.event_specific_data.check_name: e.event_specific_data
                  for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        verdicts[limit] = checks["forced_closure_gate"].passed
        assert all(c.severity == dg.AssetCheckSeverity.ERROR for c in checks.values() if not c.passed)
    assert verdicts == {1.0: True, -1.0: False}


@pytest.mark.integration
def test_release_sensor_announces_every_release_whatever_made_it(released_workspace, tmp_path):
    """The end-to-end job's release, then an ad-hoc materialization of synthetic_release alone (as from
    the UI's "Materialize" or the CLI): each tick announces the new one, once."""
    from synehrgy_assets.defs.sensors import release_announcement_sensor
    from synehrgy_assets.defs import release
    from tests.small_graph import copy_workspace

    home, defs, instance = copy_workspace(released_workspace, tmp_path / "ws")
    first = release_announcement_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    last = instance.fetch_materializations(dg.AssetKey("synthetic_release"), limit=1).records[0]
    assert instance.get_run_by_id(last.run_id).job_name == "synehrgy_end_to_end"
    version = last.asset_materialization.metadata["release_version"].value
    assert first.skip_message.startswith(f"release v{version} ") and last.run_id in first.skip_message
    quiet = release_announcement_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert "No new materialization" in quiet.skip_message

    adhoc = dg.materialize([release.synthetic_release], instance=instance, resources=defs.resources)
    assert adhoc.success and adhoc.dagster_run.job_name != "synehrgy_end_to_end"
    again = release_announcement_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    new_version = adhoc.asset_materializations_for_node("synthetic_release")[0].metadata["release_version"].value
    assert new_version != version
    assert again.skip_message.startswith(f"release v{new_version} ") and adhoc.run_id in again.skip_message


# ---- the raw data source: a MIMIC-III folder or the simulated hospital, never a silent default ----

def _raw_only(mimic_source, home, instance=None):
    from synehrgy_assets.defs import raw
    from synehrgy_assets.resources import WorkspaceResource

    return dg.materialize([raw.mimic_raw_files], raise_on_error=False, instance=instance,
                          resources={"workspace": WorkspaceResource(home=str(home)), "mimic_source": mimic_source})


@pytest.mark.parametrize("configured", ["neither", "both"])
def test_the_raw_asset_refuses_no_source_or_two(tmp_path, configured):
    """No MIMIC folder and no request for the simulated hospital (a deployment that forgot MIMIC_DIR)
    fails at the raw asset, saying how to pick a source; both at once fails too. Nothing is written."""
    from synehrgy_assets.resources import MimicSourceResource

    source = (MimicSourceResource() if configured == "neither"
              else MimicSourceResource(mimic_dir=str(tmp_path / "mimic"), synthetic_hospital=True))
    result = _raw_only(source, tmp_path / "home")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    text = failure.user_failure_data.description if failure.user_failure_data else failure.error.message
    if configured == "neither":
        assert text.startswith("No raw data source configured"), text
        for way in ("MIMIC_DIR", "--mimic-dir", "--synthetic-hospital", "SYNEHRGY_SYNTHETIC_HOSPITAL=1",
                    "resources.mimic_source.config.synthetic_hospital"):
            assert way in text, (way, text)
    else:
        assert "pick one" in text and str(tmp_path / "mimic") in text, text
    assert not (tmp_path / "home" / "raw").exists(), "a refused source wrote raw files"
    assert source.data_source == ("none configured" if configured == "neither" else "MIMIC-III folder mimic")


def test_the_simulated_hospital_is_named_where_it_is_used(tmp_path):
    """Asked for, the simulated hospital writes the raw tables, and the metadata and the run log
    name it as the source."""
    from synehrgy_assets.resources import MimicSourceResource

    source = MimicSourceResource(synthetic_hospital=True, synthetic_patients=30)
    assert source.uses_synthetic_hospital and source.data_source == "synthetic hospital"
    with dg.instance_for_test() as instance:
        result = _raw_only(source, tmp_path / "home", instance)
        assert result.success
        meta = result.asset_materializations_for_node("mimic_raw_files")[0].metadata
        assert meta["data_source"].value == "synthetic hospital" and meta["simulated_patients"].value == 30
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("Raw data source: the synthetic hospital (asked for") for m in messages), messages


@pytest.mark.parametrize("argv, message", [
    (["--synthetic-hospital", "--mimic-dir", "/data/mimic"], "name two raw sources"),
    (["--patients", "50"], "needs --synthetic-hospital"),
])
def test_the_cli_refuses_conflicting_source_arguments(tmp_path, argv, message, capsys, monkeypatch):
    from orchestration.cli import main

    monkeypatch.delenv("SYNEHRGY_SYNTHETIC_HOSPITAL", raising=False)
    assert main(["materialize", "--home", str(tmp_path / "home"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "home").exists()
