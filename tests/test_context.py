"""The context format for long patients and the training windows built with it (docs/tokens.md §6)."""

import json

import numpy as np
import pytest

from synehrgy_assets.core.tokens import TokenVocabulary, VocabularyConfig, decode, encode
from synehrgy_assets.core.tokens.context import ContextFormat
from synehrgy_assets.core.tokens.grammar import TokenType, find_violations
from synehrgy_assets.core.tokens.windows import ContextWindows, context_windows, reference_fraction
from synehrgy_assets.defs import tokens as token_assets
from synehrgy_assets.resources import WorkspaceResource
from tests.helpers.toy_cohort import synthetic_cohort

T = TokenType


@pytest.fixture(scope="module")
def cohort():
    # Multi-visit patients with long stays: most patients need several windows at n_ctx 128.
    return synthetic_cohort(120, seed=5, min_visits=1, max_visits=4, rows_per_visit=40)


@pytest.fixture(scope="module")
def vocab(cohort):
    return TokenVocabulary.fit(cohort, VocabularyConfig())


@pytest.fixture(scope="module")
def seqs(cohort, vocab):
    return encode(cohort, vocab)


def _targets_by_patient(windows: ContextWindows, n_patients: int) -> list[list[np.ndarray]]:
    out = [[] for _ in range(n_patients)]
    for i in range(len(windows)):
        out[windows.patient[i]].append(windows.window(i)[windows.context_lengths[i]:])
    return out


@pytest.mark.parametrize("n_ctx", [96, 128, 512, 100000])
def test_every_train_token_is_a_target_exactly_once_in_order(seqs, vocab, n_ctx):
    windows = context_windows(seqs, vocab, n_ctx)
    lengths = np.diff(windows.offsets)
    assert np.all(lengths <= n_ctx + 1) and np.all(windows.context_lengths >= 1)
    assert np.all(windows.context_lengths < lengths), "every window has a new token"
    for i, parts in enumerate(_targets_by_patient(windows, len(seqs))):
        np.testing.assert_array_equal(np.concatenate(parts), seqs.patient(i)[1:])
    assert windows.stats["n_target_tokens"] == len(seqs.tokens) - len(seqs)
    assert windows.stats["reference_fraction"] == pytest.approx(reference_fraction(seqs, n_ctx))
    if n_ctx == 100000:
        assert len(windows) == len(seqs)


@pytest.mark.parametrize("n_ctx", [96, 128, 512])
def test_grammar_accepts_every_window_and_each_carries_its_header(seqs, vocab, n_ctx):
    windows = context_windows(seqs, vocab, n_ctx)
    assert int((np.diff(seqs.offsets) > n_ctx + 1).sum()) > 10, "the fixture must need multi-window patients"
    v = find_violations(windows.tokens, windows.offsets, vocab.token_types, vocab.value_rank, windows=True)
    assert v.valid.all(), v.counts()
    assert windows.stats["n_windows_rejected_by_grammar"] == 0
    assert windows.header_in_context_share == 1.0
    # Small contexts drop the oldest visits' headers first (marked by <skip-visits>).
    assert windows.history_in_context_share >= (0.95 if n_ctx >= 512 else 0.3)
    types = vocab.token_types
    for i in range(len(windows)):
        w = windows.window(i)
        assert w[0] == vocab.bos_id
        new = w[windows.context_lengths[i]:]
        if (types[new] == T.VALUE).any() or (types[new] == T.DT).any():
            # New measurement tokens: the window holds a full header (covariates .. </code>) with a
            # MORTALITY token before them.
            ctx = w[:windows.context_lengths[i] + int(np.argmax(np.isin(types[new], (T.VALUE, T.DT))))]
            assert (types[ctx] == T.MORTALITY).any() and (types[ctx] == T.END_CODE).any()


def test_history_is_compressed_headers_and_markers_say_what_is_left_out(seqs, vocab):
    fmt = ContextFormat(vocab, 128)
    lengths = np.diff(seqs.offsets)
    types = vocab.token_types
    i = int(np.argmax(lengths))
    seq = seqs.patient(i).astype(np.int64)
    lay = fmt.layout(seq)
    assert len(lay.starts) >= 3, "the longest fixture patient has several visits"
    # A window starting in the middle of the last visit's rows.
    last = len(lay.starts) - 2  # the final start is the </s> position
    p = int(lay.row_starts[np.searchsorted(lay.row_starts, lay.header_end[last] + 1) + 5])
    start = fmt.window_start(seq, p, lay)
    prefix = start.prefix
    assert prefix[-2] == vocab.skip_rows_id, "earlier rows of the visit are left out"
    assert vocab.token_types[prefix[-1]] == T.ELAPSED
    # ... and ELAPSED bins the hours those rows covered (the DT bin medians summed).
    skipped = seq[lay.header_end[last] + 1:start.c]
    hours = vocab.dt_hours[skipped].sum()
    assert prefix[-1] == vocab.elapsed_token(hours) and hours > 0
    n_visits_in_prefix = int((types[prefix] == T.AGE).sum())
    assert n_visits_in_prefix <= last + 1
    assert int((types[prefix] == T.ELAPSED).sum()) == n_visits_in_prefix, "one ELAPSED per compressed visit"
    # Compressed visits hold no measurement token.
    assert not np.isin(types[prefix], (T.VALUE, T.DT)).any()
    if not start.history_complete:
        assert prefix[1] == vocab.skip_visits_id


def test_roll_is_the_training_window_context(seqs, vocab):
    """The sampler's rolled context at any point equals what a training window starting there sees."""
    fmt = ContextFormat(vocab, 96)
    for i in np.argsort(np.diff(seqs.offsets))[-5:]:
        seq = seqs.patient(int(i)).astype(np.int64)
        lay = fmt.layout(seq)
        for p in range(2, len(seq), 7):
            ctx = fmt.roll(seq[:p])
            start = fmt.window_start(seq, p, lay)
            np.testing.assert_array_equal(ctx, np.concatenate([start.prefix, seq[start.c:p]]))
            assert ctx[-1] == seq[p - 1] and len(ctx) <= 96 - 96 // 4
            v = find_violations(ctx, np.array([0, len(ctx)]), vocab.token_types, vocab.value_rank,
                                windows=True)
            assert v.valid[0], (p, v.counts())


@pytest.mark.parametrize("n_ctx", [16, 24])
def test_context_shares_fall_when_the_context_is_too_small(seqs, vocab, n_ctx):
    windows = context_windows(seqs, vocab, n_ctx)
    assert windows.header_in_context_share < 0.99
    assert windows.history_in_context_share < 0.95
    for i, parts in enumerate(_targets_by_patient(windows, len(seqs))):  # still nothing dropped
        np.testing.assert_array_equal(np.concatenate(parts), seqs.patient(i)[1:])


def test_markers_never_parse_in_a_patient_sequence(seqs, vocab):
    seq = seqs.patient(0).astype(np.int64)
    h_end = int(np.flatnonzero(seq == vocab.end_code_id)[0])
    bad = np.concatenate([seq[:h_end + 1], [vocab.skip_rows_id], seq[h_end + 1:]])
    _, report = decode([seq, bad], vocab)
    assert report.valid.tolist() == [True, False]
    assert report.reasons == {"context marker in a patient sequence": 1}


def test_windows_save_load_and_subset(seqs, vocab, tmp_path):
    windows = context_windows(seqs, vocab, 128)
    windows.save(tmp_path / "w")
    loaded = ContextWindows.load(tmp_path / "w")
    assert loaded.n_windows == windows.n_windows and loaded.stats == json.loads(json.dumps(windows.stats))
    np.testing.assert_array_equal(loaded.context_lengths, windows.context_lengths)
    for a, b in zip(loaded.arrays(), windows.arrays()):
        np.testing.assert_array_equal(a, b)
    subset = np.arange(0, len(seqs), 3)
    sub = context_windows(seqs, vocab, 128, subset=subset)
    assert set(sub.patient.tolist()) == set(subset.tolist())
    assert sub.stats["n_tokens"] == int(seqs.lengths[subset].sum())


def _write_summary(home, **train):
    ws = WorkspaceResource(home=str(home))
    base = {"header_in_context_share": 1.0, "history_in_context_share": 1.0,
            "windows_rejected_by_grammar": 0, "windows": 10}
    payload = {"n_ctx": 64, "vocabulary_version": "x", "splits": {"train": {**base, **train}}}
    path = ws.layout.token_summary
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return ws


@pytest.mark.parametrize("check, field, bad", [
    (token_assets.train_tokens_with_visit_header, "header_in_context_share", 0.9),
    (token_assets.train_tokens_with_full_history, "history_in_context_share", 0.5),
    (token_assets.training_windows_parse, "windows_rejected_by_grammar", 3),
])
def test_context_checks_fail_on_bad_windows(tmp_path, check, field, bad):
    good = check(_write_summary(tmp_path / "good"))
    assert good.passed
    failed = check(_write_summary(tmp_path / "bad", **{field: bad}))
    assert not failed.passed


def test_checks_computed_from_real_windows_fail_at_tiny_context(seqs, vocab, tmp_path):
    """The same figures the asset writes: n_ctx 16 cannot hold a header, so both checks fail."""
    w = context_windows(seqs, vocab, 16)
    ws = _write_summary(tmp_path, header_in_context_share=w.header_in_context_share,
                        history_in_context_share=w.history_in_context_share,
                        windows_rejected_by_grammar=w.stats["n_windows_rejected_by_grammar"])
    assert not token_assets.train_tokens_with_visit_header(ws).passed
    assert not token_assets.train_tokens_with_full_history(ws).passed
    assert not token_assets.training_windows_parse(ws).passed


def test_generation_cap_covers_the_999th_percentile_and_hides_the_maximum():
    lengths = np.arange(1, 10001)
    cap = token_assets.max_tokens_per_patient_default(lengths)
    assert cap >= np.percentile(lengths, 99.9) and cap % 1024 == 0
    assert token_assets.max_tokens_per_patient_default(np.array([5000, 7000])) % 1024 == 0


@pytest.mark.parametrize("n_ctx", [128, 512])
def test_windows_give_the_model_the_clocks_of_the_whole_patient(seqs, vocab, n_ctx):
    """The clocks (hours into the stay, the visit's diagnoses and procedures so far) at every target
    of every window equal those over the whole patient: the codes exactly (every window repeats its
    visit's header), the hours within half the ELAPSED bin a window that skips rows restarts from."""
    import torch

    from synehrgy_assets.core.model import GPT, GPTConfig
    from synehrgy_assets.core.tokens.vocabulary import ELAPSED_EDGES

    clocks = vocab.clocks()
    assert [c["name"] for c in clocks] == ["stay_hours", "diagnoses", "procedures"]
    model = GPT(GPTConfig(vocab_size=vocab.size, n_ctx=8, n_layer=1, n_head=1, n_embd=8, clocks=clocks))
    windows = context_windows(seqs, vocab, n_ctx)
    per_patient = [[] for _ in range(len(seqs))]
    for i in range(len(windows)):
        w = torch.from_numpy(windows.window(i).astype(np.int64))[None]
        per_patient[windows.patient[i]].append(model.clock_values(w)[0, windows.context_lengths[i]:].numpy())
    edges = np.asarray(ELAPSED_EDGES)
    n_skipping = 0
    for i, parts in enumerate(per_patient):
        seq = torch.from_numpy(seqs.patient(i).astype(np.int64))[None]
        full = model.clock_values(seq)[0, 1:].numpy()
        got = np.concatenate(parts)
        np.testing.assert_array_equal(got[:, 1:], full[:, 1:])
        width = np.diff(edges)[np.clip(np.searchsorted(edges, full[:, 0], side="right") - 1, 0, len(edges) - 2)]
        assert np.all(np.abs(got[:, 0] - full[:, 0]) <= width / 2 + 1e-3)
        n_skipping += int((np.abs(got[:, 0] - full[:, 0]) > 1e-3).any())
    assert n_skipping > 0 or n_ctx == 512
    # At every visit's </ts> the stay clock is the stay's hours on the DT scale; the code clocks its codes.
    seq = seqs.patient(0).astype(np.int64)
    values = model.clock_values(torch.from_numpy(seq)[None])[0].numpy()
    ends = np.flatnonzero(seq == vocab.id_of("</ts>"))
    starts = np.flatnonzero(np.isin(vocab.token_types[seq], [T.GAP_VISIT, T.AGE]) &
                            ~np.isin(np.r_[-1, vocab.token_types[seq[:-1]]], [T.GAP_VISIT]))
    end_codes = np.flatnonzero(seq == vocab.id_of("</code>"))
    for s, e, c in zip(starts, ends, end_codes):
        visit = seq[s:e]
        assert values[e, 0] == pytest.approx(vocab.dt_hours[visit].sum())
        # The code counts hold the visit's codes just before </code>, and 0 from </code> on.
        assert values[c - 1, 1] == (vocab.token_types[visit] == T.DX).sum()
        assert values[c - 1, 2] == (vocab.token_types[visit] == T.PX).sum()
        assert values[c, 1] == values[e, 2] == 0
