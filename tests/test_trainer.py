"""Tests for the trainer: packed batches, budgets, per-type validation, early stopping, seeds, resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synehrgy_assets.core.model import IGNORE_INDEX
from synehrgy_assets.core.packing import (
    batches_of,
    collate_packed,
    epoch_rows,
    first_fit_decreasing,
    pack_rows,
)
from synehrgy_assets.core.tokens.grammar import TokenType
from synehrgy_assets.core.trainer import (
    STATE_FILE,
    TrainConfig,
    WindowSet,
    evaluate,
    init_model,
    lr_at,
    planned_steps,
    token_groups,
    train,
)
from tests.helpers.toy_windows import (
    BOS, EOS, FIRST_AGE, FIRST_DX, N_AGE, N_CTX, PAD, TOKEN_TYPES, VOCAB, model_config, quick_config,
    toy_clocks, typed_window, typed_windows,
)
from tests.tiny_models import single_thread  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[1]
def window_set(windows, context=None) -> WindowSet:
    return WindowSet.build(windows, context, "w", N_CTX, VOCAB, PAD)


# ---------------------------------------------------------------- packing


def test_first_fit_decreasing_places_every_item_once_within_capacity():
    sizes = np.random.default_rng(0).integers(1, 100, size=500)
    bins = first_fit_decreasing(sizes, 100)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(500))
    assert all(sizes[b].sum() <= 100 for b in bins)
    # First fit: no item of a later bin would have fit into an earlier bin when it was placed,
    # so the packing is within the classic 11/9 OPT + 1 bound of the lower bound sum/capacity.
    assert len(bins) <= math.ceil(11 / 9 * math.ceil(sizes.sum() / 100)) + 1


def test_an_epoch_holds_every_target_exactly_once_and_its_order_is_a_function_of_seed_and_epoch():
    rng = np.random.default_rng(1)
    windows = [rng.integers(3, VOCAB, size=int(n)) for n in rng.integers(2, N_CTX + 2, size=300)]
    context = np.array([int(rng.integers(0, len(w))) for w in windows])
    data = window_set(windows, context)
    rows = epoch_rows(data.lengths, N_CTX, seed=7, epoch=3, pool=64)
    seen = np.zeros(len(windows), dtype=np.int64)
    for batch_rows in batches_of(rows, 5):
        batch = collate_packed(windows, context, batch_rows, N_CTX, PAD)
        assert batch.inputs.shape == (len(batch_rows), N_CTX)
        counted = batch.window_ids[batch.targets != IGNORE_INDEX]
        seen += np.bincount(counted, minlength=len(windows))
    assert seen.tolist() == data.n_targets.tolist()
    assert (data.n_targets == data.lengths - np.maximum(context, 1)).all()
    again = epoch_rows(data.lengths, N_CTX, seed=7, epoch=3, pool=64)
    assert all(np.array_equal(a, b) for a, b in zip(rows, again)) and len(rows) == len(again)
    other = epoch_rows(data.lengths, N_CTX, seed=7, epoch=4, pool=64)
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(rows, other))


@pytest.mark.parametrize("mix", ["uniform", "ehr"])
def test_padding_stays_under_five_percent_on_realistic_length_mixes(mix):
    n_ctx, rng = 512, np.random.default_rng(2)
    if mix == "uniform":  # lengths 20..n_ctx+1
        lengths = rng.integers(20, n_ctx + 2, size=4000)
    else:  # like the synthetic hospital: ~45 % full windows, the rest short and medium patients
        full = rng.integers(n_ctx - 12, n_ctx + 2, size=1800)
        lengths = np.concatenate([full, rng.integers(3, n_ctx - 12, size=2200)])
    rows = epoch_rows(lengths, n_ctx, seed=0, epoch=0, pool=2048)
    assert sorted(np.concatenate(rows).tolist()) == list(range(len(lengths)))
    used = np.array([(lengths[r] - 1).sum() for r in rows])
    assert used.max() <= n_ctx
    padding = 1 - used.sum() / (len(rows) * n_ctx)
    assert padding < 0.05, padding


@pytest.mark.parametrize("conditioned", [False, True])
def test_packed_windows_compute_exactly_what_they_compute_alone(conditioned):
    table = clocks = None
    if conditioned:  # BOS resets the condition and the clocks: nothing may leak across windows
        table = [-1] * VOCAB
        table[BOS], table[FIRST_DX], table[FIRST_DX + 1] = 0, 1, 2
        clocks = toy_clocks()
    model = init_model(model_config(condition_table=table, clocks=clocks), seed=3).eval()
    for emb in model.clock_emb:  # clocks start at zero: give them weights that show a leak
        torch.nn.init.normal_(emb.weight, std=0.5)
    windows = typed_windows(40, seed=4) + [np.array([BOS, 5, EOS]), typed_window(12)[:N_CTX + 1]]
    context = np.zeros(len(windows), dtype=np.int64)
    rows = pack_rows(np.array([len(w) for w in windows]), N_CTX, np.random.default_rng(0), pool=1000)
    assert max(len(r) for r in rows) >= 3  # rows really hold several windows
    batch = collate_packed(windows, context, rows, N_CTX, PAD)
    with torch.no_grad():
        _, packed = model(torch.from_numpy(batch.inputs), torch.from_numpy(batch.targets),
                          positions=torch.from_numpy(batch.positions), segments=torch.from_numpy(batch.segments),
                          reduction="none")
        for i, w in enumerate(windows):
            x = torch.from_numpy(w[:-1])[None]
            _, alone = model(x, torch.from_numpy(w[1:])[None], reduction="none")
            torch.testing.assert_close(packed[torch.from_numpy(batch.window_ids == i)], alone[0], atol=1e-5, rtol=1e-5)


def test_context_only_tokens_and_padding_are_never_targets():
    windows = [np.array([BOS, 20, 21, 22, 23, EOS]), np.array([BOS, 5, 14, 15, EOS]), np.array([BOS, 6, PAD, PAD])]
    context = np.array([3, 0, 1])
    batch = collate_packed(windows, context, [np.array([0, 1]), np.array([2])], 12, PAD)
    row0 = batch.targets[0]
    # window 0 (5 inputs): <s> 20 21 are context, so 22 (index 3) is its first target
    assert row0[:5].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 22, 23, EOS]
    assert row0[5:9].tolist() == [5, 14, 15, EOS]  # window 1, no context: every token after <s>
    assert (row0[9:] == IGNORE_INDEX).all() and (batch.window_ids[0, 9:] == -1).all()
    assert batch.positions[0, :9].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert batch.segments[0, :9].tolist() == [0] * 5 + [1] * 4 and len(set(batch.segments[0, 9:])) == 1
    assert batch.targets[1, :3].tolist() == [6, IGNORE_INDEX, IGNORE_INDEX]  # pads inside a window
    assert window_set(windows, context).n_targets.tolist() == [3, 4, 1]
    # Training counts supervised targets only: one epoch sees each exactly once.
    result = train(init_model(model_config(), 0), windows, [], quick_config(epochs=1, batch_size=1), PAD,
                   train_context=context)
    assert result.tokens_seen == 8 and result.epochs_run == 1.0


def test_bad_windows_are_named_by_index():
    cfg = quick_config(epochs=1)
    with pytest.raises(ValueError, match=r"train_windows\[0\] has 40 tokens"):
        train(init_model(model_config(), 0), [np.arange(40) % VOCAB], [], cfg, PAD)
    with pytest.raises(ValueError, match=r"train_windows\[1\] holds token ids outside"):
        train(init_model(model_config(), 0), [np.array([BOS, 5, EOS]), np.array([BOS, VOCAB + 3, EOS])], [], cfg, PAD)
    with pytest.raises(ValueError, match=r"val_windows\[1\] has 3 tokens but 3 context-only"):
        train(init_model(model_config(), 0), typed_windows(4, 0), [np.array([BOS, 5, EOS])] * 2, cfg, PAD,
              val_context=np.array([0, 3]))


# ---------------------------------------------------------------- budget and schedule


def test_budget_resolves_epochs_tokens_and_step_cap():
    cfg = TrainConfig(epochs=2.5)
    assert planned_steps(cfg, steps_per_epoch=10, tokens_per_epoch=1000) == 25
    assert planned_steps(TrainConfig(epochs=3, max_steps=7), 10, 1000) == 7
    assert planned_steps(TrainConfig(epochs=3, max_steps=0), 10, 1000) == 30
    assert planned_steps(TrainConfig(max_tokens=1500), 10, 1000) == 15
    assert TrainConfig().patience == 3  # early stopping is on by default
    lrs = [lr_at(s, 100, TrainConfig(warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) and lrs[100] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))

    windows = typed_windows(120, seed=0)
    result = train(init_model(model_config(), 0), windows, [], quick_config(epochs=2), PAD)
    assert result.steps == result.total_steps == 2 * result.steps_per_epoch
    assert result.epochs_run == pytest.approx(2.0, abs=0.1)
    assert result.tokens_seen == pytest.approx(2 * result.train_tokens_per_epoch, rel=0.1)
    assert 0 <= result.padding_fraction < 0.15 and result.history[-1]["padding_fraction"] == result.padding_fraction
    capped = train(init_model(model_config(), 0), windows, [], quick_config(epochs=2, max_steps=7), PAD)
    assert capped.steps == 7 and capped.epochs_run < 1


# ---------------------------------------------------------------- validation by token type


@pytest.fixture(scope="module")
def trained():
    train_windows, val_windows = typed_windows(300, seed=0), typed_windows(60, seed=1)
    model = init_model(model_config(), seed=0)
    logs: list[dict] = []
    result = train(model, train_windows, val_windows, quick_config(epochs=6, eval_every=20), PAD,
                   token_types=TOKEN_TYPES, on_log=logs.append)
    return model, result, logs, train_windows, val_windows


def test_per_type_validation_loss_beats_the_unigram_baseline_where_learnable(trained):
    model, result, logs, train_windows, val_windows = trained
    assert set(result.val_loss_by_type) == set(result.unigram_baseline_by_type) == {"covariates", "codes", "structure"}
    # The baseline by hand: -log p(token | type), add-one smoothed train counts of the targets.
    counts = np.bincount(np.concatenate([w[1:] for w in train_windows]), minlength=VOCAB).astype(float)
    dx = np.arange(FIRST_DX, VOCAB)
    p_dx = (counts[dx] + 1) / (counts[dx].sum() + len(dx))
    val_dx = np.concatenate([w[1:] for w in val_windows])
    val_dx = val_dx[val_dx >= FIRST_DX]
    expected = -np.log(p_dx[val_dx - FIRST_DX]).mean()
    assert result.unigram_baseline_by_type["codes"] == pytest.approx(expected, rel=1e-9)
    # </s> is the only token of its type: a grammar-only model is sure of it
    assert result.unigram_baseline_by_type["structure"] == pytest.approx(0.0, abs=1e-12)
    assert result.unigram_baseline_by_type["covariates"] == pytest.approx(math.log(N_AGE), abs=0.1)
    # Codes follow from the AGE token: learnable far below the baseline; the AGE draw is not.
    assert result.val_loss_by_type["codes"] < 0.3 * result.unigram_baseline_by_type["codes"]
    assert result.val_loss_by_type["covariates"] > 0.8 * math.log(N_AGE)
    # The groups are a partition of the val targets: their token-weighted mean is the val loss.
    tokens = result.val_tokens_by_type
    assert sum(tokens.values()) == result.val_tokens == sum(len(w) - 1 for w in val_windows)
    mean = sum(result.val_loss_by_type[g] * n for g, n in tokens.items()) / result.val_tokens
    assert mean == pytest.approx(result.best_val_loss, rel=1e-9)
    evals = [rec for rec in logs if "val_loss" in rec]
    assert evals and all("val_loss_by_type" in rec and "unigram_baseline_by_type" in rec for rec in evals)
    assert result.val_windows == 60 and result.val_padding_fraction is not None


def test_token_groups_put_each_token_type_in_its_report_group():
    types = np.array([int(t) for t in TokenType], dtype=np.int8)
    group = dict(zip((t.name for t in TokenType), token_groups(types)))
    names = ("covariates", "labels", "codes", "values", "time_gaps", "structure")
    by_name = {t: names[g] for t, g in group.items()}
    assert by_name["GAP_VISIT"] == by_name["DT"] == "time_gaps"
    assert by_name["END_LABEL"] == by_name["MORTALITY"] == by_name["PHENOTYPE"] == "labels"
    assert by_name["END_CODE"] == by_name["DX"] == by_name["PX"] == "codes"
    assert by_name["FIRST_CAREUNIT"] == by_name["AGE"] == "covariates" and by_name["VALUE"] == "values"
    assert {by_name[n] for n in ("PAD", "BOS", "EOS", "END_COVAR", "END_TS", "END_ADM", "SKIP_VISITS")} == {"structure"}


def test_val_max_windows_takes_a_recorded_seeded_sample():
    val = typed_windows(50, seed=1)
    cfg = quick_config(epochs=1, val_max_windows=12)
    a = train(init_model(model_config(), 0), typed_windows(40, 0), val, cfg, PAD, token_types=TOKEN_TYPES)
    b = train(init_model(model_config(), 0), typed_windows(40, 0), val, cfg, PAD, token_types=TOKEN_TYPES)
    assert a.val_windows == 12 and 12 <= a.val_tokens < sum(len(w) - 1 for w in val)
    assert a.best_val_loss == b.best_val_loss and a.unigram_baseline_by_type == b.unigram_baseline_by_type


def test_loss_weights_weight_training_targets_only():
    train_windows, val_windows = typed_windows(150, seed=0), typed_windows(30, seed=1)
    cfg = quick_config(epochs=6)
    runs = {}
    for name, weights in (("none", None), ("ones", np.ones(VOCAB)), ("no_codes", (np.arange(VOCAB) < FIRST_DX) * 1.0)):
        model = init_model(model_config(), 0)
        runs[name] = (train(model, train_windows, val_windows, cfg, PAD, token_types=TOKEN_TYPES,
                            loss_weights=weights), model)
    assert runs["none"][0].final_train_loss == runs["ones"][0].final_train_loss
    assert all(torch.equal(a, b) for a, b in zip(runs["none"][1].parameters(), runs["ones"][1].parameters()))
    # Zero weight on every code target: the codes are not learned, the rest still is.
    learned, unlearned = runs["none"][0].val_loss_by_type, runs["no_codes"][0].val_loss_by_type
    assert unlearned["codes"] > learned["codes"] + 1.5 and unlearned["codes"] > 0.9 * math.log(VOCAB)
    assert unlearned["covariates"] == pytest.approx(learned["covariates"], abs=0.3)
    with pytest.raises(ValueError, match="loss_weights"):
        train(init_model(model_config(), 0), train_windows, [], cfg, PAD, loss_weights=-np.ones(VOCAB))


# ---------------------------------------------------------------- early stopping, seeds


def test_early_stopping_fires_and_restores_the_best_weights():
    # Validation is noise the model never sees: fitting the grammar makes it worse after the start.
    rng = np.random.default_rng(3)
    noise = [np.concatenate([[BOS], rng.integers(FIRST_AGE, VOCAB, size=12), [EOS]]) for _ in range(32)]
    cfg = quick_config(epochs=50, eval_every=4, patience=2, learning_rate=1e-2)
    model = init_model(model_config(), 1)
    result = train(model, typed_windows(200, seed=2), noise, cfg, PAD)
    assert result.stopped_early and result.steps < result.total_steps
    assert result.best_step is not None and result.best_step < result.steps
    val = [h["val_loss"] for h in result.history if "val_loss" in h]
    assert result.best_val_loss == min(val) < val[-1]
    assert len(val) - 1 - val.index(min(val)) == 2  # exactly `patience` evaluations without improvement
    data = window_set(noise)
    again = evaluate(model, data, batches_of(pack_rows(data.lengths, N_CTX, None, cfg.pack_pool_windows), 4),
                     PAD, torch.device("cpu"), "fp32")
    assert again["loss"] == pytest.approx(result.best_val_loss, rel=1e-6)


def test_init_model_is_a_function_of_the_seed_only():
    cfg = model_config()
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = init_model(cfg, 5)
    assert torch.equal(torch.rand(3), before)  # the caller's RNG is untouched
    b, c = init_model(cfg, 5), init_model(cfg, 6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


def test_same_seed_same_run_different_seed_different_run():
    windows = typed_windows(80, seed=5)

    def run(seed: int, burn: int):
        torch.rand(burn)  # a different global RNG state: train() reseeds dropout itself
        model = init_model(model_config(dropout=0.1), seed)
        return train(model, windows, windows[:16], quick_config(epochs=2, seed=seed), PAD), model

    (ra, ma), (rb, mb), (rc, _) = run(9, 1), run(9, 50), run(10, 1)
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    assert ra.final_train_loss == rb.final_train_loss and ra.best_val_loss == rb.best_val_loss
    assert all(torch.equal(x, y) for x, y in zip(ma.parameters(), mb.parameters()))
    assert rc.final_train_loss != ra.final_train_loss


# ---------------------------------------------------------------- resume after a kill


RESUME_CONFIG = dict(epochs=8, batch_size=4, learning_rate=5e-3, warmup_steps=5, log_every=1, eval_every=10,
                     patience=None, checkpoint_every=10, seed=4)


def resume_job(checkpoint_dir: str | None, slow: float = 0.0):
    """The run of the resume test; `slow` s of sleep per log record let the test kill it mid-run."""
    torch.set_num_threads(1)
    model = init_model(model_config(dropout=0.1), seed=4)
    on_log = (lambda _record: time.sleep(slow)) if slow else None
    result = train(model, typed_windows(200, seed=6), typed_windows(30, seed=7), TrainConfig(**RESUME_CONFIG), PAD,
                   token_types=TOKEN_TYPES, checkpoint_dir=checkpoint_dir, on_log=on_log)
    return result, model


def test_a_killed_run_resumes_to_the_same_weights_as_an_unbroken_one(tmp_path):
    state_path = tmp_path / STATE_FILE
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.test_trainer import resume_job; " \
           f"resume_job({str(tmp_path)!r}, slow=0.02)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    saved_step = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if state_path.exists():
                saved_step = int(torch.load(state_path, weights_only=True)["step"])
                if saved_step >= 20:
                    break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the training process ended before it was killed"
    state = torch.load(state_path, weights_only=True)
    assert not state["finished"] and 20 <= state["step"] and state["step"] % 10 == 0

    messages: list[str] = []
    resumed_model = init_model(model_config(dropout=0.1), seed=4)
    resumed = train(resumed_model, typed_windows(200, seed=6), typed_windows(30, seed=7), TrainConfig(**RESUME_CONFIG),
                    PAD, token_types=TOKEN_TYPES, checkpoint_dir=tmp_path, log=messages.append)
    unbroken, unbroken_model = resume_job(None)
    assert resumed.resumed_from_step == state["step"] < resumed.steps == unbroken.steps
    assert any("resuming from step" in m for m in messages)
    assert resumed.final_train_loss == unbroken.final_train_loss
    assert resumed.best_val_loss == unbroken.best_val_loss and resumed.best_step == unbroken.best_step
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in unbroken.history]
    assert resumed.val_loss_by_type == unbroken.val_loss_by_type
    for (name, a), b in zip(resumed_model.state_dict().items(), unbroken_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.load(state_path, weights_only=True)["finished"]


def test_a_state_from_another_config_is_ignored_with_a_message(tmp_path):
    windows = typed_windows(60, seed=0)
    train(init_model(model_config(), 0), windows, [], quick_config(epochs=1, checkpoint_every=3), PAD,
          checkpoint_dir=tmp_path)
    assert (tmp_path / STATE_FILE).is_file()
    messages: list[str] = []
    result = train(init_model(model_config(), 0), windows, [], quick_config(epochs=1, learning_rate=1e-3), PAD,
                   checkpoint_dir=tmp_path, log=messages.append)
    assert result.resumed_from_step is None
    assert any("ignoring the training state" in m and "different config" in m for m in messages)
    # A corrupt file is ignored too, never half-used.
    (tmp_path / STATE_FILE).write_bytes(b"not a checkpoint")
    messages.clear()
    train(init_model(model_config(), 0), windows, [], quick_config(epochs=1), PAD, checkpoint_dir=tmp_path,
          log=messages.append)
    assert any("unreadable" in m for m in messages)


def test_training_state_holds_plain_tensors_and_containers_only(tmp_path):
    train(init_model(model_config(), 0), typed_windows(40, 0), typed_windows(8, 1), quick_config(epochs=1), PAD,
          token_types=TOKEN_TYPES, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)  # refuses anything pickled beyond plain data

    def plain(x) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (bool, int, float, str, torch.Tensor))

    assert plain(state)
    assert {"model", "optimizer", "step", "epoch", "batch_in_epoch", "best_state", "best_val", "evals_since_best",
            "history", "rng", "fingerprint"} <= set(state)
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temporary file behind
