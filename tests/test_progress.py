"""Progress of training and generation: AssetObservations as they go (step, epoch, losses, ETA;
patients done / total), drawn as a progress bar by the CLI's console logger."""

from __future__ import annotations

import dagster as dg
import pytest


def _observations(instance, asset: str) -> list[dict]:
    records = instance.fetch_observations(dg.AssetKey(asset), limit=1000).records
    return [{k: getattr(v, "value", v) for k, v in r.asset_observation.metadata.items()}
            for r in sorted(records, key=lambda r: r.storage_id)]


@pytest.mark.integration
def test_training_and_generation_emit_progress_observations(released_workspace):
    from tests.small_graph import SHARED_RUN_CONFIG

    graph = released_workspace
    train = _observations(graph.instance, "gpt_checkpoint")
    max_steps = SHARED_RUN_CONFIG["ops"]["gpt_checkpoint"]["config"]["max_steps"]
    assert len(train) >= 2, train  # one per validation at least (eval_every 15 of 30 steps)
    assert [o["step"] for o in train] == sorted(o["step"] for o in train)
    assert {"progress", "step", "epoch", "train_loss", "val_loss", "eta_seconds", "elapsed_seconds"} <= set(train[-1])
    assert train[-1]["step"] == max_steps and train[-1]["progress"] == pytest.approx(1.0)
    assert 0 < train[0]["progress"] < 1 and train[0]["eta_seconds"] > 0

    gen = _observations(graph.instance, "synthetic_sequences")
    n = SHARED_RUN_CONFIG["ops"]["synthetic_sequences"]["config"]["n_patients"]
    assert gen[0]["patients_done"] == 0 and gen[0]["patients_total"] == n
    assert gen[-1]["patients_done"] == n and gen[-1]["progress"] == pytest.approx(1.0)


def test_progress_line_format():
    from orchestration.run_logging import format_progress

    line = format_progress("gpt_checkpoint", {"progress": 0.5, "step": 120, "epoch": 3.04, "val_loss": 2.3114,
                                              "eta_seconds": 65.0}, width=10)
    assert line == "gpt_checkpoint [#####.....]  50% step 120 · epoch 3.04 · val 2.311 · ETA 1m05s"
    assert format_progress("synthetic_sequences", {"progress": 0.0, "patients_done": 0, "patients_total": 40,
                                                   "eta_seconds": None}, width=4).endswith(
        "[....]   0% 0/40 patients · ETA ?")


def test_cli_console_logger_draws_progress_bars(capfd):
    """A real run with the CLI's console logger at INFO: progress observations (DEBUG events) are drawn,
    other DEBUG events stay hidden."""
    from orchestration.run_logging import quiet_console_logger
    from synehrgy_assets.defs._metadata import Progress

    @dg.asset
    def long_job(context) -> None:
        progress = Progress(context, every_seconds=3600)
        for done in range(5):
            progress.report(done / 4, force=done in (0, 4), patients_done=done, patients_total=4)
        assert progress.emitted == 2  # the throttle held back the three in between

    job = dg.define_asset_job("progress_job", selection=[long_job]).resolve(
        asset_graph=dg.Definitions(assets=[long_job]).resolve_asset_graph())
    result = job.with_logger_defs({"console": quiet_console_logger}).execute_in_process(
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    assert result.success
    err = capfd.readouterr().err
    bars = [line for line in err.splitlines() if " - PROGRESS - " in line]
    assert len(bars) == 2, err
    assert bars[0].endswith("long_job [........................]   0% 0/4 patients · ETA ?")
    assert "long_job [########################] 100% 4/4 patients · ETA 0s" in bars[1]
    assert "STEP_START" not in err  # a DEBUG event, below the console's level
