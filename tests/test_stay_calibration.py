"""The stay-end calibration (core/stay_calibration.py): rows per stay counted from tokens, and a
`</ts>` shift that moves the sampled stays' mean length onto the real one, in either direction."""

from __future__ import annotations

import numpy as np
import pytest

from synehrgy_assets.core.generation import generate_sequences
from synehrgy_assets.core.stay_calibration import MIN_STAYS, calibrate_stay_end, rows_per_stay
from synehrgy_assets.core.tokens.grammar import TokenType as T
from tests.helpers.toy_sampling import grammar_model, toy_vocabulary
from tests.tiny_models import single_thread  # noqa: F401 (autouse fixture)

PROBE = dict(n_probe=48, max_tokens_per_patient=400, seed=0)
# An untrained toy model hardly closes a stay; this </ts> bias gives it a hazard to calibrate from.
OWN_BIAS = 4.0


@pytest.fixture(scope="module")
def vocab():
    return toy_vocabulary()


def real_stays(vocab, n_stays: int, rows: int) -> np.ndarray:
    """Token ids whose types give `n_stays` stays of `rows` rows each (only DT and </ts> are counted)."""
    dt = int(np.flatnonzero(np.asarray(vocab.token_types) == T.DT)[0])
    return np.tile(np.r_[[dt] * (rows - 1), vocab.end_ts_id], n_stays)


def sampled_rows(model, vocab) -> float:
    out = generate_sequences(model, vocab, PROBE["n_probe"], seed=1, max_tokens_per_patient=400)
    return rows_per_stay(np.concatenate(out.sequences), vocab.token_types)[0]


def test_rows_per_stay_counts_a_row_per_dt_and_one_per_stay():
    types = np.array([T.DT, T.END_TS, T.VALUE])
    assert rows_per_stay(np.array([2, 0, 2, 0, 2, 1, 2, 1]), types) == (2.0, 2)
    assert rows_per_stay(np.array([2, 2]), types)[1] == 0


@pytest.mark.parametrize("target_ratio, sign", [(0.5, 1.0), (2.0, -1.0)])
def test_the_shift_moves_sampled_stays_toward_the_real_length(vocab, target_ratio, sign):
    model = grammar_model(vocab, n_ctx=128)
    mortality = vocab.mortality_base + 1
    from synehrgy_assets.core.model import set_logit_bias

    set_logit_bias(model, {mortality: 0.7, vocab.end_ts_id: OWN_BIAS})  # the outcome's shift must survive
    before = sampled_rows(model, vocab)
    target = max(1.0, round(before * target_ratio))
    result = calibrate_stay_end(model, vocab, real_stays(vocab, 50, int(target)), **PROBE)
    after = sampled_rows(model, vocab)
    assert result.applied and np.sign(result.logit_shift - OWN_BIAS) == sign, result
    assert abs(np.log(after / target)) < abs(np.log(before / target)) / 2, (before, after, target)
    assert model.config.logit_bias[mortality] == pytest.approx(0.7)
    assert model.config.logit_bias[vocab.end_ts_id] == pytest.approx(result.logit_shift)
    assert result.probes[0]["shift"] == OWN_BIAS and len(result.probes) == 2


def test_too_few_real_stays_leave_the_model_as_it_was(vocab):
    model = grammar_model(vocab, n_ctx=128)
    result = calibrate_stay_end(model, vocab, real_stays(vocab, MIN_STAYS - 1, 5), **PROBE)
    assert not result.applied and result.logit_shift == 0.0 and "real train stays" in result.reason
    assert not model.config.logit_bias
