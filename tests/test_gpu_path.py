"""The kernels a GPU needs, checked on CPU against the path they replace: FlexAttention block masks
for packed rows, a training forward that traces without graph breaks, a decode step that reads
nothing back from the device, and the batch collated one step ahead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import flex_attention as flex_mod

from synehrgy_assets.core import attention
from synehrgy_assets.core import model as model_mod
from synehrgy_assets.core.model import KVCache
from synehrgy_assets.core.packing import OneAhead, collate_packed, pack_rows
from synehrgy_assets.core.sampler import sample
from synehrgy_assets.core.tokens import GrammarConstraint
from synehrgy_assets.core.trainer import init_model, train
from tests.helpers.toy_windows import (BOS, EOS, FIRST_DX, N_CTX, PAD, VOCAB, model_config, quick_config, toy_clocks,
                                      typed_window, typed_windows)
from tests.helpers.toy_sampling import grammar_model, tail_roll, toy_vocabulary, vocab_kwargs
from tests.tiny_models import single_thread  # noqa: F401 (autouse fixture)


class HostReads(torch.overrides.TorchFunctionMode):
    """Counts tensor calls that bring a device value to the host (a sync each on CUDA)."""

    NAMES = {"item", "tolist", "__int__", "__float__", "__bool__", "__index__", "nonzero", "cpu"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.NAMES:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


def packed_batch(conditioned: bool):
    table = clocks = None
    if conditioned:
        table = [-1] * VOCAB
        table[BOS], table[FIRST_DX], table[FIRST_DX + 1] = 0, 1, 2
        clocks = toy_clocks()
    model = init_model(model_config(condition_table=table, clocks=clocks), seed=3).eval()
    windows = typed_windows(40, seed=4) + [np.array([BOS, 5, EOS]), typed_window(12)[:N_CTX + 1]]
    rows = pack_rows(np.array([len(w) for w in windows]), N_CTX, np.random.default_rng(0), pool=1000)
    assert max(len(r) for r in rows) >= 3  # rows really hold several windows
    batch = collate_packed(windows, np.zeros(len(windows), dtype=np.int64), rows, N_CTX, PAD)
    tensors = {"idx": torch.from_numpy(batch.inputs), "targets": torch.from_numpy(batch.targets),
               "positions": torch.from_numpy(batch.positions), "segments": torch.from_numpy(batch.segments)}
    return model, tensors


@pytest.fixture(scope="module")
def vocab():
    return toy_vocabulary()


@pytest.fixture
def eager_flex(monkeypatch):
    """FlexAttention without compilation (its reference path; CPU inductor would take tens of seconds)."""
    build = attention.create_block_mask
    monkeypatch.setattr(attention, "create_block_mask", lambda *a, **kw: build(*a, **{**kw, "_compile": False}))
    monkeypatch.setattr(attention, "_compiled_flex", flex_mod.flex_attention)


@pytest.mark.parametrize("conditioned", [False, True])
def test_flex_block_masks_compute_what_the_dense_mask_computes(monkeypatch, eager_flex, conditioned):
    model, t = packed_batch(conditioned)
    with torch.no_grad():
        monkeypatch.setenv(model_mod.PACKED_ATTENTION_ENV, "sdpa")
        dense_logits, dense = model(**t, reduction="none")
        monkeypatch.setenv(model_mod.PACKED_ATTENTION_ENV, "flex")
        flex_logits, flex = model(**t, reduction="none")
    torch.testing.assert_close(flex_logits, dense_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    # The block mask really masks: attending across windows changes the result.
    with torch.no_grad():
        monkeypatch.setenv(model_mod.PACKED_ATTENTION_ENV, "sdpa")
        _, one_segment = model(**{**t, "segments": torch.zeros_like(t["segments"])}, reduction="none")
    assert (one_segment - dense).abs().max() > 1e-3


def test_the_backend_choice_follows_the_device_and_refuses_unknown_names(monkeypatch):
    monkeypatch.delenv(model_mod.PACKED_ATTENTION_ENV, raising=False)
    assert model_mod.packed_attention_backend("cpu") == "sdpa"  # the dense mask is faster on CPU
    assert model_mod.packed_attention_backend("cuda") == "flex"
    monkeypatch.setenv(model_mod.PACKED_ATTENTION_ENV, "flash")
    with pytest.raises(ValueError, match="SYNEHRGY_PACKED_ATTENTION='flash'"):
        model_mod.packed_attention_backend("cpu")


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_the_packed_training_forward_traces_as_one_graph(monkeypatch, backend):
    import torch._dynamo

    monkeypatch.setenv(model_mod.PACKED_ATTENTION_ENV, backend)
    model, t = packed_batch(conditioned=True)
    torch._dynamo.reset()
    try:
        with torch.no_grad():  # FlexAttention has no CPU backward; tracing the forward is the point
            explained = torch._dynamo.explain(model)(**t, reduction="none")
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_a_decode_step_reads_nothing_back_when_the_cache_has_host_lengths(vocab):
    model = grammar_model(vocab)
    cache = KVCache.for_model(model, 3)
    with torch.no_grad():
        model(torch.full((3, 4), vocab.bos_id), kv_cache=cache)
        nxt = torch.full((3, 1), vocab.bos_id)
        with HostReads() as without:
            model(nxt, kv_cache=cache)
        cache.host_lengths = cache.lengths.numpy().copy()
        with HostReads() as with_mirror:
            model(nxt, kv_cache=cache)
    assert len(without.reads) >= 2  # the counter sees the reads it must: the n_ctx check and the span
    assert with_mirror.reads == []
    assert (cache.host_lengths == cache.lengths.numpy()).all()


def test_the_sampler_keeps_the_host_lengths_equal_and_samples_what_it_sampled_without_them(vocab, monkeypatch):
    model = grammar_model(vocab, n_ctx=64)
    kw = dict(**vocab_kwargs(vocab), max_tokens_per_patient=150, roll=tail_roll(30), batch_size=4, seed=3)
    checked = []
    begin = KVCache.begin

    def checked_begin(self, t):
        if self.host_lengths is not None:
            assert (self.host_lengths == self.lengths.numpy()).all(), (self.host_lengths, self.lengths)
            checked.append(t)
        return begin(self, t)

    monkeypatch.setattr(KVCache, "begin", checked_begin)
    # 7 patients on 4 rows: refills, rolls past n_ctx and the shrinking tail all run.
    new = sample(model, 7, constraint=GrammarConstraint(vocab, device=torch.device("cpu")), **kw)
    assert new.n_rolls > 0 and len(checked) > 100
    monkeypatch.setattr(KVCache, "max_length", lambda self: int(self.lengths.max()))  # device lengths only
    old = sample(model, 7, constraint=GrammarConstraint(vocab, device=torch.device("cpu")), **kw)
    assert [s.tolist() for s in new.sequences] == [s.tolist() for s in old.sequences]


def test_collating_one_batch_ahead_trains_exactly_as_collating_in_line():
    windows, val = typed_windows(60, seed=1), typed_windows(12, seed=2)
    runs = []
    for prefetch in (False, True):
        model = init_model(model_config(), 0)
        res = train(model, windows, val, quick_config(epochs=3, prefetch=prefetch, log_every=1), pad_id=PAD)
        runs.append(([h["train_loss"] for h in res.history], res.best_val_loss, model.state_dict()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    for name, p in runs[0][2].items():
        assert torch.equal(p, runs[1][2][name]), name


def test_one_ahead_recomputes_a_batch_it_did_not_prepare():
    calls = []

    def make(x):
        calls.append(x)
        return x * 2

    ahead = OneAhead(make)
    try:
        ahead.ahead(("e", 1), 5)
        assert ahead.get(("e", 1), 5) == 10
        ahead.ahead(("e", 2), 6)
        assert ahead.get(("e", 3), 7) == 14  # another key: the prepared one is dropped
        assert calls.count(7) == 1
    finally:
        ahead.close()
    assert OneAhead(make, enabled=False).get("k", 4) == 8


def test_on_an_accelerator_a_decode_step_reads_back_only_the_sampled_tokens(vocab, monkeypatch):
    """The grammar's state and masks stay on the sampler's device: with its token checks as device
    asserts (what it does on CUDA), the one host read of a decode step is the sampler's copy of the
    sampled tokens. On the CPU the checks read the tokens back to raise a readable error."""
    model = grammar_model(vocab, n_ctx=128)
    kw = dict(**vocab_kwargs(vocab), max_tokens_per_patient=64, batch_size=16, seed=0, device=torch.device("cpu"))

    def reads_per_run(device_checks: bool):
        constraint = GrammarConstraint(vocab, device=torch.device("cpu"))
        if device_checks:
            monkeypatch.setattr(constraint, "_checks_on_host", lambda: False)
        sample(model, 32, constraint=constraint, **kw)  # the prompt's template cache, outside the count
        with HostReads() as counted:
            res = sample(model, 32, constraint=constraint, **kw)
        return counted.reads, res.steps

    reads, steps = reads_per_run(device_checks=True)
    assert steps > 50 and reads.count("cpu") == steps  # the sampled tokens, one copy per step
    assert len(reads) - steps <= 2, sorted(set(reads))  # the prompt's n_ctx check, once per run
    host_checked, steps = reads_per_run(device_checks=False)
    assert len(host_checked) >= 3 * steps  # the counter sees the host checks' reads when they run


def test_the_device_assert_refuses_a_token_the_grammar_forbids(vocab, monkeypatch):
    constraint = GrammarConstraint(vocab, device=torch.device("cpu"))
    monkeypatch.setattr(constraint, "_checks_on_host", lambda: False)
    state = constraint.start(2)
    with pytest.raises(RuntimeError, match="not allowed by the grammar"):
        constraint.advance(state, torch.tensor([vocab.eos_id, vocab.eos_id]))  # </s> before <s>
