"""The Definitions load, and the graph has every stage wired in order."""

from __future__ import annotations

import dagster as dg


def test_definitions_load_and_graph_is_complete(tmp_path):
    from orchestration.definitions import build_definitions

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


def test_workspace_yaml_points_at_the_definitions():
    import yaml

    from tests.conftest import REPO

    ws = yaml.safe_load((REPO / "workspace.yaml").read_text())
    assert ws["load_from"][0]["python_module"]["module_name"] == "orchestration.definitions"
