"""Tests of the continuous-batching sampler: per-row KV cache, refill, sliding window, forced
closures, top-p, determinism, and the synthesis check on forced closures (CPU, tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from synehrgy_assets.core.model import GPT, KVCache
from synehrgy_assets.core.sampler import _choose, prefill_rows, sample
from synehrgy_assets.core.tokens import GrammarConstraint, TokenVocabulary, decode
from synehrgy_assets.core.tokens.grammar import TokenType
from tests.helpers.toy_sampling import grammar_model, tail_roll, toy_vocabulary, vocab_kwargs
from tests.tiny_models import VOCAB, single_thread, tiny_model  # noqa: F401 (single_thread: autouse fixture)

PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def vocab() -> TokenVocabulary:
    return toy_vocabulary()


class AlternatingConstraint:
    """Fake grammar: odd positions draw from {3, 4}, even ones from {5, 6}; patient i must end after
    `targets[i]` body tokens with eos (patients take rows in order: `start`, then `restart`);
    after eos only pad. Records every token it is advanced with."""

    def __init__(self, targets: np.ndarray, vocab: int):
        self.targets = np.asarray(targets)
        self.vocab = vocab
        self.seen: list[np.ndarray] = []
        self.next = 0

    def start(self, batch_size):
        self.next = max(self.next, batch_size)
        return {"pos": np.zeros(batch_size, dtype=np.int64), "done": np.zeros(batch_size, dtype=bool),
                "target": self.targets[:batch_size].copy()}

    def restart(self, state, rows, like=None):
        rows = np.asarray(rows)
        state = {k: v.copy() for k, v in state.items()}
        state["pos"][rows] = like["pos"][0]
        state["done"][rows] = False
        state["target"][rows] = self.targets[self.next:self.next + len(rows)]
        self.next += len(rows)
        return state

    def take(self, state, rows):
        return {k: v[np.asarray(rows)] for k, v in state.items()}

    def allowed(self, state, remaining=None):
        body = state["pos"] - 1  # bos was position 0
        mask = np.zeros((len(body), self.vocab), dtype=bool)
        odd = body % 2 == 0
        mask[odd, 3] = mask[odd, 4] = True
        mask[~odd, 5] = mask[~odd, 6] = True
        must_end = body >= state["target"]
        if remaining is not None:
            assert (remaining >= 1).all()
            must_end |= remaining == 1
        mask[must_end] = False
        mask[must_end, EOS] = True
        mask[state["done"]] = False
        mask[state["done"], PAD] = True
        return mask

    def advance(self, state, tokens):
        self.seen.append(np.asarray(tokens).copy())
        done = state["done"] | (tokens == EOS)
        return {"pos": state["pos"] + ~state["done"], "done": done, "target": state["target"]}

    def finished(self, state):
        return state["done"]


class TorchAlternatingConstraint(AlternatingConstraint):
    """The same grammar, answering with torch tensors (as a constraint kept on the GPU does)."""

    def allowed(self, state, remaining=None):
        return torch.from_numpy(super().allowed(state, remaining))

    def advance(self, state, tokens):
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.numpy()
        return super().advance(state, tokens)


def reference_greedy(model: GPT, target: int, max_tokens: int, roll=None) -> list[int]:
    """Uncached greedy decoding of one patient under AlternatingConstraint, rolling like the sampler:
    when the fed context holds n_ctx tokens and one more must be fed, it becomes roll(so far)."""
    seq, context = [BOS], [BOS]
    with torch.no_grad():
        while True:
            body = len(seq) - 1
            logits = model(torch.tensor([context]))[0][0, -1]
            if body >= target or max_tokens - body == 1:
                allowed = [EOS]
            else:
                allowed = [3, 4] if body % 2 == 0 else [5, 6]
            choice = allowed[int(logits[allowed].argmax())]
            seq.append(choice)
            if choice == EOS or len(seq) - 1 == max_tokens:
                return seq
            if len(context) == model.config.n_ctx:
                context = list(roll(np.array(seq)))
            else:
                context.append(choice)


# ---------------------------------------------------------------- per-row KV cache


def test_per_row_cache_with_refill_and_prefill_matches_full_forward_of_each_row():
    table = [-1] * VOCAB
    table[BOS], table[3], table[4] = 0, 1, 2  # bos resets the condition, tokens 3 and 4 set it
    sets = [-1.0] * VOCAB
    sets[BOS], sets[5] = 0.0, 3.0  # bos sets the clock to 0, token 5 to 3; every token adds 0.75
    clocks = [{"name": "t", "add": [0.75] * VOCAB, "set": sets, "edges": [1, 2, 3, 5, 8]}]
    model = tiny_model(seed=2, n_ctx=24, condition_table=table, clocks=clocks)
    torch.nn.init.normal_(model.clock_emb[0].weight, std=0.5)  # clocks start at zero
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(3, VOCAB, n)) for n in (5, 9, 2)]
    for r in rows:
        r[0] = BOS
    cache = KVCache.for_model(model, 3)

    def check(logits):
        for b, r in enumerate(rows):
            full = model(torch.tensor([r]))[0][0, -1]
            torch.testing.assert_close(logits[b], full, rtol=1e-4, atol=1e-5)
            assert int(cache.lengths[b]) == len(r)
            assert int(cache.condition[b]) == int(model.conditions(torch.tensor([r]))[0, -1])
            assert float(cache.clocks[b, 0]) == pytest.approx(float(model.clock_values(torch.tensor([r]))[0, -1, 0]))

    with torch.no_grad():
        logits = prefill_rows(model, cache, torch.arange(3), [np.array(r) for r in rows])
        check(logits)
        for step in range(12):
            nxt = torch.from_numpy(rng.integers(3, VOCAB, 3))
            refill = step in (3, 8)
            if refill:  # row 1 takes a new patient while the others keep decoding
                cache.lengths[1] = 0  # it feeds junk at position 0, overwritten by the prefill
            logits = model(nxt[:, None], kv_cache=cache)[0][:, -1]
            for b in range(3):
                rows[b].append(int(nxt[b]))
            if refill:
                rows[1] = [BOS, *rng.integers(3, VOCAB, 4 + step)]
                logits[1] = prefill_rows(model, cache, torch.tensor([1]), [np.array(rows[1])])[0]
            check(logits)


# ---------------------------------------------------------------- continuous batching


def test_refill_keeps_every_row_busy_until_fewer_patients_remain_than_rows():
    model = tiny_model(seed=4)
    targets = np.array([1, 9, 3, 12, 2, 7, 0, 5, 11, 4])
    constraint = AlternatingConstraint(targets, VOCAB)
    progress = []
    out = sample(model, 10, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=20, constraint=constraint,
                 top_k=3, batch_size=4, seed=0, on_progress=lambda done, total: progress.append((done, total)))
    assert constraint.seen[0].tolist() == [BOS] * 4  # advanced through the prompt before sampling
    assert any((seen == PAD).any() for seen in constraint.seen)  # idle rows feed pad to the constraint
    assert len(constraint.seen[-1]) < 4  # the batch shrank in the tail
    for seq, target in zip(out.sequences, targets):  # in patient order
        body = seq[1:-1]
        assert seq[0] == BOS and seq[-1] == EOS and EOS not in body and PAD not in seq
        assert len(body) == target
        assert np.isin(body[0::2], [3, 4]).all() and np.isin(body[1::2], [5, 6]).all()
    busy, unfinished = out.step_rows.T
    assert (busy == np.minimum(4, unfinished)).all()
    assert out.steps == len(busy) and busy.sum() == out.tokens_generated == int((targets + 1).sum())
    # Rows compute: 4 per step until the batch shrinks to the busy rows in the tail.
    assert busy.sum() / (4 * out.steps) < out.row_utilization <= 1.0
    assert out.n_finished == 10 and out.n_forced_closures == 0 and out.n_rolls == 0
    assert progress[-1] == (10, 10) and [d for d, _ in progress] == sorted({d for d, _ in progress})


def test_numpy_and_torch_constraints_give_the_same_draws():
    model = tiny_model(seed=4)
    targets = np.array([2, 4, 6, 8, 1, 3])
    kwargs = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=10, top_k=None, seed=5, batch_size=4)
    a = sample(model, 6, constraint=AlternatingConstraint(targets, VOCAB), **kwargs).sequences
    b = sample(model, 6, constraint=TorchAlternatingConstraint(targets, VOCAB), **kwargs).sequences
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [len(x) - 2 for x in a] == targets.tolist()


def test_greedy_with_refill_and_rolls_matches_uncached_reference():
    model = tiny_model(seed=6, n_ctx=12)
    targets = np.array([3, 25, 7, 40, 12, 30])
    roll = tail_roll(5)
    out = sample(model, 6, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=35, temperature=0.0,
                 constraint=AlternatingConstraint(targets, VOCAB), roll=roll, batch_size=3)
    assert out.n_rolls > 0
    for seq, target in zip(out.sequences, targets):
        assert seq.tolist() == reference_greedy(model, int(target), 35, roll)


def test_greedy_sampler_matches_uncached_greedy_decoding():
    model = tiny_model(seed=6)
    out = sample(model, 3, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=12, temperature=0.0,
                 prompt=[7, 9], batch_size=2)
    seq = [BOS, 7, 9]
    with torch.no_grad():
        for _ in range(12):
            logits = model(torch.tensor([seq]))[0][0, -1]
            logits[[PAD, BOS]] = float("-inf")
            seq.append(int(logits.argmax()))
            if seq[-1] == EOS:
                break
    for got in out.sequences:
        assert got.tolist() == seq


def test_sampler_without_constraint_never_emits_pad_or_bos():
    model = tiny_model(seed=5)
    out = sample(model, 20, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=15, top_k=None,
                 batch_size=8)
    assert len(out.sequences) == 20
    for seq in out.sequences:
        assert seq[0] == BOS and PAD not in seq and BOS not in seq[1:]
        assert seq[-1] == EOS or len(seq) == 16
    assert out.n_finished == sum(int(s[-1] == EOS) for s in out.sequences)
    assert out.patients_per_second > 0 and out.tokens_per_second > 0


def test_sampler_reports_a_constraint_that_allows_nothing():
    class Stuck(AlternatingConstraint):
        def allowed(self, state, remaining=None):
            return np.zeros((len(state["pos"]), self.vocab), dtype=bool)

    with pytest.raises(RuntimeError, match="allowed no token for unfinished row 0"):
        sample(tiny_model(), 3, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=5,
               constraint=Stuck(np.zeros(3, dtype=np.int64), VOCAB))


# ---------------------------------------------------------------- sliding window, real grammar


@pytest.mark.parametrize("on_device", [False, True])
def test_sliding_window_generates_patients_longer_than_the_context_that_all_parse(vocab, on_device):
    model = grammar_model(vocab, n_ctx=64)
    constraint = GrammarConstraint(vocab, device=torch.device("cpu") if on_device else None)
    out = sample(model, 6, **vocab_kwargs(vocab), max_tokens_per_patient=300, constraint=constraint,
                 roll=tail_roll(30), batch_size=4, seed=1)
    lengths = np.array([len(s) for s in out.sequences])
    assert (lengths > 64).all() and lengths.max() <= 301
    assert out.n_rolls > 0
    _, report = decode(out.sequences, vocab, seed=0)
    assert report.n_valid == report.n_sequences == 6, report.reasons


def test_sliding_window_with_the_context_format(vocab):
    context = pytest.importorskip("synehrgy_assets.core.tokens.context")
    from synehrgy_assets.core.generation import generate_sequences

    model = grammar_model(vocab, n_ctx=64)
    roll = context.ContextFormat(vocab, 64).roll
    out = generate_sequences(model, vocab, 5, seed=2, batch_size=3, max_tokens_per_patient=250, roll=roll)
    assert out.n_rolls > 0 and max(len(s) for s in out.sequences) > 64
    _, report = decode(out.sequences, vocab, seed=0)
    assert report.n_valid == report.n_sequences == 5, report.reasons
    # "auto" is the same format.
    again = generate_sequences(model, vocab, 5, seed=2, batch_size=3, max_tokens_per_patient=250)
    assert all(np.array_equal(a, b) for a, b in zip(out.sequences, again.sequences))


def test_roll_output_is_checked():
    model = tiny_model(n_ctx=8)
    kwargs = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=20, top_k=None)
    with pytest.raises(ValueError, match="roll returned 8 tokens"):
        sample(model, 1, roll=lambda t: t[-8:], **kwargs)
    with pytest.raises(ValueError, match="last token"):
        sample(model, 1, roll=lambda t: t[:3], **kwargs)


def test_lengths_beyond_the_context_need_a_roll():
    model = tiny_model(n_ctx=16)
    with pytest.raises(ValueError, match="exceeds the model's n_ctx=16"):
        sample(model, 1, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=16)
    with pytest.raises(ValueError, match="n_ctx=16"):
        sample(model, 1, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=12, prompt=[5, 6, 7, 8])
    sample(model, 1, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=15)  # exactly n_ctx fits
    out = sample(model, 2, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=60, roll=tail_roll(4))
    assert all(s[-1] == EOS or len(s) == 61 for s in out.sequences)


# ---------------------------------------------------------------- forced closures


def closing_model(vocab: TokenVocabulary) -> GPT:
    """A random model with a head bias towards the tokens that close rows, visits and patients, so
    patients end on their own."""
    model = grammar_model(vocab)
    head = nn.Linear(model.config.n_embd, vocab.size, bias=True)
    head.weight = model.tok_emb.weight
    with torch.no_grad():
        head.bias.zero_()
        closing = np.isin(vocab.token_types, [TokenType.END_LABEL, TokenType.END_CODE, TokenType.END_TS,
                                              TokenType.EOS])
        head.bias[torch.from_numpy(closing)] = 10.0
    model.lm_head = head
    return model


def test_forced_closures_are_counted(vocab):
    constraint = GrammarConstraint(vocab)
    longest = int(max(d for d in constraint_distances() if d < 1 << 40))
    # doubled with the patient rules on: near the cap they let a stay end early
    assert constraint.max_closing_cost == 2 * longest
    assert GrammarConstraint(vocab, consistency=False).max_closing_cost == longest
    tight = sample(grammar_model(vocab), 8, **vocab_kwargs(vocab), max_tokens_per_patient=20,
                   constraint=constraint, roll=tail_roll(20), batch_size=4)
    assert tight.n_forced_closures == 8 and tight.forced.all() and tight.forced_closure_rate == 1.0
    assert max(len(s) for s in tight.sequences) <= 21
    _, report = decode(tight.sequences, vocab, seed=0)
    assert report.n_valid == 8
    generous = sample(closing_model(vocab), 8, **vocab_kwargs(vocab), max_tokens_per_patient=200,
                      constraint=GrammarConstraint(vocab), roll=tail_roll(20), batch_size=4)
    assert generous.n_forced_closures == 0 and not generous.forced.any() and generous.forced_closure_rate == 0.0
    assert generous.n_finished == 8


def constraint_distances():
    from synehrgy_assets.core.tokens.grammar import distance_to_end

    return distance_to_end()


def test_forced_flags_mark_exactly_the_patients_the_cap_closed():
    # The cap of 6 tokens leaves a body of 5: patients that wanted more are forced closures.
    targets = np.array([2, 9, 4, 12, 5, 6])
    out = sample(tiny_model(seed=3), 6, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=6,
                 constraint=AlternatingConstraint(targets, VOCAB), batch_size=2)
    assert out.forced.tolist() == (targets > 5).tolist()
    assert out.n_forced_closures == 3 and out.forced_closure_rate == 0.5
    assert [len(s) - 2 for s in out.sequences] == np.minimum(targets, 5).tolist()


# ---------------------------------------------------------------- top-k, top-p, determinism


def test_top_p_towards_zero_and_top_k_one_are_greedy():
    model = tiny_model(seed=8)
    kwargs = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=12, prompt=[4], batch_size=3)
    greedy = sample(model, 4, temperature=0.0, **kwargs).sequences
    top1 = sample(model, 4, temperature=1.5, top_k=1, seed=3, **kwargs).sequences
    nucleus = sample(model, 4, temperature=1.5, top_k=None, top_p=1e-6, seed=3, **kwargs).sequences
    both = sample(model, 4, temperature=1.5, top_k=10, top_p=1e-6, seed=4, **kwargs).sequences
    for other in (top1, nucleus, both):
        assert all(np.array_equal(a, b) for a, b in zip(greedy, other))


def test_top_p_keeps_the_smallest_set_reaching_p_after_top_k():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, float("-inf")]]).repeat(400, 1)  # p = .64 .24 .09 .03 0
    gen = torch.Generator().manual_seed(0)
    assert set(_choose(logits, 1.0, None, 0.5, gen).tolist()) == {0}
    assert set(_choose(logits, 1.0, None, 0.8, gen).tolist()) == {0, 1}
    assert set(_choose(logits, 1.0, None, 0.95, gen).tolist()) == {0, 1, 2}
    assert set(_choose(logits, 1.0, None, 1.0, gen).tolist()) == {0, 1, 2, 3}
    assert set(_choose(logits, 1.0, 2, 0.99, gen).tolist()) == {0, 1}  # top-k first
    # After top-k 2 the probabilities renormalize (.73, .27): p = 0.7 keeps the top token only.
    assert set(_choose(logits, 1.0, 2, 0.7, gen).tolist()) == {0}


@pytest.mark.parametrize("bad", [dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-0.1), dict(top_k=0),
                                 dict(temperature=-1.0), dict(batch_size=0), dict(max_tokens_per_patient=0),
                                 dict(roll="tail")])
def test_bad_arguments_are_refused(bad):
    kwargs = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=8)
    with pytest.raises(ValueError):
        sample(tiny_model(), 2, **{**kwargs, **bad})


def test_sampling_is_deterministic_by_seed(vocab):
    model = grammar_model(vocab, n_ctx=64)
    kwargs = dict(**vocab_kwargs(vocab), max_tokens_per_patient=120, roll=tail_roll(30), batch_size=3,
                  top_k=40, top_p=0.9)

    def run(seed):
        return sample(model, 7, constraint=GrammarConstraint(vocab, device=torch.device("cpu")), seed=seed,
                      **kwargs)

    a, b, c = run(11), run(11), run(12)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert a.forced.tolist() == b.forced.tolist() and a.n_rolls == b.n_rolls
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))


def test_grammar_restart_and_take_rows(vocab):
    for device in (None, torch.device("cpu")):
        c = GrammarConstraint(vocab, device=device)
        like = c.advance(c.start(1), [vocab.bos_id])
        state = c.start(3)
        state = c.advance(state, [vocab.bos_id] * 3)
        age = int(vocab.ids_of_type(TokenType.AGE)[0])
        state = c.advance(state, [age] * 3)
        last = state.last
        state = c.restart(state, [0, 2], like)
        phase = np.asarray(state.phase.tolist())
        assert phase.tolist() == [TokenType.BOS, TokenType.AGE, TokenType.BOS]
        assert np.asarray(state.n_visits.tolist()).tolist() == [0, 1, 0]
        assert np.asarray(last.tolist()).tolist() == [age] * 3  # the tokens passed in are not modified
        sub = c.take(state, [1, 0])
        assert np.asarray(sub.phase.tolist()).tolist() == [TokenType.AGE, TokenType.BOS]
        assert tuple(sub.used_codes.shape) == (2, state.used_codes.shape[1])
        fresh = c.restart(state, [1])
        assert int(fresh.phase[1]) == c.start(1).phase[0]


# ---------------------------------------------------------------- synthesis check


def test_forced_closure_rate_check_fails_on_a_high_rate_and_passes_on_a_low_one(tmp_path):
    from synehrgy_assets.defs.synthesis import MAX_FORCED_CLOSURE_RATE, forced_closure_rate
    from synehrgy_assets.resources import WorkspaceResource

    workspace = WorkspaceResource(home=str(tmp_path))
    folder = workspace.layout.synthetic_sequences
    folder.mkdir(parents=True)

    def check(provenance: dict):
        (folder / "provenance.json").write_text(json.dumps(provenance))
        return forced_closure_rate(workspace=workspace)

    bad = check({"n_patients": 100, "n_forced_closures": 30, "forced_closure_rate": 0.3})
    assert not bad.passed and bad.metadata["forced_closure_rate"].value == 0.3
    good = check({"n_patients": 1000, "n_forced_closures": 2, "forced_closure_rate": 0.002})
    assert good.passed and good.metadata["max_forced_closure_rate"].value == MAX_FORCED_CLOSURE_RATE
    assert not check({"n_patients": 10}).passed  # written before forced closures were recorded
