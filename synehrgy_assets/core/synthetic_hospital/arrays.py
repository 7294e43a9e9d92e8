"""Vectorized numpy helpers shared by the hospital's table generators."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_SECONDS_PER_YEAR = 365.2425 * 86400.0
NO_TIME = np.iinfo(np.int64).min  # "no timestamp" (epoch seconds may be negative: births before 1970)
_EPOCH_2100 = int(np.datetime64("2100-01-01T00:00:00", "s").astype(np.int64))
_EPOCH_2190 = int(np.datetime64("2190-01-01T00:00:00", "s").astype(np.int64))


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups with `counts` items: (group index, index within group) per item."""
    counts = np.asarray(counts, dtype=np.int64)
    group = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
    return group, within


def _group_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each group (items sorted by group)."""
    total = np.cumsum(values)
    first = np.r_[True, group[1:] != group[:-1]]
    base = (total - values)[first]
    return total - base[np.cumsum(first) - 1]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _choice(rng, options: list, probs: list[float], size: int) -> np.ndarray:
    """Indices into `options` drawn with `probs` (normalized)."""
    p = np.asarray(probs, dtype=float)
    return rng.choice(len(options), size=size, p=p / p.sum())


def _floor_day(seconds: np.ndarray) -> np.ndarray:
    return (seconds // 86400) * 86400


def _ts(seconds: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64), type=pa.int64(), mask=mask)

