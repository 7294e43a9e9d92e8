"""The gates in the shared small workspace (tests/small_graph.py): the patient rules gate judges the
cohort beside the real test patients, every gate check carries its numbers, the Markdown tables are
escaped, and one threshold changed in the resource moves the targets, the gate, the metadata and the
datacard together."""

import json
import re

import dagster as dg
import pytest

from synehrgy_assets.core.patient_rules import RULE_NAMES

pytestmark = pytest.mark.integration


def _cells(line: str) -> int:
    """Cells of a Markdown table row (an escaped `\\|` does not start one)."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def _check_evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.event_specific_data.check_name: e.event_specific_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_patient_rules_gate_in_the_graph_and_numbers_on_every_gate(released_workspace):
    graph = released_workspace
    meta = graph.metadata("evaluation")
    rules = meta["patient_rules"].value
    assert all(f"| {rule}" in rules for rule in RULE_NAMES), rules
    assert "not measured" not in rules
    for name in ("quality_targets", "release_gates", "patient_rules"):
        rows = [line for line in meta[name].value.splitlines() if line.startswith("|")]
        assert len({_cells(line) for line in rows}) == 1, (name, rows)  # no row shifted by a `|`
    assert "mortality rate \\|synthetic - real\\|" in meta["quality_targets"].value
    assert meta["gate_thresholds"].value["max_hard_patient_rule_share"] == 1e9  # the shared run's lax gates

    # The check judged the cohort that was evaluated, and says so in its verdict file.
    verdict = json.loads((graph.home / "artifacts" / "gates" / "patient_rules_gate.json").read_text())
    assert verdict["cohort_id"] == meta["cohort_id"].value and verdict["passed"]
    assert [r["quantity"].split(":")[0].replace(" (hard)", "") for r in verdict["rows"]] == list(RULE_NAMES)
    assert verdict["thresholds"]["patient_rule_share_ratio"] == 1e9

    checks = {}
    for name in ("patient_rules_gate", "structure_gate", "utility_gate", "forced_closure_gate", "privacy_dcr_gate"):
        key = dg.AssetCheckKey(dg.AssetKey("evaluation"), name)
        record = graph.instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
        checks[name] = record.event.dagster_event.event_specific_data
    for name in ("patient_rules_gate", "structure_gate", "forced_closure_gate", "privacy_dcr_gate"):
        numbers = {k: v for k, v in checks[name].metadata.items() if isinstance(v, dg.FloatMetadataValue)}
        assert any(k.endswith("/measured") for k in numbers) and any(k.endswith("/threshold") for k in numbers), name
    # The small graph's 19 real test patients hold too few deaths or long stays for any utility task
    # (each "not gated" or "not reported", tests/test_utility_panel.py): no figure to carry.
    assert "not" in checks["utility_gate"].description or "not gated" in str(checks["utility_gate"].metadata)
    assert "patient_rules_gate" in checks and checks["patient_rules_gate"].passed


def test_default_thresholds_judge_todays_cohort_on_the_patient_rules(released_workspace, tmp_path):
    """Under the default thresholds even the 30-step generator's cohort keeps every patient rule that
    real patients keep: the hard rules hold by construction (the sampling masks and the decoder), the
    others within the real-test limits. (Crafted cohorts that break each rule and fail the gate are
    in tests/test_patient_rules.py.)"""
    from synehrgy_assets.core.release_gates import GateThresholds
    from tests.small_graph import copy_workspace

    home, defs, instance = copy_workspace(released_workspace, tmp_path / "ws")
    patient = {k: v for k, v in GateThresholds().as_dict().items() if "patient_rule" in k}
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job(
        "gates_only", selection=dg.AssetSelection.checks_for_assets(dg.AssetKey("evaluation")))])
    ).resolve_job_def("gates_only")
    result = job.execute_in_process(instance=instance, raise_on_error=False,
                                    run_config={"resources": {"release_gate": {"config": patient}}})
    check = _check_evaluations(result)["patient_rules_gate"]
    assert check.passed and check.severity == dg.AssetCheckSeverity.ERROR, check.description
    from synehrgy_assets.core.patient_rules import RULES

    for rule in RULES:
        if rule.hard:
            assert check.metadata[f"{rule.name}_hard_share_of_patients/measured"].value == 0.0, rule.name
    assert check.metadata["icu_database_mismatch_share_of_patients/measured"].value == 0.0


def test_one_threshold_moves_targets_gate_metadata_and_datacard(released_workspace, tmp_path):
    """structure_ks_baseline_ratio set to 3 in the resource (run config): the structure KS target
    becomes 0.75 x 3 x the real-test KS, the structure gate's limit 3 x it, the evaluation's metadata
    and the release's datacard show 3."""
    from tests.small_graph import copy_workspace

    home, defs, instance = copy_workspace(released_workspace, tmp_path / "ws")
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance, raise_on_error=False,
        asset_selection=[dg.AssetKey("evaluation"), dg.AssetKey("synthetic_release")],
        run_config={"resources": {"release_gate": {"config": {"structure_ks_baseline_ratio": 3.0}}}})
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    evaluation = meta["evaluation"]
    assert evaluation["gate_thresholds"].value["structure_ks_baseline_ratio"] == 3.0

    metrics = json.loads((home / "private" / "evaluation" / "metrics.json").read_text())["metrics"]
    base = metrics["fidelity_baseline/structure/los_hours_ks"]
    target_row = next(line for line in evaluation["quality_targets"].value.splitlines() if "los_hours" in line)
    assert f"<= {max(0.10, 2.25 * base):.4g}" in target_row, target_row
    gate = _check_evaluations(result)["structure_gate"]
    assert gate.metadata["ks_los_hours/threshold"].value == pytest.approx(max(0.10, 3.0 * base))
    assert gate.metadata["thresholds"].value["structure_ks_baseline_ratio"] == 3.0

    ml = defs.resources["mlflow_tracking"]
    version = str(meta["synthetic_release"]["release_version"].value)
    card = ml.client().get_model_version(ml.release_name, version).description
    assert "| `structure_ks_baseline_ratio` | 3 |" in card, card
    assert "### Patient rules" in card and "icu_database_mismatch" in card
