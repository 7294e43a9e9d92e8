"""Stay-end calibration: one logit shift on `</ts>` so that sampled ICU stays have the real length.

A generator trained on context windows can close stays too rarely once the sampler has rolled past
its first window: on README command 1 (53 variables, 16 epochs) the synthetic stays had 36 % more
measurement rows than the real ones, almost all of the excess in patients longer than n_ctx, while
each length band on its own was close to real (docs/benchmarks.md). Teacher-forced training windows
do not show this (they never contain the model's own earlier tokens), so, unlike the outcome
calibration (core/calibration.py), the shift is fitted on what the model samples.

The target is an aggregate of the whole train split: the mean number of measurement rows per ICU
stay of the real train sequences (rows = `DT` tokens + one per stay, counted at `</ts>`). A probe of
sampled patients gives the model's mean. With a per-row closing hazard h, a stay has about 1 / h
rows, and a logit shift b multiplies the odds of closing by e^b, so b = log(model mean / real mean)
moves the model's mean onto the real one; a second probe at that shift refines it. Only the shift
leaves the workspace; both means are train aggregates and stay in the run's private record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synehrgy_assets.core.tokens.grammar import TokenType as T

MAX_ABS_SHIFT = 2.0
MIN_STAYS = 10  # fewer real or sampled stays than this: no shift (a mean of a handful of stays is noise)


@dataclass
class StayEndCalibration:
    applied: bool
    logit_shift: float  # the `</ts>` logit's bias after calibration (its bias before, when not applied)
    real_rows_per_stay: float  # train aggregate: private, not for MLflow
    probes: list[dict] = field(default_factory=list)  # per probe: the shift it sampled at, its rows per stay
    reason: str = ""


def rows_per_stay(tokens: np.ndarray, token_types: np.ndarray) -> tuple[float, int]:
    """(mean measurement rows per ICU stay, number of stays) of token sequences, whole patients
    concatenated: every `</ts>` closes a stay, every `DT` starts a further row of it."""
    types = np.asarray(token_types)[np.asarray(tokens, dtype=np.int64)]
    stays = int(np.count_nonzero(types == T.END_TS))
    if stays == 0:
        return float("nan"), 0
    return (np.count_nonzero(types == T.DT) + stays) / stays, stays


def calibrate_stay_end(model, vocab, real_tokens: np.ndarray, *, n_probe: int = 128, rounds: int = 2,
                       max_tokens_per_patient: int | None = None, seed: int = 0,
                       batch_size: int = 64) -> StayEndCalibration:
    """Fit the `</ts>` shift on `rounds` probes of `n_probe` sampled patients and set it on the model,
    beside the logit biases it already has (`set_logit_bias`); a `</ts>` bias already there is where
    the search starts."""
    from synehrgy_assets.core.generation import generate_sequences
    from synehrgy_assets.core.model import set_logit_bias

    end_ts = int(vocab.end_ts_id)
    bias = {int(k): float(v) for k, v in (model.config.logit_bias or {}).items()}
    start = bias.pop(end_ts, 0.0)  # a model calibrated before continues from its shift
    real, n_real = rows_per_stay(real_tokens, vocab.token_types)
    if n_real < MIN_STAYS:
        return StayEndCalibration(False, start, real, reason=f"needs at least {MIN_STAYS} real train stays")
    shift, probes = start, []
    for _ in range(rounds):
        set_logit_bias(model, {**bias, end_ts: shift} if shift else bias)
        sampled = generate_sequences(model, vocab, n_probe, seed=seed, batch_size=batch_size,
                                     max_tokens_per_patient=max_tokens_per_patient)
        tokens = np.concatenate([np.asarray(s) for s in sampled.sequences]) if sampled.sequences else np.zeros(0)
        mean, n_stays = rows_per_stay(tokens, vocab.token_types)
        probes.append({"shift": round(shift, 4), "rows_per_stay": mean, "stays": n_stays})
        if n_stays < MIN_STAYS:
            set_logit_bias(model, {**bias, end_ts: start} if start else bias)
            return StayEndCalibration(False, start, real, probes,
                                      f"the probe sampled {n_stays} stays (needs at least {MIN_STAYS})")
        shift = float(np.clip(shift + np.log(mean / real), start - MAX_ABS_SHIFT, start + MAX_ABS_SHIFT))
    set_logit_bias(model, {**bias, end_ts: shift})
    return StayEndCalibration(True, shift, real, probes)
