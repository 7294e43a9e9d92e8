"""Packed training batches: windows laid end to end in rows of exactly n_ctx input positions.

A window `w` of L tokens takes L - 1 input positions (inputs w[:-1], targets w[1:]). Windows are
shuffled, cut into pools of `pool` windows, and each pool is packed by first-fit decreasing into
rows of n_ctx positions; the rows of all pools are shuffled again and cut into batches. Inside a
row every window is its own *segment*: attention is block-diagonal causal and positions restart at
0, so a packed window computes exactly what it would alone (the model's outcome condition restarts
at each window's leading <s>). The batch order of an epoch is a pure function of (seed, epoch):
a resumed run recomputes it instead of storing it.

Target rule: window i with `context[i]` leading context-only tokens predicts w[j] (from position
j - 1) for j >= max(1, context[i]); pad tokens inside a window are never targets either.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from synehrgy_assets.core.model import IGNORE_INDEX

DEFAULT_POOL_WINDOWS = 2048


def first_fit_decreasing(sizes: np.ndarray, capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) from first-fit decreasing, O(n log n).

    A max-tree over bin capacities finds the leftmost bin with room; bins not yet opened hold the
    full capacity and sit to the right of every opened bin, so "open a new bin" needs no special
    case. Inside a bin, items keep their placement order (largest first).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = sizes.size
    if n == 0:
        return []
    if sizes.min() < 1 or sizes.max() > capacity:
        raise ValueError(f"first_fit_decreasing: sizes must lie in [1, {capacity}]")
    leaves = 1 << max(0, int(n - 1).bit_length())
    tree = [0] * (2 * leaves)
    for i in range(leaves, leaves + n):
        tree[i] = capacity
    for i in range(leaves - 1, 0, -1):
        tree[i] = max(tree[2 * i], tree[2 * i + 1])
    bins: list[list[int]] = []
    for item in np.argsort(-sizes, kind="stable").tolist():
        size = int(sizes[item])
        node = 1
        while node < leaves:  # descend to the leftmost leaf with room
            node = 2 * node if tree[2 * node] >= size else 2 * node + 1
        b = node - leaves
        if b == len(bins):
            bins.append([])
        bins[b].append(item)
        tree[node] -= size
        node //= 2
        while node:
            best = max(tree[2 * node], tree[2 * node + 1])
            if tree[node] == best:
                break
            tree[node] = best
            node //= 2
    return bins


def pack_rows(lengths: np.ndarray, n_ctx: int, rng: np.random.Generator | None, pool: int) -> list[np.ndarray]:
    """Rows of window indices. With `rng`, windows are shuffled into pools and the rows shuffled
    afterwards; without, windows are packed in index order (a fixed packing, e.g. validation)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = rng.permutation(lengths.size) if rng is not None else np.arange(lengths.size)
    rows: list[np.ndarray] = []
    for start in range(0, order.size, pool):
        chunk = order[start:start + pool]
        rows.extend(chunk[np.asarray(b, dtype=np.int64)] for b in first_fit_decreasing(lengths[chunk] - 1, n_ctx))
    if rng is not None:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    return rows


def epoch_rows(lengths: np.ndarray, n_ctx: int, seed: int, epoch: int, pool: int) -> list[np.ndarray]:
    """The shuffled rows of one training epoch: a pure function of (seed, epoch)."""
    return pack_rows(lengths, n_ctx, np.random.default_rng([int(seed), int(epoch)]), pool)


def batches_of(rows: list[np.ndarray], batch_size: int) -> list[list[np.ndarray]]:
    """Consecutive groups of `batch_size` rows; the last batch of an epoch may be smaller."""
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


@dataclass
class PackedBatch:
    """[B, n_ctx] int64 arrays. Padding positions have input pad_id, target IGNORE_INDEX,
    position 0.., their own segment and window id -1."""

    inputs: np.ndarray
    targets: np.ndarray
    positions: np.ndarray
    segments: np.ndarray
    window_ids: np.ndarray

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    @property
    def n_padding(self) -> int:
        return int((self.window_ids < 0).sum())


def collate_packed(
    windows: list[np.ndarray],
    context: np.ndarray,
    rows: list[np.ndarray],
    n_ctx: int,
    pad_id: int,
) -> PackedBatch:
    """Lay the windows of each row end to end (one copy per window, not per token).

    A loop per window, measured faster than a scatter of every position (0.4 ms against 1.3 ms for
    64 rows of 1,024): rows hold few windows. On CUDA the trainer runs it one batch ahead (`OneAhead`)."""
    shape = (len(rows), n_ctx)
    inputs = np.full(shape, pad_id, dtype=np.int64)
    targets = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros(shape, dtype=np.int64)
    segments = np.zeros(shape, dtype=np.int64)
    window_ids = np.full(shape, -1, dtype=np.int64)
    ramp = np.arange(n_ctx, dtype=np.int64)
    for r, row in enumerate(rows):
        off = 0
        for k, i in enumerate(row.tolist()):
            w = np.asarray(windows[i])
            n = len(w) - 1
            end = off + n
            inputs[r, off:end] = w[:-1]
            first = max(1, int(context[i]))  # first target token index inside the window
            targets[r, off + first - 1:end] = w[first:]
            positions[r, off:end] = ramp[:n]
            segments[r, off:end] = k
            window_ids[r, off:end] = i
            off = end
        if off < n_ctx:
            positions[r, off:] = ramp[:n_ctx - off]
            segments[r, off:] = len(row)  # padding is a segment of its own: it attends only to itself
    # A window may carry its own padding (fixed-size windows): pad is never a target to learn.
    targets[targets == pad_id] = IGNORE_INDEX
    return PackedBatch(inputs, targets, positions, segments, window_ids)


def target_tokens(windows: list[np.ndarray], context: np.ndarray, indices=None, chunk: int = 4096):
    """Yield the target tokens of the given windows (default all) in chunks, as int64 arrays."""
    indices = range(len(windows)) if indices is None else indices
    indices = list(indices)
    for start in range(0, len(indices), chunk):
        parts = [np.asarray(windows[i])[max(1, int(context[i])):] for i in indices[start:start + chunk]]
        if parts:
            yield np.concatenate(parts).astype(np.int64, copy=False)


class OneAhead:
    """`make(args)` for the next key on one background thread while the caller works on this one.

    `ahead(key, args)` starts it; `get(key, args)` returns its result, or computes it here when it
    was not started (or was started for another key, whose result is dropped). numpy and torch's
    pinning release the GIL, so the collate overlaps the GPU step that the main thread waits on.
    Disabled, it is a plain call.
    """

    def __init__(self, make: Callable[[Any], Any], enabled: bool = True) -> None:
        self._make = make
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="synehrgy-collate") if enabled else None
        self._key: Any = None
        self._future: Future | None = None

    def ahead(self, key: Any, args: Any) -> None:
        if self._pool is not None:
            self._future, self._key = self._pool.submit(self._make, args), key

    def get(self, key: Any, args: Any) -> Any:
        future, self._future = self._future, None
        if future is not None and self._key == key:
            return future.result()
        return self._make(args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
