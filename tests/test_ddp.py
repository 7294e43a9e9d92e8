"""torchrun DDP: two CPU processes (gloo) train to the same loss as one with the same global batch
(batch_size is rows per process: two processes of 3 rows make the global batch of one process of 6)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from synehrgy_assets.core import distributed
from synehrgy_assets.core.ddp_entry import run_torchrun, write_spec, write_window_arrays
from synehrgy_assets.core.trainer import TrainConfig, init_model, train
from tests.helpers.toy_windows import PAD, TOKEN_TYPES, model_config, typed_windows
from tests.tiny_models import single_thread  # noqa: F401 (autouse fixture)

# Stated tolerance: the two runs differ only by float summation order (gradients all-reduced over
# 2 ranks, validation sums reduced), so after 24 steps their losses agree to well under 1e-3 nats.
LOSS_TOLERANCE = 1e-3


def ddp_config() -> TrainConfig:
    # dropout is 0 in model_config(): the ranks' rows would otherwise see other dropout masks.
    return TrainConfig(epochs=50, max_steps=24, batch_size=6, learning_rate=5e-3, warmup_steps=4,
                       eval_every=8, log_every=4, patience=None, seed=3)


def test_two_processes_reach_the_loss_of_one(tmp_path):
    train_w, val_w = typed_windows(150, seed=1), typed_windows(40, seed=2)
    cfg, config = model_config(), ddp_config()

    one = init_model(cfg, 5)
    single = train(one, train_w, val_w, config, pad_id=PAD, token_types=TOKEN_TYPES)

    data = tmp_path / "data"
    write_window_arrays(data, "train", train_w)
    write_window_arrays(data, "val", val_w)
    per_rank = dataclasses.replace(config, batch_size=config.batch_size // 2)
    spec = write_spec(tmp_path / "spec.json", model_config=cfg.to_dict(), init_seed=5,
                      train_config=per_rank.to_dict(), data={"kind": "arrays", "path": data}, pad_id=PAD,
                      output_dir=tmp_path / "out", token_types=TOKEN_TYPES)
    records, lines = [], []
    two = init_model(cfg, 99)  # other weights: the trained ones must come back from rank 0
    result = run_torchrun(spec, 2, model=two, on_log=records.append, log=lines.append, threads_per_process=1)

    assert result.steps == single.steps == 24
    assert result.tokens_seen == single.tokens_seen  # the same global batches
    assert result.best_step == single.best_step
    assert abs(result.best_val_loss - single.best_val_loss) < LOSS_TOLERANCE, (result.best_val_loss, single.best_val_loss)
    assert abs(result.final_train_loss - single.final_train_loss) < LOSS_TOLERANCE
    # The loss really fell (not two untrained models agreeing), and the curves agree step by step.
    first_val = next(h["val_loss"] for h in single.history if "val_loss" in h)
    assert single.best_val_loss < first_val - 0.3, (first_val, single.best_val_loss)
    print(f"val loss: 1 process {single.best_val_loss:.6f}, 2 processes {result.best_val_loss:.6f}; "
          f"first eval {first_val:.4f}")
    assert [r["step"] for r in records] == [r["step"] for r in single.history]  # streamed from rank 0 only
    for got, want in zip(records, single.history):
        assert abs(got["train_loss"] - want["train_loss"]) < LOSS_TOLERANCE
    assert result.val_loss_by_type.keys() == single.val_loss_by_type.keys()
    for name, p in one.state_dict().items():
        assert torch.allclose(p, two.state_dict()[name], atol=2e-3), name


def test_a_partial_torchrun_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="RANK is not set: launch with torchrun"):
        distributed.setup(torch.device("cpu"))


def test_a_failing_process_fails_the_launch_with_its_output(tmp_path):
    cfg = model_config()
    spec = write_spec(tmp_path / "spec.json", model_config=cfg.to_dict(), init_seed=0,
                      train_config=dataclasses.asdict(ddp_config()),
                      data={"kind": "arrays", "path": tmp_path / "missing"}, pad_id=PAD, output_dir=tmp_path / "out")
    with pytest.raises(RuntimeError, match=r"failed with exit code(.|\n)*train_tokens\.npy is missing"):
        run_torchrun(spec, 2, threads_per_process=1)


def test_a_short_last_batch_leaves_a_rank_without_rows():
    rows = [np.array([0]), np.array([1]), np.array([2])]
    assert distributed.Dist(rank=1, world_size=4).shard(rows) == [rows[1]]
    assert distributed.Dist(rank=3, world_size=4).shard(rows) == []
    lengths, n_targets = np.array([5, 3, 4]), np.array([4, 2, 3])
    assert distributed.global_batch_counts(rows, lengths, n_targets, 8) == (9, 24, 24 - 9)
