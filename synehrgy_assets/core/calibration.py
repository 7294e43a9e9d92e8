"""Outcome calibration: after training, shift the MORTALITY//1 logit so that the model's mean
predicted death probability over the train visits equals their observed death share.

Why: the probe in `benchmarks/bench_generator_quality.py` showed that a converged CPU-budget
model is biased low on the rare outcome *on its own training data* (mean P(death) 0.115 against
an observed 0.134 on command 1's data), so the sampled cohort had too few deaths (10-12 % against
13.4 %), run after run. A single additive logit shift is the smallest correction that removes
that bias: it keeps the model's ranking of who dies (what TSTR measures) and moves only the rate.
It is the intercept of a logistic model fitted by moment matching, one scalar from an aggregate
over every train visit, so it reveals no individual value. The shift lives in
`GPTConfig.logit_bias` (the checkpoint's config.json), so every consumer of the registered model
samples with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

# Fewer deaths or survivors than this among the supervised train visits: the rate is a small
# cell, and a shift fitted on it would be noise. Calibration is then skipped (and says why).
MIN_OUTCOME_COUNT = 10
# A shift this large means the model did not learn the outcome at all; clamping keeps a broken
# model from being "fixed" into a plausible-looking rate without anyone noticing (the gates and
# the reported shift still show it).
MAX_ABS_SHIFT = 4.0


@dataclass(frozen=True)
class OutcomeCalibration:
    applied: bool
    logit_shift: float       # added to the MORTALITY//1 logit (0 when not applied)
    n_targets: int           # supervised MORTALITY targets seen
    mean_p_before: float     # aggregates over all of them; private (train data): not for MLflow
    mean_p_after: float
    observed_share: float
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def outcome_logit_gaps(
    model, windows: Sequence[np.ndarray], context_lengths: Sequence[int], negative: int, positive: int,
    pad_id: int, batch_size: int = 32, max_targets: int = 50_000,
) -> tuple[np.ndarray, np.ndarray]:
    """logit(positive) - logit(negative) at every supervised position whose target is one of the
    two outcome tokens, and whether the target was `positive`.

    A position t counts when token t+1 is a training target (t+1 >= its window's context length),
    exactly the targets the trainer scores. Windows are right-padded in batches: the model is
    causal, so padding after a position never changes its logits.
    """
    picked = []
    for i, w in enumerate(windows):
        w = np.asarray(w)
        nxt = w[1:]
        start = max(int(context_lengths[i]), 1)
        where = np.flatnonzero(((nxt == negative) | (nxt == positive)) & (np.arange(1, len(w)) >= start))
        if len(where):
            picked.append((i, where))
    gaps, labels = [], []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(picked), batch_size):
                chunk = picked[b:b + batch_size]
                width = max(len(windows[i]) - 1 for i, _ in chunk)
                x = np.full((len(chunk), width), pad_id, dtype=np.int64)
                for r, (i, _) in enumerate(chunk):
                    w = np.asarray(windows[i], dtype=np.int64)[:-1]
                    x[r, :len(w)] = w
                logits, _ = model(torch.from_numpy(x).to(device))
                for r, (i, where) in enumerate(chunk):
                    at = logits[r, torch.from_numpy(where).to(device)].float()
                    gaps.append((at[:, positive] - at[:, negative]).cpu().numpy())
                    labels.append(np.asarray(windows[i])[where + 1] == positive)
                if sum(len(g) for g in gaps) >= max_targets:
                    break
    finally:
        model.train(was_training)
    if not gaps:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=bool)
    return np.concatenate(gaps).astype(np.float64), np.concatenate(labels)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_logit_shift(gaps: np.ndarray, observed_share: float, tol: float = 1e-7) -> float:
    """The shift s with mean(sigmoid(gaps + s)) == observed_share (monotone in s: bisection)."""
    if not 0.0 < observed_share < 1.0:
        raise ValueError(f"observed_share must lie strictly between 0 and 1, got {observed_share}")
    lo, hi = -2 * MAX_ABS_SHIFT, 2 * MAX_ABS_SHIFT
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _sigmoid(gaps + mid).mean() < observed_share:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return 0.5 * (lo + hi)


def calibrate_outcome(
    model, windows: Sequence[np.ndarray], context_lengths: Sequence[int], negative: int, positive: int,
    pad_id: int, min_count: int = MIN_OUTCOME_COUNT,
) -> OutcomeCalibration:
    """Fit the shift on these (train) windows and set it on the model (`set_logit_bias`)."""
    from synehrgy_assets.core.model import set_logit_bias

    base = float((model.config.logit_bias or {}).get(positive, 0.0))
    gaps, labels = outcome_logit_gaps(model, windows, context_lengths, negative, positive, pad_id)
    n, deaths = len(labels), int(labels.sum())
    before = float(_sigmoid(gaps).mean()) if n else float("nan")
    observed = deaths / n if n else float("nan")
    if deaths < min_count or n - deaths < min_count:
        return OutcomeCalibration(False, 0.0, n, before, before, observed,
                                  f"needs at least {min_count} supervised visits of each outcome")
    shift = fit_logit_shift(gaps, observed)
    clamped = float(np.clip(shift, -MAX_ABS_SHIFT, MAX_ABS_SHIFT))
    set_logit_bias(model, {positive: base + clamped})
    after = float(_sigmoid(gaps + clamped).mean())
    reason = "" if clamped == shift else f"shift {shift:.2f} clamped to ±{MAX_ABS_SHIFT}"
    return OutcomeCalibration(True, clamped, n, before, after, observed, reason)
