"""Tests for the GPT, its KV cache, checkpoints, the trainer and the sampler (CPU, small models)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from synehrgy_assets.core.model import (
    GPT,
    GPTConfig,
    KVCache,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from synehrgy_assets.core.sampler import sample
from synehrgy_assets.core.trainer import TrainConfig, _bucketed_batches, collate, evaluate, lr_at, train

PAD, BOS, EOS = 0, 1, 2
FIRST_BODY = 3
VOCAB = 32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models gain nothing from 2 threads, and on a loaded CI box the thread barriers of
    OpenMP made training up to 20x slower; one thread keeps the timing stable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, n_ctx=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg))


def grammar_windows(n: int, seed: int) -> list[np.ndarray]:
    """bos, s, s+1, ... (length fixed by s), eos: deterministic after the first body token."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(FIRST_BODY, FIRST_BODY + 10, size=n)
    return [np.array([BOS, *grammar_body(int(s)), EOS], dtype=np.int64) for s in starts]


def grammar_body(start: int) -> list[int]:
    length = 3 + (start % 7) * 2
    return [FIRST_BODY + (start - FIRST_BODY + j) % (VOCAB - FIRST_BODY) for j in range(length)]


# ---------------------------------------------------------------- model


def test_lm_head_is_tied_to_token_embedding_and_counted_once():
    model = tiny_model()
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.lm_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    # An update through the head must be visible in the embedding.
    with torch.no_grad():
        model.lm_head.weight[5, 0] = 123.0
    assert model.tok_emb.weight[5, 0].item() == 123.0


def test_kv_cached_incremental_logits_match_full_forward():
    model = tiny_model(n_ctx=24).eval()
    idx = torch.randint(0, VOCAB, (3, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache.for_model(model, batch_size=3, max_len=14)
        pieces = [model(idx[:, :5], kv_cache=cache)[0]]      # prefill
        pieces.append(model(idx[:, 5:8], kv_cache=cache)[0])  # a chunk after a prefix (explicit mask path)
        for t in range(8, 14):                                  # one token per step
            pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert cache.length == 14 and cache.lengths.tolist() == [14, 14, 14]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_positions_offset_and_context_overflow_are_checked():
    model = tiny_model(n_ctx=8).eval()
    with pytest.raises(ValueError, match="n_ctx=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="n_ctx=8"):
        model(torch.zeros(1, 4, dtype=torch.long), positions_offset=5)


def test_loss_ignores_padding_targets_and_masked_positions():
    model = tiny_model().eval()
    gen = torch.Generator().manual_seed(2)
    row = torch.randint(3, VOCAB, (1, 10), generator=gen)
    tgt = torch.randint(3, VOCAB, (1, 10), generator=gen)
    with torch.no_grad():
        _, alone = model(row[:, :6], tgt[:, :6])
        padded_tgt = tgt.clone()
        padded_tgt[:, 6:] = -100
        _, with_ignore = model(row, padded_tgt)
        mask = torch.zeros_like(tgt, dtype=torch.bool)
        mask[:, :6] = True
        _, with_mask = model(row, tgt, loss_mask=mask)
    # Causal attention: positions < 6 do not see the tail, so only the targets decide the loss.
    torch.testing.assert_close(with_ignore, alone)
    torch.testing.assert_close(with_mask, alone)
    _, everything = model(row, tgt)
    assert not torch.isclose(everything, alone)


# ---------------------------------------------------------------- checkpoints


def test_safetensors_round_trip_gives_identical_logits_without_pickle(tmp_path, monkeypatch):
    model = tiny_model(seed=3).eval()
    save_checkpoint(model, tmp_path / "ckpt", extra={"vocab_hash": "abc", "step": 7})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]

    def refuse(*_args, **_kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = load_checkpoint(tmp_path / "ckpt", device="cpu")

    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.tok_emb.weight
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert read_checkpoint_config(tmp_path / "ckpt")["extra"] == {"vocab_hash": "abc", "step": 7}


def test_load_checkpoint_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------- trainer


def test_collate_pads_to_longest_and_ignores_padding():
    windows = [np.array([BOS, 5, 6, EOS]), np.array([BOS, 7, EOS]), np.array([BOS, 8, PAD, PAD])]
    inputs, targets = collate(windows, np.array([0, 1, 2]), pad_id=PAD)
    assert inputs.shape == targets.shape == (3, 3)
    assert inputs[1].tolist() == [BOS, 7, PAD]
    assert targets[1].tolist() == [7, EOS, -100]
    assert targets[2].tolist() == [8, -100, -100]  # pads inside a window are not targets


def test_lr_schedule_warms_up_then_decays_to_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, cfg) == pytest.approx(1e-4)


@pytest.fixture(scope="module")
def trained():
    model = tiny_model(seed=0, n_embd=64)
    logs: list[dict] = []
    result = train(
        model,
        grammar_windows(400, seed=0),
        grammar_windows(64, seed=1),
        TrainConfig(max_steps=100, batch_size=16, learning_rate=5e-3, warmup_steps=10, eval_every=25, eval_batches=4),
        pad_id=PAD,
        on_log=logs.append,
    )
    return model, result, logs


def test_training_learns_a_deterministic_grammar(trained):
    model, result, logs = trained
    val = [h["val_loss"] for h in result.history if "val_loss" in h]
    # Only the first body token is random (10 choices): the floor is about ln(10) / 12 ~ 0.2 nats.
    assert val[0] > 0.8 and val[-1] < 0.45, val
    assert result.best_val_loss == pytest.approx(min(val))
    assert math.isfinite(result.final_train_loss) and result.final_train_loss < 0.6
    assert result.steps == 100 and result.tokens_seen > 0 and result.tokens_per_second > 0
    assert result.device == "cpu" and result.precision == "fp32" and result.peak_memory_bytes > 0
    assert logs and {"step", "train_loss", "lr", "tokens_per_second"} <= set(logs[0])
    assert any("val_loss" in rec for rec in logs)
    # Greedy sampling from a conditioning prompt continues the grammar through the KV cache.
    out = sample(model, 2, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new_tokens=24, temperature=0.0, prompt=[8])
    for seq in out.sequences:
        assert seq.tolist() == [BOS, *grammar_body(8), EOS]


def test_training_is_deterministic_by_seed():
    windows = grammar_windows(64, seed=5)
    cfg = TrainConfig(max_steps=12, batch_size=8, learning_rate=3e-3, warmup_steps=2, eval_every=4, eval_batches=2)
    results, models = [], []
    for burn in (1, 50):
        model = tiny_model(seed=9, dropout=0.1)
        torch.rand(burn)  # a different global RNG state: train() must reseed dropout itself
        results.append(train(model, windows, windows[:16], cfg, pad_id=PAD))
        models.append(model)
    assert [h["train_loss"] for h in results[0].history] == [h["train_loss"] for h in results[1].history]
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_early_stopping_restores_best_weights_when_validation_worsens():
    # Validation is noise the model never sees: fitting the grammar makes it worse after the start.
    rng = np.random.default_rng(3)
    noise = [np.concatenate([[BOS], rng.integers(FIRST_BODY, VOCAB, size=12), [EOS]]) for _ in range(32)]
    cfg = TrainConfig(max_steps=200, batch_size=16, learning_rate=5e-3, warmup_steps=5, eval_every=5,
                      eval_batches=2, early_stopping_patience=2)
    model = tiny_model(seed=1)
    result = train(model, grammar_windows(200, seed=2), noise, cfg, pad_id=PAD)
    assert result.stopped_early and result.steps < 200
    assert result.best_step is not None and result.best_step < result.steps
    val = [h["val_loss"] for h in result.history if "val_loss" in h]
    assert result.best_val_loss == min(val) < val[-1]
    # The returned weights are the best ones: re-evaluating them reproduces best_val_loss.
    batches = _bucketed_batches(np.array([len(w) for w in noise]), 16, np.random.default_rng(cfg.seed + 1))[:2]
    again = evaluate(model, noise, batches, PAD, torch.device("cpu"), "fp32")
    assert again == pytest.approx(result.best_val_loss, rel=1e-6)


def test_train_rejects_bad_windows_with_their_index():
    too_long = [np.arange(40) % VOCAB]
    with pytest.raises(ValueError, match=r"train_windows\[0\] has 40 tokens"):
        train(tiny_model(), too_long, [], TrainConfig(max_steps=1), pad_id=PAD)
    out_of_vocab = [np.array([BOS, 5, EOS]), np.array([BOS, VOCAB + 3, EOS])]
    with pytest.raises(ValueError, match=r"train_windows\[1\] holds token ids outside"):
        train(tiny_model(), out_of_vocab, [], TrainConfig(max_steps=1, batch_size=2), pad_id=PAD)
