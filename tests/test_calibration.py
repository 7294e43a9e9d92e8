"""Outcome calibration (core/calibration.py): the fitted logit shift moves the mean predicted
death probability onto the observed share, survives the checkpoint round trip, moves only the
MORTALITY//1 logit, and refuses to act on small cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synehrgy_assets.core.calibration import (
    MIN_OUTCOME_COUNT, calibrate_outcome, fit_logit_shift, outcome_logit_gaps,
)
from synehrgy_assets.core.model import GPT, GPTConfig, load_checkpoint, save_checkpoint, set_logit_bias

V, M0, M1, PAD = 12, 3, 4, 0


def _windows(n: int, deaths: int, rng: np.random.Generator):
    """Windows `<s> x x M? x x ...` with the outcome token at position 3 (a target)."""
    out = []
    for i in range(n):
        w = rng.integers(5, V, size=10)
        w[0] = 1
        w[3] = M1 if i < deaths else M0
        out.append(w.astype(np.int32))
    return out, np.ones(n, dtype=np.int64)


def _model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, n_ctx=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def test_fit_logit_shift_matches_the_observed_share():
    gaps = np.random.default_rng(0).normal(-2.0, 1.0, size=5000)
    for share in (0.05, 0.134, 0.5, 0.9):
        s = fit_logit_shift(gaps, share)
        assert (1 / (1 + np.exp(-(gaps + s)))).mean() == pytest.approx(share, abs=1e-5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        fit_logit_shift(gaps, 0.0)


def test_calibration_sets_the_rate_and_survives_the_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    windows, ctx = _windows(200, 30, rng)
    model = _model()
    before = outcome_logit_gaps(model, windows, ctx, M0, M1, PAD)
    assert len(before[0]) == 200 and before[1].sum() == 30
    result = calibrate_outcome(model, windows, ctx, M0, M1, PAD)
    assert result.applied and result.n_targets == 200
    assert result.observed_share == pytest.approx(0.15)
    assert result.mean_p_after == pytest.approx(0.15, abs=1e-4)
    gaps, _ = outcome_logit_gaps(model, windows, ctx, M0, M1, PAD)
    assert (1 / (1 + np.exp(-gaps))).mean() == pytest.approx(0.15, abs=1e-4)
    assert model.config.logit_bias == {M1: pytest.approx(result.logit_shift)}

    # Only the MORTALITY//1 logit moves.
    x = torch.from_numpy(np.stack(windows[:4]).astype(np.int64))
    with torch.no_grad():
        with_bias, _ = model(x)
        set_logit_bias(model, {})
        without, _ = model(x)
    diff = (with_bias - without).abs().amax(dim=(0, 1))
    assert float(diff[M1]) == pytest.approx(abs(result.logit_shift), abs=1e-4)
    assert float(diff[torch.arange(V) != M1].max()) < 1e-5

    # The shift is part of the checkpoint's config, so every consumer samples with it.
    set_logit_bias(model, {M1: result.logit_shift})
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.logit_bias == {M1: pytest.approx(result.logit_shift)}
    with torch.no_grad():
        reloaded, _ = loaded(x)
    torch.testing.assert_close(reloaded, with_bias)


def test_calibration_refuses_small_cells():
    rng = np.random.default_rng(2)
    windows, ctx = _windows(200, MIN_OUTCOME_COUNT - 1, rng)
    model = _model()
    result = calibrate_outcome(model, windows, ctx, M0, M1, PAD)
    assert not result.applied and "at least" in result.reason
    assert model.config.logit_bias is None


def test_context_positions_are_not_calibrated_on():
    """An outcome token inside a window's context (not a target) is not counted."""
    rng = np.random.default_rng(3)
    windows, _ = _windows(50, 10, rng)
    gaps, labels = outcome_logit_gaps(_model(), windows, np.full(50, 5), M0, M1, PAD)
    assert len(gaps) == 0 and len(labels) == 0
