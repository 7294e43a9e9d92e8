"""The training budget (core/training_budget.py, gpt_checkpoint's `budget`) and early stopping on a
plateau (TrainConfig.min_delta)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synehrgy_assets.core.trainer import TrainConfig, init_model, train
from synehrgy_assets.core.training_budget import BudgetError, parse_budget, plan_epochs, probe_throughput
from tests.helpers.toy_windows import PAD, model_config, quick_config, typed_windows
from tests.tiny_models import single_thread  # noqa: F401 (autouse fixture)


def test_parse_budget_reads_durations_and_names_bad_ones():
    assert parse_budget("30m") == 1800 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    assert parse_budget("1.5h") == 5400 and parse_budget(" 2h ") == 7200 and parse_budget("") == 0.0
    for bad in ("30", "abc", "30 minutes", "-5m", "0m", "5m3"):
        with pytest.raises(BudgetError, match="budget"):
            parse_budget(bad)


def test_plan_fits_steps_and_validations_into_the_budget_left_after_the_probe():
    plan = plan_epochs(120.0, probe_seconds=10.0, seconds_per_step=0.5, steps_per_epoch=20, eval_seconds=2.0)
    # 0.9 x (120 - 10) = 99 s; one epoch = 20 x 0.5 + 2 = 12 s: 8.25 epochs (165 whole steps)
    assert plan.epochs == pytest.approx(8.25) and plan.planned_seconds <= 0.9 * 110 + 1e-9
    assert "fit" in plan.reason
    # The same budget on twice the data: about half the epochs (the same wall time).
    bigger = plan_epochs(120.0, 10.0, 0.5, 40, 4.0)
    assert bigger.epochs == pytest.approx(plan.epochs / 2, abs=0.03)
    # A long budget on small data: capped (early stopping ends it when val stops improving).
    capped = plan_epochs(36_000.0, 10.0, 0.5, 20, 2.0, max_epochs=100)
    assert capped.epochs == 100 and "capped" in capped.reason
    # A budget the probe already spent: one step, said.
    tiny = plan_epochs(5.0, 10.0, 0.5, 20, 2.0)
    assert tiny.epochs == pytest.approx(1 / 20) and "one step" in tiny.reason
    with pytest.raises(BudgetError, match="cannot plan"):
        plan_epochs(100.0, 1.0, 0.0, 20, 1.0)


def test_probe_measures_this_machine_and_leaves_the_model_alone():
    model = init_model(model_config(), 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = probe_throughput(model, typed_windows(120, seed=1), typed_windows(40, seed=2), quick_config(), PAD,
                             probe_steps=6, probe_val_windows=16)
    assert probe["probe_steps"] == 6 and probe["steps_per_epoch"] >= 1
    assert 0 < probe["seconds_per_step"] < probe["probe_seconds"] and probe["eval_seconds"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # The planned run trains what the plan says (as many steps as epochs x steps per epoch).
    plan = plan_epochs(probe["probe_seconds"] + 20 * probe["seconds_per_step"] / 0.9 + 1e-6, probe["probe_seconds"],
                       probe["seconds_per_step"], probe["steps_per_epoch"], 0.0)
    result = train(model, typed_windows(120, seed=1), typed_windows(40, seed=2),
                   quick_config(epochs=plan.epochs), PAD)
    assert result.total_steps == round(plan.epochs * probe["steps_per_epoch"]) == 20


def test_a_deadline_holds_the_budget_when_the_machine_slows_down(monkeypatch):
    """The epochs were planned for a faster machine: the deadline ends the run with a last
    evaluation, keeps the best weights, and says so; without it the run goes on to the planned steps."""
    import synehrgy_assets.core.train_loop as train_loop

    windows, val = typed_windows(120, seed=1), typed_windows(40, seed=2)
    clock = {"t": 0.0}

    def slow_clock():  # every call is 0.5 s later: each step "takes" a few seconds
        clock["t"] += 0.5
        return clock["t"]

    monkeypatch.setattr(train_loop.time, "perf_counter", slow_clock)
    cfg = quick_config(epochs=20, eval_every=50, patience=0, deadline_seconds=30.0)
    result = train(init_model(model_config(), 0), windows, val, cfg, PAD)
    assert result.stopped_at_deadline and not result.stopped_early
    assert 0 < result.steps < result.total_steps
    assert "val_loss" in result.history[-1] and result.best_val_loss is not None  # a last evaluation
    unbounded = train(init_model(model_config(), 0), windows, val,
                      quick_config(epochs=20, eval_every=50, patience=0), PAD)
    assert not unbounded.stopped_at_deadline and unbounded.steps == unbounded.total_steps


def test_early_stopping_ends_a_plateau():
    # A learning rate too small to move the weights: the val loss creeps down by far less than
    # min_delta per evaluation, which is a plateau: the run stops after `patience` evaluations.
    windows, val = typed_windows(200, seed=2), typed_windows(40, seed=3)
    cfg = quick_config(epochs=50, eval_every=4, patience=2, learning_rate=1e-7, min_delta=1e-3)
    result = train(init_model(model_config(), 1), windows, val, cfg, PAD)
    assert result.stopped_early and result.steps == 12 < result.total_steps  # evaluations at 4, 8, 12
    losses = [h["val_loss"] for h in result.history if "val_loss" in h]
    assert losses[-1] <= losses[0] and losses[0] - losses[-1] < 1e-3  # it never got worse: a plateau
    # The same run without min_delta counts every crumb as progress and goes on.
    creeping = train(init_model(model_config(), 1), windows, val,
                     quick_config(epochs=2, eval_every=4, patience=2, learning_rate=1e-7), PAD)
    creep = np.diff([h["val_loss"] for h in creeping.history if "val_loss" in h])
    assert (creep < 0).all() and (creep > -1e-3).all()
    assert not creeping.stopped_early and creeping.steps == creeping.total_steps > 12
    with pytest.raises(ValueError, match="min_delta"):
        TrainConfig(min_delta=-0.1)


def test_gpt_checkpoint_with_a_budget_says_what_it_chose(released_workspace, tmp_path):
    """The asset: `budget` replaces `epochs` by what the probe says fits; the metadata and log say so."""
    import copy

    import dagster as dg

    from tests.small_graph import SHARED_RUN_CONFIG, copy_workspace

    _, defs, instance = copy_workspace(released_workspace, tmp_path / "ws")
    run_config = copy.deepcopy(SHARED_RUN_CONFIG)
    run_config["ops"] = {"gpt_checkpoint": run_config["ops"]["gpt_checkpoint"]}
    run_config["ops"]["gpt_checkpoint"]["config"].update({"budget": "20s", "max_steps": 0, "budget_max_epochs": 3})
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, run_config=run_config, asset_selection=[dg.AssetKey("gpt_checkpoint")])
    assert result.success
    meta = next(e.materialization.metadata for e in result.get_asset_materialization_events())
    plan = meta["budget"].value
    assert 0 < plan["epochs"] <= 3 and plan["budget_seconds"] == 20 and plan["seconds_per_step"] > 0
    assert meta["budget_epochs"].value == plan["epochs"] and meta["budget_choice"].value == plan["reason"]
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any(m.startswith("Budget 20s: a ") and "epochs" in m for m in logs)
