"""Tests for the GPT, its KV cache, checkpoints, training it on a grammar and the sampler (CPU, small models).

The trainer's own tests (packing, budgets, early stopping, resume) are in test_trainer.py.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from synehrgy_assets.core.model import (
    KVCache,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from synehrgy_assets.core.sampler import sample
from synehrgy_assets.core.trainer import TrainConfig, train
from tests.tiny_models import VOCAB, single_thread, tiny_model  # noqa: F401 (single_thread: autouse fixture)

PAD, BOS, EOS = 0, 1, 2
FIRST_BODY = 3






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


def clock(add: float = 1.0, sets: dict | None = None, edges=(1, 2, 4, 8)) -> dict:
    table = [-1.0] * VOCAB
    for token, value in (sets or {}).items():
        table[token] = value
    return {"name": "c", "add": [add] * VOCAB, "set": table, "edges": list(edges)}


def test_clock_values_add_until_a_token_sets_them_and_carry_through_the_cache():
    # token 5 sets the clock to 10 (adding nothing), every other token adds 0.5
    model = tiny_model(n_ctx=24, clocks=[clock(0.5, {5: 10.0})]).eval()
    idx = torch.tensor([[1, 3, 3, 5, 3, 3, 3], [3, 5, 5, 3, 1, 1, 1]])
    values = model.clock_values(idx)[..., 0]
    assert values[0].tolist() == [0.5, 1.0, 1.5, 10.0, 10.5, 11.0, 11.5]
    assert values[1].tolist() == [0.5, 10.0, 10.0, 10.5, 11.0, 11.5, 12.0]
    assert model.clock_values(idx[:, :2], initial=torch.tensor([[4.0], [4.0]]))[..., 0].tolist() == [
        [4.5, 5.0], [4.5, 10.0]]
    with torch.no_grad():
        plain = tiny_model(n_ctx=24).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        torch.testing.assert_close(plain(idx)[0], model(idx)[0])  # a new clock starts as a no-op
        torch.nn.init.normal_(model.clock_emb[0].weight, std=0.5)
        # ... a trained one changes the logits, and the cache carries it across chunks
        full, _ = model(idx)
        cache = KVCache.for_model(model, batch_size=2, max_len=7)
        pieces = [model(idx[:, :2], kv_cache=cache)[0]]
        pieces += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(2, 7)]
        assert cache.clocks[:, 0].tolist() == [11.5, 12.0]
        torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(plain(idx)[0], full)


def test_clock_config_is_checked():
    with pytest.raises(ValueError, match=r"clocks\[0\] \(c\): add and set must hold vocab_size=32"):
        tiny_model(clocks=[{**clock(), "add": [1.0] * 3}])
    with pytest.raises(ValueError, match="edges must be strictly ascending"):
        tiny_model(clocks=[clock(edges=(1, 1, 2))])
    with pytest.raises(ValueError, match=r"lacks \['edges'\]"):
        tiny_model(clocks=[{k: v for k, v in clock().items() if k != "edges"}])


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
    model = tiny_model(seed=3, clocks=[clock(0.5, {5: 3.0})]).eval()
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


@pytest.fixture(scope="module")
def trained():
    model = tiny_model(seed=0, n_embd=64)
    logs: list[dict] = []
    result = train(
        model,
        grammar_windows(400, seed=0),
        grammar_windows(64, seed=1),
        TrainConfig(epochs=10, max_steps=100, batch_size=4, learning_rate=5e-3, warmup_steps=10, eval_every=10,
                    patience=None),
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
    assert result.steps == result.total_steps == 100 and result.tokens_seen > 0 and result.tokens_per_second > 0
    assert result.device == "cpu" and result.precision == "fp32" and result.peak_memory_bytes > 0
    assert logs and {"step", "train_loss", "lr", "tokens_per_second"} <= set(logs[0])
    assert any("val_loss" in rec for rec in logs)
    # Greedy sampling from a conditioning prompt continues the grammar through the KV cache.
    out = sample(model, 2, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=24, temperature=0.0, prompt=[8])
    for seq in out.sequences:
        assert seq.tolist() == [BOS, *grammar_body(8), EOS]
