"""Numeric bins with within-bin quantiles, the measurement variables' specs, and the exact
bin lookup the encoder uses for every continuous variable at once.

Every stored number depends on >= `min_patients` train patients (core/privacy_aggregates.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from synehrgy_assets.core.privacy_aggregates import (
    k_anonymous_quantiles,
    k_anonymous_range,
    merge_bins_to_patients,
    sort_order,
)
from synehrgy_assets.core.tokens.vocab_config import VocabularyConfig


@dataclass
class NumericBins:
    """Bins [edges[i], edges[i+1]) (the last one closed) with optional within-bin quantiles.

    `top_bucket` adds one more bin holding exactly the values >= top_bucket (age's capped >89).
    `quantiles[i]` is None when the bin had too few training values (or patients) for k-anonymous
    quantiles: decoding then samples uniformly inside the bin, except in an outer bin, whose far edge
    is the variable's validity bound (a basophil share of 100 %, an SpO2 of 0 %), not data: there
    the values spread from the inner edge over the width of the neighbouring bin, as if the tail
    continued at the density next to it, instead of uniformly out to the bound.
    """

    edges: np.ndarray
    quantiles: list
    top_bucket: float | None = None

    def __post_init__(self):
        self.edges = np.asarray(self.edges, dtype=np.float64)
        if self.edges.ndim != 1 or len(self.edges) < 2 or np.any(np.diff(self.edges) <= 0):
            raise ValueError(f"bin edges must be strictly increasing, got {self.edges.tolist()}")
        if len(self.quantiles) != self.n_bins:
            raise ValueError(f"{len(self.quantiles)} quantile lists for {self.n_bins} bins")

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1 + (self.top_bucket is not None)

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each (non-NaN) value; out-of-range values go to the end bins."""
        values = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges[1:-1], values, side="right")
        if self.top_bucket is not None:
            idx[values >= self.top_bucket] = len(self.edges) - 1
        return idx

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        low, high = self.edges[:-1], self.edges[1:]
        if self.top_bucket is not None:
            low = np.append(low, self.top_bucket)
            high = np.append(high, self.top_bucket)
        return low, high

    def quantile_table(self, k: int) -> np.ndarray:
        low, high = self.bounds()
        table = np.linspace(low, high, k, axis=1)
        last = len(self.edges) - 2  # the last regular bin (a top bucket comes after it)
        for i, q in enumerate(self.quantiles):
            if q is not None:
                table[i] = q
            elif last >= 2 and i in (0, last):
                table[i] = self._tail_span(i, k)
        return table

    def _tail_span(self, i: int, k: int) -> np.ndarray:
        """k values over an outer bin without quantiles: from its inner edge, as far as the
        neighbouring bin is wide (never past the bin itself)."""
        e = self.edges
        if i == 0:
            width = e[2] - e[1]
            return np.linspace(max(e[0], e[1] - width), e[1], k)
        width = e[i] - e[i - 1]
        return np.linspace(e[i], min(e[i + 1], e[i] + width), k)

    def to_dict(self) -> dict:
        return {
            "edges": [float(x) for x in self.edges],
            "quantiles": [None if q is None else [float(x) for x in q] for q in self.quantiles],
            "top_bucket": self.top_bucket,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NumericBins":
        return cls(np.asarray(d["edges"], dtype=np.float64), list(d["quantiles"]), d.get("top_bucket"))


def _fit_bins(
    values: np.ndarray,
    patients: np.ndarray,
    edges: Sequence[float],
    config: VocabularyConfig,
    merge: bool,
    top_bucket: float | None = None,
) -> NumericBins:
    """Bins with within-bin quantiles from training values (already inside the edges) and the
    patient of each value. With `merge`, inner edges are removed until every bin holds values of
    `min_patients` patients and `min_bin_count` values; fixed scales keep their (public) edges."""
    values, patients = np.asarray(values, dtype=np.float64), np.asarray(patients)
    order = sort_order(values, patients)
    values, patients = values[order], patients[order]
    edges = [float(e) for e in edges]
    inner = edges[1:-1]
    if merge:
        inner = merge_bins_to_patients(values, patients, inner, config.min_patients, config.min_bin_count)
    full_edges = [edges[0], *inner, edges[-1]]
    cut = np.concatenate([[0], np.searchsorted(values, inner, side="left"), [len(values)]])
    # The tails are guarded over the whole variable: no stored number lies beyond the values of all
    # but fewer than min_patients patients.
    guard = k_anonymous_range(values, patients, config.min_patients)
    levels = np.linspace(0.0, 1.0, config.within_bin_quantiles)
    quantiles = [clipped_quantiles(values[a:b], patients[a:b], levels, config, guard, (lo, hi))
                 for a, b, lo, hi in zip(cut[:-1], cut[1:], full_edges[:-1], full_edges[1:])]
    if top_bucket is not None:
        quantiles.append(None)  # a point bucket: low == high
    return NumericBins(np.asarray(full_edges), quantiles, top_bucket)


def clipped_quantiles(values: np.ndarray, patients: np.ndarray, levels: np.ndarray,
                      config: VocabularyConfig, guard: tuple[float, float] | None = None,
                      bounds: tuple[float, float] | None = None) -> list | None:
    """k-anonymous quantiles at `levels` (`privacy_aggregates.k_anonymous_quantiles`, window
    `tail_count`, k = `min_patients`), clipped to `guard` and `bounds`. None when the sample has
    fewer than max(min_bin_count, 2 x tail_count + 1) values, fewer than `min_patients` patients,
    or no k-anonymous range."""
    if len(values) < max(config.min_bin_count, 2 * config.tail_count + 1) or guard is None:
        return None
    return k_anonymous_quantiles(values, patients, levels, k=config.min_patients,
                                 window=max(config.tail_count, 1), guard=guard, bounds=bounds)


@dataclass
class VariableSpec:
    """One measurement variable: continuous bins or categorical categories."""

    name: str
    kind: str
    valid_low: float
    valid_high: float
    bins: NumericBins | None = None
    categories: list = field(default_factory=list)
    category_values: list = field(default_factory=list)  # numeric score of each category

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "valid_low": float(self.valid_low),
            "valid_high": float(self.valid_high),
            "bins": None if self.bins is None else self.bins.to_dict(),
            "categories": list(self.categories),
            "category_values": [None if v is None else float(v) for v in self.category_values],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "VariableSpec":
        bins = None if d["bins"] is None else NumericBins.from_dict(d["bins"])
        return cls(d["name"], d["kind"], d["valid_low"], d["valid_high"], bins,
                   list(d["categories"]), list(d["category_values"]))


class _BinGrid:
    """Exact bin lookup for every continuous variable at once (used by `_kernels.value_tokens`).

    cell(v) = floor((v - low) * scale), clamped to [0, G), is monotone in v, so a value whose cell
    holds no edge is binned by the cell alone; a cell holding one edge needs one exact comparison.
    G grows until no cell holds two edges of the same variable.
    """

    def __init__(self, variables: list[VariableSpec]):
        n = len(variables)
        self.low = np.zeros(n)
        self.scale = np.zeros(n)  # 0 for categorical variables: every value lands in cell 0
        inner = [np.zeros(0)] * n
        for j, var in enumerate(variables):
            if var.bins is not None:
                self.low[j] = var.bins.edges[0]
                inner[j] = var.bins.edges[1:-1]
        for size in (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18):
            self.size = size
            for j, var in enumerate(variables):
                if var.bins is not None:
                    self.scale[j] = size / (var.bins.edges[-1] - var.bins.edges[0])
            cells = [self._cells(np.full(len(e), j), e) for j, e in enumerate(inner)]
            if all(len(np.unique(c)) == len(c) for c in cells):
                break
        else:
            raise ValueError("bin edges too close to index (closer than range / 2**18)")
        self.base = np.zeros(n * size, dtype=np.int32)   # bins whose edges lie in lower cells
        self.edge = np.full(n * size, np.inf)            # the edge inside a cell, if any
        for j, c in enumerate(cells):
            self.base[j * size:(j + 1) * size] = np.searchsorted(c, np.arange(size), side="right")
            self.base[j * size + c] -= 1  # in an edge's own cell the comparison adds it back
            self.edge[j * size + c] = inner[j]

    def _cells(self, var: np.ndarray, values: np.ndarray) -> np.ndarray:
        t = (values - self.low[var]) * self.scale[var]
        np.fmax(t, 0.0, out=t)  # fmax/fmin map NaN to the bound
        np.fmin(t, self.size - 1, out=t)
        return t.astype(np.int32)
