"""SynEHRgy tokenizer: vocabulary fitting, vectorized encoding and decoding, context windows.

One flat token stream per patient (grammar in docs/tokens.md and `core/grammar.py`):

    <s> visit+ </s>
    visit := [GAP_VISIT] AGE GENDER ETHNICITY_GROUP INSURANCE ADMISSION_TYPE FIRST_CAREUNIT </covar>
             MORTALITY PHENOTYPE* </label> DX* PX* </code> (VALUE+ DT)* </ts> </adm>

Encoding builds every token's flat position arithmetically from per-visit section counts and
scatters the ids into one int32 array: no per-patient or per-token Python loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synehrgy_assets.core import _kernels
from synehrgy_assets.core.cohort import (
    CODE_COLUMNS,
    MEASUREMENT_COLUMNS,
    PHENOTYPE_COLUMNS,
    SEEDS_DIR,
    VISIT_COLUMNS,
    StagedCohort,
)
from synehrgy_assets.core.grammar import (
    GrammarConstraint,
    GrammarState,
    TokenType,
    Violations,
    find_violations,
)

__all__ = [
    "AGE_CAP", "AGE_EDGES", "DT_EDGES", "GAP_VISIT_EDGES", "UNK", "VocabularyConfig", "NumericBins",
    "VariableSpec", "TokenVocabulary", "TokenSequences", "DecodeReport", "ContextWindows",
    "GrammarConstraint", "GrammarState", "TokenType", "load_variables", "encode", "encode_blocks",
    "encode_marts",
    "decode",
    "context_windows", "reference_fraction",
]

T = TokenType
FORMAT = "synehrgy-token-vocabulary/1"
UNK = "UNK"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "</covar>", "</label>", "</code>", "</ts>", "</adm>")
COVARIATES = (
    ("gender", T.GENDER),
    ("ethnicity_group", T.ETHNICITY_GROUP),
    ("insurance", T.INSURANCE),
    ("admission_type", T.ADMISSION_TYPE),
    ("first_careunit", T.FIRST_CAREUNIT),
)
CODE_TYPES = (("diagnosis", "DX", T.DX), ("procedure", "PX", T.PX))

# Age in years: [18,20), [20,25), ..., [85,90), then one bucket for MIMIC's capped >89 ages.
AGE_EDGES = (18.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0,
             85.0, 90.0)
AGE_CAP = 90.0
# Hours between measurement rows (first row: since ICU admission). Finer than the reference's
# 15 bins; the narrow bins around 0.25/0.5/1 h catch the common charting intervals exactly.
# The last edge is a cap: larger gaps are clipped to it (and counted).
DT_EDGES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.05, 1.5, 2.0, 2.5, 3.0, 3.5, 4.5, 6.0, 8.0, 10.0,
            12.0, 16.0, 20.0, 24.0, 36.0, 48.0, 72.0, 120.0, 240.0, 2400.0)
# Hours from the previous visit's outtime to this visit's intime; the last edge (20 y) is a cap.
GAP_VISIT_EDGES = (0.0, 6.0, 12.0, 24.0, 48.0, 72.0, 120.0, 168.0, 336.0, 720.0, 1440.0, 2160.0,
                   4320.0, 8760.0, 17520.0, 43800.0, 175200.0)
MIN_ROW_GAP_HOURS = 1.0 / 3600.0
VARIABLE_COLUMNS = ["variable", "kind", "valid_low", "valid_high", "clinical_edges"]


# ----------------------------------------------------------------------------------------------
# Configuration and variables


@dataclass(frozen=True)
class VocabularyConfig:
    """How the vocabulary is fitted (see docs/tokens.md)."""

    binning: str = "quantile"  # "quantile" | "uniform" | "clinical"
    n_bins: int = 10
    min_code_count: int = 5
    within_bin_quantiles: int = 11
    min_bin_count: int = 5

    def __post_init__(self):
        if self.binning not in ("quantile", "uniform", "clinical"):
            raise ValueError(
                f"VocabularyConfig.binning must be 'quantile', 'uniform' or 'clinical', "
                f"got {self.binning!r}"
            )
        if self.n_bins < 1:
            raise ValueError(f"VocabularyConfig.n_bins must be >= 1, got {self.n_bins}")
        if self.min_code_count < 1:
            raise ValueError(f"VocabularyConfig.min_code_count must be >= 1, got {self.min_code_count}")
        if self.within_bin_quantiles < 2:
            raise ValueError("VocabularyConfig.within_bin_quantiles must be >= 2, "
                             f"got {self.within_bin_quantiles}")
        if self.min_bin_count < 1:
            raise ValueError(f"VocabularyConfig.min_bin_count must be >= 1, got {self.min_bin_count}")


def load_variables(path: str | Path | None = None) -> pd.DataFrame:
    """The variables seed table (`dbt_mimic/seeds/variables.csv`), checked."""
    path = Path(path) if path is not None else SEEDS_DIR / "variables.csv"
    table = pd.read_csv(path, dtype={"variable": str, "kind": str, "clinical_edges": str})
    return _check_variables_table(table, origin=str(path))


def _check_variables_table(table: pd.DataFrame, origin: str = "variables table") -> pd.DataFrame:
    missing = [c for c in VARIABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{origin}: lacks column(s) {missing}; expected {VARIABLE_COLUMNS}")
    table = table.copy()
    bad_kind = sorted(set(table["kind"]) - {"continuous", "categorical"})
    if bad_kind:
        raise ValueError(f"{origin}: column 'kind' has {bad_kind}; expected continuous/categorical")
    if table["variable"].isna().any() or table["variable"].duplicated().any():
        raise ValueError(f"{origin}: column 'variable' must be unique and non-empty")
    low = pd.to_numeric(table["valid_low"], errors="coerce")
    high = pd.to_numeric(table["valid_high"], errors="coerce")
    if low.isna().any() or high.isna().any() or (low >= high).any():
        raise ValueError(f"{origin}: columns 'valid_low'/'valid_high' must be numbers with "
                         "valid_low < valid_high")
    table["valid_low"], table["valid_high"] = low.astype(float), high.astype(float)
    return table.sort_values("variable", kind="stable").reset_index(drop=True)


def _parse_edges(text, variable: str) -> list[float]:
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return []
    try:
        return [float(x) for x in str(text).split()]
    except ValueError:
        raise ValueError(
            f"variables table: column 'clinical_edges' of '{variable}' is not space-separated "
            f"numbers: {text!r}"
        ) from None


# ----------------------------------------------------------------------------------------------
# Numeric bins with within-bin quantiles


@dataclass
class NumericBins:
    """Bins [edges[i], edges[i+1]) (the last one closed) with optional within-bin quantiles.

    `top_bucket` adds one more bin holding exactly the values >= top_bucket (age's capped >89).
    `quantiles[i]` is None when the bin had fewer than `min_bin_count` training values: decoding
    then samples uniformly inside the bin.
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
        for i, q in enumerate(self.quantiles):
            if q is not None:
                table[i] = q
        return table

    def to_dict(self) -> dict:
        return {
            "edges": [float(x) for x in self.edges],
            "quantiles": [None if q is None else [float(x) for x in q] for q in self.quantiles],
            "top_bucket": self.top_bucket,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NumericBins":
        return cls(np.asarray(d["edges"], dtype=np.float64), list(d["quantiles"]), d.get("top_bucket"))


def _merge_small_bins(inner: list[float], counts: list[int], min_count: int):
    """Remove inner edges until every bin holds >= min_count values (or one bin remains)."""
    inner, counts = list(inner), list(counts)
    while len(counts) > 1 and min(counts) < min_count:
        i = int(np.argmin(counts))
        if i == 0:
            j = 1
        elif i == len(counts) - 1:
            j = i - 1
        else:
            j = i - 1 if counts[i - 1] <= counts[i + 1] else i + 1
        lo = min(i, j)
        counts[lo] = counts[i] + counts[j]
        del counts[lo + 1]
        del inner[lo]  # the edge between bins lo and lo+1
    return inner, counts


def _fit_bins(
    sorted_values: np.ndarray,
    edges: Sequence[float],
    config: VocabularyConfig,
    merge: bool,
    top_bucket: float | None = None,
) -> NumericBins:
    """Bins with within-bin quantiles from sorted training values (already inside the edges)."""
    edges = [float(e) for e in edges]
    inner = edges[1:-1]
    n = len(sorted_values)
    cut = np.searchsorted(sorted_values, inner, side="left")
    counts = np.diff(np.concatenate([[0], cut, [n]])).tolist()
    if merge:
        inner, counts = _merge_small_bins(inner, counts, config.min_bin_count)
    full_edges = [edges[0], *inner, edges[-1]]
    cut = np.concatenate([[0], np.searchsorted(sorted_values, inner, side="left"), [n]])
    levels = np.linspace(0.0, 1.0, config.within_bin_quantiles)
    quantiles = []
    for a, b in zip(cut[:-1], cut[1:]):
        if b - a >= config.min_bin_count:
            quantiles.append(np.quantile(sorted_values[a:b], levels).tolist())
        else:
            quantiles.append(None)
    if top_bucket is not None:
        quantiles.append(None)  # a point bucket: low == high
    return NumericBins(np.asarray(full_edges), quantiles, top_bucket)


def _candidate_inner_edges(sorted_values, low, high, config, clinical_text, name) -> list[float]:
    if config.binning == "quantile":
        if len(sorted_values) == 0:
            inner = np.array([])
        else:
            levels = np.linspace(0.0, 1.0, config.n_bins + 1)[1:-1]
            inner = np.quantile(sorted_values, levels)
    elif config.binning == "uniform":
        inner = np.linspace(low, high, config.n_bins + 1)[1:-1]
    else:
        inner = np.asarray(_parse_edges(clinical_text, name), dtype=float)
        if inner.size == 0:
            raise ValueError(
                f"variables table: continuous variable '{name}' has no 'clinical_edges'; "
                "binning='clinical' needs them"
            )
    inner = np.unique(np.asarray(inner, dtype=np.float64))
    return inner[(inner > low) & (inner < high)].tolist()


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


# ----------------------------------------------------------------------------------------------
# Column helpers (clear errors naming table and column)


def _require_columns(frame: pd.DataFrame, table: str, expected: Sequence[str]) -> None:
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ValueError(f"table '{table}' lacks column(s) {missing}; expected {list(expected)}")


def _float_column(frame: pd.DataFrame, table: str, column: str, allow_null: bool) -> np.ndarray:
    series = frame[column]
    try:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise ValueError(f"table '{table}': column '{column}' must be numeric, "
                         f"got dtype {series.dtype}") from None
    if not allow_null and np.isnan(values).any():
        raise ValueError(f"table '{table}': column '{column}' has "
                         f"{int(np.isnan(values).sum())} NULL value(s)")
    return values


def _int_column(frame: pd.DataFrame, table: str, column: str) -> np.ndarray:
    series = frame[column]
    if series.dtype == np.int64:
        return series.to_numpy()
    values = _float_column(frame, table, column, allow_null=False)
    if np.any(values != np.round(values)):
        raise ValueError(f"table '{table}': column '{column}' must hold integers")
    return values.astype(np.int64)


def _to_arrow_strings(series: pd.Series, table: str, column: str, keep_dictionary: bool = False):
    """The column as an arrow string array (zero-copy for arrow-backed pandas strings).

    With `keep_dictionary`, a categorical column stays dictionary-encoded (lookups then hash
    only the categories).
    """
    try:
        arr = pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array(series.astype(object).where(series.notna(), None), from_pandas=True)
    if pa.types.is_null(arr.type):
        return pa.array([None] * len(series), type=pa.string())
    value_type = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
        raise ValueError(f"table '{table}': column '{column}' must hold text, got {arr.type}")
    if pa.types.is_dictionary(arr.type) and not keep_dictionary:
        arr = arr.cast(value_type)
    return arr


def _lookup(series: pd.Series, values: Sequence[str], table: str, column: str) -> np.ndarray:
    """Position of each entry of `series` in `values` (int64), -1 for NULL or absent."""
    values = [str(v) for v in values]
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = _lookup(pd.Series(series.cat.categories.astype(str)), values, table, column)
        codes = series.cat.codes.to_numpy().astype(np.int64)
        return np.where(codes >= 0, cats[np.maximum(codes, 0)] if len(cats) else -1, -1)
    if len(series) == 0:
        return np.zeros(0, dtype=np.int64)
    arr = _to_arrow_strings(series, table, column)
    if not values:
        return np.full(len(series), -1, dtype=np.int64)
    idx = pc.index_in(arr, value_set=pa.array(values, type=arr.type))
    return _arrow_index(idx).astype(np.int64)


def _distinct_text(series: pd.Series, table: str, column: str) -> list[str]:
    if len(series) == 0:
        return []
    arr = _to_arrow_strings(series, table, column)
    uniq = pc.unique(pc.drop_null(arr))
    return sorted(str(x) for x in uniq.to_pylist() if x is not None)


# ----------------------------------------------------------------------------------------------
# Visits and row structure shared by fit and encode


@dataclass
class _Visits:
    frame_order: np.ndarray   # positions in the visits frame, sorted by (subject, visit_index)
    subject: np.ndarray       # per sorted visit
    icustay: np.ndarray
    patient: np.ndarray       # patient index per sorted visit
    is_first: np.ndarray
    patient_subject: np.ndarray
    _icu_sorted: np.ndarray
    _icu_pos: np.ndarray

    @property
    def n(self) -> int:
        return len(self.icustay)

    def position_of(self, icustay_ids: np.ndarray, table: str) -> np.ndarray:
        """Sorted-visit index of each row's icustay_id (rows are usually grouped by stay)."""
        n = len(icustay_ids)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        heads = np.concatenate([[0], np.flatnonzero(icustay_ids[1:] != icustay_ids[:-1]) + 1])
        head_ids = icustay_ids[heads]
        where = np.searchsorted(self._icu_sorted, head_ids)
        where = np.minimum(where, len(self._icu_sorted) - 1)
        unknown = self._icu_sorted[where] != head_ids if len(self._icu_sorted) else np.ones(len(heads), bool)
        if np.any(unknown):
            raise ValueError(
                f"table '{table}': {int(unknown.sum())} run(s) of rows have an icustay_id that is "
                "not in table 'visits' (column 'icustay_id')"
            )
        lengths = np.diff(np.append(heads, n))
        return np.repeat(self._icu_pos[where], lengths)


def _prepare_visits(visits: pd.DataFrame) -> _Visits:
    subject = _int_column(visits, "visits", "subject_id")
    visit_index = _int_column(visits, "visits", "visit_index")
    icustay = _int_column(visits, "visits", "icustay_id")
    order = np.lexsort((visit_index, subject))
    subject, icustay = subject[order], icustay[order]
    new_patient = np.ones(len(subject), dtype=bool)
    new_patient[1:] = subject[1:] != subject[:-1]
    patient = np.cumsum(new_patient) - 1
    icu_order = np.argsort(icustay, kind="stable")
    icu_sorted = icustay[icu_order]
    if len(icu_sorted) > 1 and np.any(icu_sorted[1:] == icu_sorted[:-1]):
        raise ValueError("table 'visits': column 'icustay_id' must be unique")
    return _Visits(order, subject, icustay, patient, new_patient, subject[new_patient],
                   icu_sorted, icu_order)


def _rows_and_gaps(gv: np.ndarray, hours: np.ndarray):
    """For value rows sorted by (visit, hours): row heads and each row's gap to the previous row.

    The first row of a visit is measured from ICU admission (hour 0).
    """
    n = len(gv)
    new_row = np.ones(n, dtype=bool)
    if n > 1:
        new_row[1:] = (gv[1:] != gv[:-1]) | (hours[1:] != hours[:-1])
    heads = np.flatnonzero(new_row)
    row_gv, row_hours = gv[heads], hours[heads]
    prev = np.zeros(len(heads))
    same_visit = np.zeros(len(heads), dtype=bool)
    if len(heads) > 1:
        same_visit[1:] = row_gv[1:] == row_gv[:-1]
        prev[1:] = np.where(same_visit[1:], row_hours[:-1], 0.0)
    gaps = row_hours - prev
    return heads, row_gv, gaps


def _one_sorted_run_per_visit(gv: np.ndarray, hours: np.ndarray) -> bool:
    """True if each visit's rows are one contiguous run in time order (ties allowed)."""
    if len(gv) < 2:
        return True
    same = gv[1:] == gv[:-1]
    if np.any(same & (hours[1:] < hours[:-1])):
        return False
    run_gv = gv[np.concatenate([[0], np.flatnonzero(~same) + 1])]
    return int(np.bincount(run_gv).max()) <= 1


def _code_order(gv, is_px, seq, token, n_visits: int, vocab_size: int) -> np.ndarray:
    """Order codes by (visit, diagnosis before procedure, seq_num, token).

    One packed int64 key and a stable (run-adaptive) argsort instead of a 4-key lexsort.
    """
    bits_gv = max(int(n_visits).bit_length(), 1)
    bits_tok = max(int(vocab_size).bit_length(), 1)
    bits_seq = 16
    finite = np.isfinite(seq)
    integral = np.all(seq[finite] == np.round(seq[finite])) and np.all(seq[finite] >= 0)
    if bits_gv + 1 + bits_seq + bits_tok > 62 or not integral:
        return np.lexsort((token, seq, is_px, gv))
    seq_key = np.where(finite, np.minimum(seq, (1 << bits_seq) - 1), (1 << bits_seq) - 1)
    key = gv.astype(np.int64) << (1 + bits_seq + bits_tok)
    key |= is_px.astype(np.int64) << (bits_seq + bits_tok)
    key |= seq_key.astype(np.int64) << bits_tok
    key |= token.astype(np.int64)
    return np.argsort(key, kind="stable")


def _excl_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


def _group_rank(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group counts and the rank of each element inside its group (input sorted by group)."""
    counts = np.bincount(group, minlength=n_groups).astype(np.int64)
    start = _excl_cumsum(counts)
    return counts, np.arange(len(group), dtype=np.int64) - start[group]


# ----------------------------------------------------------------------------------------------
# The vocabulary


def _canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)


class TokenVocabulary:
    """Token ids, bin edges and within-bin distributions, fitted on the train split only.

    Holds only aggregates (bin edges, within-bin quantiles of >= `min_bin_count` values, code
    and category names): no patient rows, so it may be logged to MLflow.
    """

    def __init__(
        self,
        *,
        config: VocabularyConfig,
        variables: list[VariableSpec],
        scales: dict[str, NumericBins],
        covariates: dict[str, list[str]],
        phenotypes: list[str],
        codes: dict[str, list[str]],
        los_quantiles: list[float] | None,
        fit_stats: dict,
    ):
        self.config = config
        self.variables = sorted(variables, key=lambda v: v.name)
        self.scales = scales
        self.covariates = {col: sorted(covariates[col]) for col, _ in COVARIATES}
        self.phenotypes = sorted(phenotypes)
        self.codes = {name: sorted(codes[name]) for name, _, _ in CODE_TYPES}
        self.los_quantiles = los_quantiles
        self.fit_stats = fit_stats
        self._build()
        self.version = hashlib.sha256(_canonical_json(self.to_dict()).encode()).hexdigest()[:12]

    # ---- construction of the id space
    def _build(self) -> None:
        tokens: list[str] = []
        types: list[int] = []
        k = self.config.within_bin_quantiles

        def add(name: str, kind: TokenType) -> int:
            tokens.append(name)
            types.append(int(kind))
            return len(tokens) - 1

        for name, kind in zip(SPECIAL_TOKENS, (T.PAD, T.BOS, T.EOS, T.END_COVAR, T.END_LABEL,
                                               T.END_CODE, T.END_TS, T.END_ADM)):
            add(name, kind)
        (self.pad_id, self.bos_id, self.eos_id, self.end_covar_id, self.end_label_id,
         self.end_code_id, self.end_ts_id, self.end_adm_id) = range(len(SPECIAL_TOKENS))

        qrows: list[tuple[int, np.ndarray]] = []  # (token id, quantile row)
        bounds: list[tuple[int, float, float]] = []

        def add_scale(prefix: str, bins: NumericBins, kind: TokenType) -> int:
            table = bins.quantile_table(k)
            low, high = bins.bounds()
            base = len(tokens)
            for i in range(bins.n_bins):
                tid = add(f"{prefix}//{i}", kind)
                qrows.append((tid, table[i]))
                bounds.append((tid, low[i], high[i]))
            return base

        self.gap_visit_base = add_scale("GAP_VISIT", self.scales["GAP_VISIT"], T.GAP_VISIT)
        self.age_base = add_scale("AGE", self.scales["AGE"], T.AGE)
        self._covariate_ids: dict[str, dict[str, int]] = {}
        self._covariate_unk: dict[str, int] = {}
        covariate_value: dict[int, str | None] = {}
        for col, kind in COVARIATES:
            unk = add(f"{col.upper()}//{UNK}", kind)
            covariate_value[unk] = None
            ids = {}
            for cat in self.covariates[col]:
                ids[cat] = add(f"{col.upper()}//{cat}", kind)
                covariate_value[ids[cat]] = cat
            self._covariate_ids[col] = ids
            self._covariate_unk[col] = unk
        self.mortality_base = add("MORTALITY//0", T.MORTALITY)
        add("MORTALITY//1", T.MORTALITY)
        self.phenotype_base = len(tokens)
        for name in self.phenotypes:
            add(f"PHENO//{name}", T.PHENOTYPE)
        self._code_base: dict[str, int] = {}
        code_of: dict[int, tuple[str, str]] = {}
        for code_type, prefix, kind in CODE_TYPES:
            self._code_base[code_type] = len(tokens)
            code_of[add(f"{prefix}//{UNK}", kind)] = (code_type, UNK)
            for code in self.codes[code_type]:
                code_of[add(f"{prefix}//{code}", kind)] = (code_type, code)
        self.value_base = np.zeros(len(self.variables), dtype=np.int64)
        value_var: dict[int, int] = {}
        category_of: dict[int, tuple[str, float]] = {}
        for j, var in enumerate(self.variables):
            self.value_base[j] = len(tokens)
            if var.kind == "continuous":
                table = var.bins.quantile_table(k)
                low, high = var.bins.bounds()
                for i in range(var.bins.n_bins):
                    tid = add(f"{var.name}//{i}", T.VALUE)
                    value_var[tid] = j
                    qrows.append((tid, table[i]))
                    bounds.append((tid, low[i], high[i]))
            else:
                for cat, score in zip(var.categories, var.category_values):
                    tid = add(f"{var.name}//{cat}", T.VALUE)
                    value_var[tid] = j
                    category_of[tid] = (cat, np.nan if score is None else float(score))
        self.dt_base = add_scale("DT", self.scales["DT"], T.DT)

        if len(set(tokens)) != len(tokens):
            dupes = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"vocabulary: duplicate token strings {dupes[:5]}")
        self.tokens = tokens
        self.size = len(tokens)
        self._ids = {t: i for i, t in enumerate(tokens)}
        self.token_types = np.asarray(types, dtype=np.int8)
        # Values inside a measurement row are ordered by variable *name*: the order the marts
        # loader returns rows in, so encoding needs no sort (and independent of the seed's order).
        names = [v.name for v in self.variables]
        self._rank_of_var = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"),
                                       kind="stable").astype(np.int16)
        self.value_rank = np.full(self.size, -1, dtype=np.int64)
        self.value_var = np.full(self.size, -1, dtype=np.int64)
        for tid, j in value_var.items():
            self.value_rank[tid] = self._rank_of_var[j]
            self.value_var[tid] = j
        self.bin_low = np.full(self.size, np.nan)
        self.bin_high = np.full(self.size, np.nan)
        for tid, lo, hi in bounds:
            self.bin_low[tid], self.bin_high[tid] = lo, hi
        self._qrow = np.full(self.size, -1, dtype=np.int64)
        self._qtable = np.zeros((max(len(qrows), 1), k))
        for r, (tid, row) in enumerate(qrows):
            self._qrow[tid] = r
            self._qtable[r] = row
        self._text = np.full(self.size, None, dtype=object)  # decoded text per token
        self._number = np.full(self.size, np.nan)             # decoded categorical score
        for tid, value in covariate_value.items():
            self._text[tid] = value
        for tid, (code_type, code) in code_of.items():
            self._text[tid] = code
        for i, name in enumerate(self.phenotypes):
            self._text[self.phenotype_base + i] = name
        for tid, (cat, score) in category_of.items():
            self._text[tid] = cat
            self._number[tid] = score
        self._var_continuous = np.array([v.kind == "continuous" for v in self.variables], dtype=bool)
        self.variable_names = [v.name for v in self.variables]
        # Lookup for categorical values: [n_variables, n_union_categories] -> token id or -1.
        self._category_union = sorted({c for v in self.variables for c in v.categories})
        union_pos = {c: i for i, c in enumerate(self._category_union)}
        self._category_token = np.full((len(self.variables), max(len(union_pos), 1)), -1, np.int64)
        for j, var in enumerate(self.variables):
            for i, cat in enumerate(var.categories):
                self._category_token[j, union_pos[cat]] = self.value_base[j] + i
        self._grid = _BinGrid(self.variables)
        self._value_base32 = self.value_base.astype(np.int32)
        self._valid_low = np.array([v.valid_low for v in self.variables], dtype=np.float64)
        self._valid_high = np.array([v.valid_high for v in self.variables], dtype=np.float64)

    # ---- fitting
    @classmethod
    def fit(
        cls,
        train_cohort: StagedCohort,
        config: VocabularyConfig | None = None,
        variables: pd.DataFrame | None = None,
    ) -> "TokenVocabulary":
        """Fit on the train split: codes, categories, bin edges and within-bin quantiles."""
        config = config or VocabularyConfig()
        train_cohort.validate_columns("train_cohort")
        table = load_variables() if variables is None else _check_variables_table(variables)
        k_levels = np.linspace(0.0, 1.0, config.within_bin_quantiles)
        stats: dict = {}
        visits = train_cohort.visits
        vis = _prepare_visits(visits)
        stats["n_patients"] = int(len(vis.patient_subject))
        stats["n_visits"] = int(vis.n)

        # Covariates and scales.
        covariates = {}
        for col, _ in COVARIATES:
            covariates[col] = [c for c in _distinct_text(visits[col], "visits", col) if c != UNK]
        age = _float_column(visits, "visits", "age_years", allow_null=False)
        capped = visits["age_is_capped"].to_numpy(dtype=bool, na_value=False) | (age >= AGE_CAP)
        age_values = np.sort(np.clip(age[~capped], AGE_EDGES[0], AGE_CAP))
        age_values = age_values[age_values < AGE_CAP]
        scales = {"AGE": _fit_bins(age_values, AGE_EDGES, config, merge=False, top_bucket=AGE_CAP)}
        gap = _float_column(visits, "visits", "hours_since_previous_visit", allow_null=True)
        gap = gap[vis.frame_order][~vis.is_first]
        if np.isnan(gap).any():
            raise ValueError("table 'visits': column 'hours_since_previous_visit' is NULL for "
                             f"{int(np.isnan(gap).sum())} visit(s) that are not a patient's first")
        gap = np.sort(np.clip(gap, GAP_VISIT_EDGES[0], GAP_VISIT_EDGES[-1]))
        scales["GAP_VISIT"] = _fit_bins(gap, GAP_VISIT_EDGES, config, merge=False)
        los = _float_column(visits, "visits", "los_hours", allow_null=True)
        los = np.sort(los[~np.isnan(los)])
        los_quantiles = (np.quantile(los, k_levels).tolist()
                         if len(los) >= config.min_bin_count else None)

        # Phenotypes and codes.
        phenotypes = _distinct_text(train_cohort.visit_phenotypes["phenotype"],
                                    "visit_phenotypes", "phenotype")
        codes_frame = train_cohort.visit_codes
        code_type = codes_frame["code_type"]
        _check_code_types(code_type)
        codes = {}
        for name, _, _ in CODE_TYPES:
            sub = codes_frame.loc[(code_type == name).to_numpy(dtype=bool, na_value=False),
                                  "icd9_code"].dropna().astype(str)
            counts = sub.value_counts()
            keep = counts[counts >= config.min_code_count]
            codes[name] = sorted(c for c in keep.index if c != UNK)
            total = int(counts.sum())
            stats[f"n_{name}_occurrences"] = total
            stats[f"{name}_coverage"] = float(keep.sum() / total) if total else 1.0
            stats[f"n_{name}_codes_seen"] = int(len(counts))

        # Measurements.
        meas = train_cohort.measurements
        var = _lookup(meas["variable"], table["variable"], "measurements", "variable")
        _raise_unknown_variables(meas, var)
        value = _float_column(meas, "measurements", "value", allow_null=True)
        hours = _float_column(meas, "measurements", "hours", allow_null=False)
        text = meas["value_text"]
        var_specs: list[VariableSpec] = []
        n_clipped = 0
        n_values = 0
        order = np.argsort(var, kind="stable")
        counts = np.bincount(var, minlength=len(table))
        starts = np.concatenate([[0], np.cumsum(counts)])
        present = np.zeros(len(var), dtype=bool)
        for j, row in enumerate(table.itertuples(index=False)):
            rows = order[starts[j]:starts[j + 1]]
            low, high = float(row.valid_low), float(row.valid_high)
            if row.kind == "continuous":
                v = value[rows]
                ok = ~np.isnan(v)
                v = v[ok]
                present[rows[ok]] = True
                n_clipped += int(np.sum((v < low) | (v > high)))
                v = np.sort(np.clip(v, low, high))
                inner = _candidate_inner_edges(v, low, high, config, row.clinical_edges, row.variable)
                bins = _fit_bins(v, [low, *inner, high], config, merge=True)
                var_specs.append(VariableSpec(row.variable, "continuous", low, high, bins))
                n_values += len(v)
            else:
                cat_text = _category_text(text.iloc[rows], value[rows])
                ok = cat_text.notna().to_numpy()
                present[rows[ok]] = True
                frame = pd.DataFrame({"c": cat_text[ok].astype(str).to_numpy(),
                                      "v": value[rows][ok]})
                medians = frame.groupby("c", sort=True)["v"].median()
                cats = [c for c in medians.index.tolist()]
                vals = [None if pd.isna(x) else float(x) for x in medians.to_numpy()]
                var_specs.append(VariableSpec(row.variable, "categorical", low, high, None, cats, vals))
                n_values += int(ok.sum())
        stats["n_measurement_values"] = n_values
        stats["measurement_values_clipped"] = float(n_clipped / n_values) if n_values else 0.0
        # Gaps between measurement rows (over present values, in stay/time order).
        gv = vis.position_of(_int_column(meas, "measurements", "icustay_id"), "measurements")[present]
        h = hours[present]
        if not _one_sorted_run_per_visit(gv, h):
            o = np.lexsort((h, gv))
            gv, h = gv[o], h[o]
        _, _, dt = _rows_and_gaps(gv, h)
        dt = np.sort(np.clip(dt, DT_EDGES[0], DT_EDGES[-1]))
        scales["DT"] = _fit_bins(dt, DT_EDGES, config, merge=False)
        stats["n_measurement_rows"] = int(len(dt))
        return cls(config=config, variables=var_specs, scales=scales, covariates=covariates,
                   phenotypes=phenotypes, codes=codes, los_quantiles=los_quantiles, fit_stats=stats)

    # ---- serialization
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "config": asdict(self.config),
            "variables": [v.to_dict() for v in self.variables],
            "scales": {name: bins.to_dict() for name, bins in sorted(self.scales.items())},
            "covariates": self.covariates,
            "phenotypes": self.phenotypes,
            "codes": self.codes,
            "los_quantiles": self.los_quantiles,
            "fit_stats": self.fit_stats,
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, d: dict, origin: str = "vocabulary") -> "TokenVocabulary":
        if d.get("format") != FORMAT:
            raise ValueError(f"{origin}: format {d.get('format')!r}, expected {FORMAT!r}")
        vocab = cls(
            config=VocabularyConfig(**d["config"]),
            variables=[VariableSpec.from_dict(v) for v in d["variables"]],
            scales={k: NumericBins.from_dict(v) for k, v in d["scales"].items()},
            covariates=d["covariates"],
            phenotypes=d["phenotypes"],
            codes=d["codes"],
            los_quantiles=d["los_quantiles"],
            fit_stats=d["fit_stats"],
        )
        if d.get("tokens") is not None and d["tokens"] != vocab.tokens:
            raise ValueError(f"{origin}: stored token list does not match the rebuilt one")
        if d.get("version") is not None and d["version"] != vocab.version:
            raise ValueError(f"{origin}: stored version {d['version']} != content hash {vocab.version}")
        return vocab

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {**self.to_dict(), "version": self.version}
        path.write_text(json.dumps(content, indent=1, sort_keys=True, allow_nan=False))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "TokenVocabulary":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(d, origin=str(path))

    # ---- lookups
    def id_of(self, token: str) -> int:
        try:
            return self._ids[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in vocabulary {self.version}") from None

    def token_of(self, token_id: int) -> str:
        if not 0 <= int(token_id) < self.size:
            raise KeyError(f"token id {token_id} outside [0, {self.size})")
        return self.tokens[int(token_id)]

    def ids_of_type(self, kind: TokenType) -> np.ndarray:
        return np.flatnonzero(self.token_types == kind)

    def variable(self, name: str) -> VariableSpec:
        for var in self.variables:
            if var.name == name:
                return var
        raise KeyError(f"variable {name!r} is not in vocabulary {self.version}")

    def covariate_id(self, column: str, value: str | None) -> int:
        ids = self._covariate_ids[column]
        if value is None or value not in ids:
            return self._covariate_unk[column]
        return ids[value]

    def code_id(self, code_type: str, code: str | None) -> int:
        base = self._code_base[code_type]
        codes = self.codes[code_type]
        i = int(np.searchsorted(codes, code)) if code is not None else len(codes)
        return base + 1 + i if i < len(codes) and codes[i] == code else base

    def summary(self) -> dict:
        """Sizes by token type, bins per variable, coverage of the train data."""
        names, counts = np.unique(self.token_types, return_counts=True)
        return {
            "version": self.version,
            "size": self.size,
            "binning": self.config.binning,
            "size_by_type": {TokenType(int(n)).name: int(c) for n, c in zip(names, counts)},
            "bins_per_variable": {
                v.name: (v.bins.n_bins if v.bins is not None else len(v.categories))
                for v in self.variables
            },
            "bins_with_quantiles": int(sum(
                q is not None for v in self.variables if v.bins is not None for q in v.bins.quantiles
            )),
            "coverage": {
                "diagnosis_occurrences": self.fit_stats.get("diagnosis_coverage"),
                "procedure_occurrences": self.fit_stats.get("procedure_coverage"),
                # every train value gets a token (categories are fitted on train, numbers binned)
                "measurement_values": 1.0,
                "measurement_values_clipped": self.fit_stats.get("measurement_values_clipped"),
            },
            "fit": dict(self.fit_stats),
        }

    def __repr__(self) -> str:
        return f"TokenVocabulary(version={self.version!r}, size={self.size})"


def _check_code_types(code_type: pd.Series) -> None:
    values = set(_distinct_text(code_type, "visit_codes", "code_type"))
    bad = sorted(values - {"diagnosis", "procedure"})
    if bad or code_type.isna().any():
        raise ValueError(f"table 'visit_codes': column 'code_type' must be 'diagnosis' or "
                         f"'procedure', found {bad or ['NULL']}")


def _raise_unknown_variables(meas: pd.DataFrame, var: np.ndarray) -> None:
    if np.any(var < 0):
        bad = meas["variable"].iloc[np.flatnonzero(var < 0)[:1000]]
        names = sorted({str(x) for x in bad.dropna()})
        n_null = int(bad.isna().sum())
        raise ValueError(
            f"table 'measurements': column 'variable' has {int((var < 0).sum())} value(s) not in "
            f"the variables table, e.g. {names[:5]}{' and NULL' if n_null else ''}"
        )


def _category_text(text: pd.Series, value: np.ndarray) -> pd.Series:
    """The category of categorical rows: `value_text`, or the score formatted when text is NULL."""
    text = text.reset_index(drop=True).astype(object)
    fill = text.isna().to_numpy() & ~np.isnan(value)
    if fill.any():
        text = text.copy()
        text[fill] = np.char.mod("%g", value[fill]).astype(object)
    return text


# ----------------------------------------------------------------------------------------------
# Token sequences


@dataclass
class TokenSequences:
    """Flat token stream of many patients: patient i is ``tokens[offsets[i]:offsets[i+1]]``."""

    tokens: np.ndarray        # int32 [n_tokens]
    offsets: np.ndarray       # int64 [n_patients + 1]
    subject_ids: np.ndarray   # int64 [n_patients]
    visit_starts: np.ndarray  # int64 [n_visits]: flat position of each visit's first covariate
    vocab_version: str
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_patients(self) -> int:
        return len(self)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def patient(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("tokens", "offsets", "subject_ids", "visit_starts"):
            np.save(directory / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        meta = {"vocab_version": self.vocab_version, "n_patients": len(self),
                "n_tokens": int(len(self.tokens)), "stats": self.stats}
        (directory / "sequences.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> "TokenSequences":
        directory = Path(directory)
        meta_path = directory / "sequences.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no token sequences saved here")
        meta = json.loads(meta_path.read_text())
        mode = "r" if mmap else None
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode=mode)
                  for name in ("tokens", "offsets", "subject_ids", "visit_starts")}
        seqs = cls(**arrays, vocab_version=meta["vocab_version"], stats=meta.get("stats", {}))
        if len(seqs) != meta["n_patients"] or len(seqs.tokens) != meta["n_tokens"]:
            raise ValueError(f"{directory}: arrays do not match sequences.json")
        return seqs


_MIN_CHUNK_ROWS = 1 << 18  # measurement rows below which splitting the cohort costs more than it saves


def encode(cohort: StagedCohort, vocab: TokenVocabulary, n_threads: int | None = None
           ) -> TokenSequences:
    """Tokenize a staged cohort; patients in ascending subject_id, visits by visit_index.

    `n_threads` (default: up to 2 cores) threads encode disjoint blocks of patients. Patients are
    independent, so when every mart is ordered by subject_id (the marts loader's order) the
    cohort is cut into contiguous patient blocks and the blocks' arrays are concatenated; the
    result is identical to encoding the whole cohort at once.
    """
    n_threads = n_threads or min(2, os.cpu_count() or 1)
    cohort.validate_columns("cohort")
    blocks = _patient_blocks(cohort, n_threads) or [cohort]
    return encode_blocks(blocks.__getitem__, len(blocks), vocab, n_threads)


def encode_blocks(load_block, n_blocks: int, vocab: TokenVocabulary, n_threads: int | None = None,
                  progress=None) -> TokenSequences:
    """Tokenize a cohort that arrives in `n_blocks` blocks of whole patients, block i being
    `load_block(i)` (a StagedCohort; blocks in ascending subject_id order, disjoint).

    `n_threads` threads each load and encode blocks, so reading the marts (DuckDB) overlaps
    with encoding and at most ~2 blocks per thread are in memory at once. `progress(done, total)`
    is called after each block.
    """
    n_threads = n_threads or min(2, os.cpu_count() or 1)
    done = [0]
    lock = threading.Lock()

    def run(i: int) -> TokenSequences:
        block = load_block(i)
        block.validate_columns(f"cohort block {i}")
        part = _encode_block(block, vocab)
        if progress is not None:
            with lock:
                done[0] += 1
                progress(done[0], n_blocks)
        return part

    if n_threads > 1 and n_blocks > 1:
        # The compiled loops, numpy and arrow release the GIL, so blocks run in parallel.
        with ThreadPoolExecutor(n_threads) as pool:
            parts = list(pool.map(run, range(n_blocks)))
    else:
        parts = [run(i) for i in range(n_blocks)]
    if not parts:
        raise ValueError("encode_blocks: no blocks to encode")
    return parts[0] if len(parts) == 1 else _concatenate(parts, vocab.version)


def encode_marts(con, vocab: TokenVocabulary, subject_ids=None, schema: str = "main",
                 n_threads: int | None = None, patients_per_block: int = 3000,
                 progress=None) -> TokenSequences:
    """Staged DuckDB marts -> token arrays, for `subject_ids` (None: every patient).

    The patients are read and encoded in blocks of about `patients_per_block` by `n_threads`
    threads (see `encode_blocks`); the result is identical to
    `encode(load_staged_cohort(con, subject_ids), vocab)`. While the threads run, DuckDB uses
    one thread per query: two queries with two DuckDB threads each on two cores lose ~20 % to
    oversubscription.
    """
    from synehrgy_assets.core.cohort import MartReader

    n_threads = n_threads or min(2, os.cpu_count() or 1)
    with MartReader(con, subject_ids, schema) as reader:
        n_patients = len(reader.all_subjects if reader.ids is None else reader.ids)
        blocks = reader.blocks(max(1, math.ceil(n_patients / max(patients_per_block, 1))))
        pipelined = n_threads > 1 and len(blocks) > 1
        threads_before = con.sql("select current_setting('threads')").fetchall()[0][0]
        if pipelined:
            con.execute("set threads = 1")
        try:
            return encode_blocks(lambda i: reader.load(blocks[i], check_order=False),
                                 len(blocks), vocab, n_threads, progress)
        finally:
            if pipelined:
                con.execute(f"set threads = {int(threads_before)}")


def _subject_column(frame: pd.DataFrame) -> np.ndarray | None:
    """subject_id as int64 if the frame is ordered by it (no NULLs), else None."""
    try:
        subject = frame["subject_id"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError):
        return None  # NULL or non-numeric subject_id: the one-block path names the problem
    if len(subject) > 1 and np.any(subject[1:] < subject[:-1]):
        return None
    return subject


def _patient_blocks(cohort: StagedCohort, n_threads: int) -> list[StagedCohort]:
    """Contiguous blocks of patients with about equal measurement rows, or [] to encode whole."""
    n_rows = len(cohort.measurements)
    n_blocks = min(4 * n_threads, n_rows // _MIN_CHUNK_ROWS)
    if n_threads < 2 or n_blocks < 2:
        return []
    subjects = []
    for frame in cohort.frames():
        subject = _subject_column(frame)
        if subject is None:
            return []
        subjects.append(subject)
    m_subject = subjects[3]
    # Cut at the first row of a patient, near equal shares of the measurement rows.
    cuts = np.unique(m_subject[np.linspace(0, n_rows, n_blocks + 1)[1:-1].astype(np.int64)])
    cuts = cuts[cuts > m_subject[0]]
    if len(cuts) == 0:
        return []
    blocks = []
    bounds = [np.concatenate([[0], np.searchsorted(s, cuts), [len(s)]]) for s in subjects]
    for b in range(len(cuts) + 1):
        blocks.append(StagedCohort(*(frame.iloc[bound[b]:bound[b + 1]]
                                     for frame, bound in zip(cohort.frames(), bounds))))
    return blocks


def _concatenate(parts: list[TokenSequences], vocab_version: str) -> TokenSequences:
    lengths = [len(p.tokens) for p in parts]
    shift = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    offsets = [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shift)]
    stats: dict = {}
    for p in parts:
        for key, value in p.stats.items():
            stats[key] = stats.get(key, 0) + value
    return TokenSequences(
        np.concatenate([p.tokens for p in parts]),
        np.concatenate(offsets),
        np.concatenate([p.subject_ids for p in parts]),
        np.concatenate([p.visit_starts + s for p, s in zip(parts, shift)]),
        vocab_version, stats,
    )


def _encode_block(cohort: StagedCohort, vocab: TokenVocabulary) -> TokenSequences:
    stats: dict = {}
    visits = cohort.visits
    vis = _prepare_visits(visits)
    n_visits = vis.n
    fo = vis.frame_order

    # Header tokens per visit: [gap] age gender ethnicity insurance admission_type careunit.
    age = _float_column(visits, "visits", "age_years", allow_null=False)[fo]
    capped = visits["age_is_capped"].to_numpy(dtype=bool, na_value=False)[fo] | (age >= AGE_CAP)
    stats["n_ages_below_18"] = int(np.sum(age < AGE_EDGES[0]))
    age_bin = vocab.scales["AGE"].assign(np.where(capped, AGE_CAP, age))
    header = np.empty((n_visits, 9), dtype=np.int64)
    gap = _float_column(visits, "visits", "hours_since_previous_visit", allow_null=True)[fo]
    later = ~vis.is_first
    if np.isnan(gap[later]).any():
        raise ValueError("table 'visits': column 'hours_since_previous_visit' is NULL for "
                         f"{int(np.isnan(gap[later]).sum())} visit(s) that are not a patient's first")
    gap_scale = vocab.scales["GAP_VISIT"]
    stats["n_visit_gaps_clipped"] = int(np.sum(later & ((gap < 0) | (gap > gap_scale.edges[-1]))))
    header[:, 0] = vocab.gap_visit_base + gap_scale.assign(np.nan_to_num(gap))
    header[:, 1] = vocab.age_base + age_bin
    for c, (col, _) in enumerate(COVARIATES):
        cats = vocab.covariates[col]
        pos = _lookup(visits[col], cats, "visits", col)[fo]
        unk = vocab.covariate_id(col, None)
        header[:, 2 + c] = np.where(pos >= 0, unk + 1 + pos, unk)
        stats[f"n_unknown_{col}"] = int(np.sum(pos < 0))
    header[:, 7] = vocab.end_covar_id
    mort = _float_column(visits, "visits", "mortality_inhospital", allow_null=False)[fo]
    if not np.isin(mort, (0.0, 1.0)).all():
        raise ValueError("table 'visits': column 'mortality_inhospital' must be 0 or 1")
    header[:, 8] = vocab.mortality_base + mort.astype(np.int64)
    header_len = np.where(later, 9, 8)

    # Phenotypes: ascending token id, no duplicates.
    ph = cohort.visit_phenotypes
    ph_pos = _lookup(ph["phenotype"], vocab.phenotypes, "visit_phenotypes", "phenotype")
    ph_gv = vis.position_of(_int_column(ph, "visit_phenotypes", "icustay_id"), "visit_phenotypes")
    stats["n_unknown_phenotypes"] = int(np.sum(ph_pos < 0))
    keep = ph_pos >= 0
    ph_tok = vocab.phenotype_base + ph_pos[keep]
    ph_gv = ph_gv[keep]
    key = np.sort(ph_gv * vocab.size + ph_tok)
    key = key[np.append(True, key[1:] != key[:-1])] if len(key) else key  # deduplicated
    ph_gv, ph_tok = key // vocab.size, key % vocab.size
    n_ph, ph_rank = _group_rank(ph_gv, n_visits)

    # Codes: diagnoses by seq_num, then procedures by seq_num; first occurrence kept.
    cd = cohort.visit_codes
    _check_code_types(cd["code_type"])
    is_px = (cd["code_type"] == "procedure").to_numpy(dtype=bool, na_value=False)
    dx_pos = _lookup(cd["icd9_code"], vocab.codes["diagnosis"], "visit_codes", "icd9_code")
    px_pos = _lookup(cd["icd9_code"], vocab.codes["procedure"], "visit_codes", "icd9_code")
    pos = np.where(is_px, px_pos, dx_pos)
    base = np.where(is_px, vocab._code_base["procedure"], vocab._code_base["diagnosis"])
    cd_tok = base + 1 + pos  # pos == -1 gives the type's UNK token (base)
    null_code = cd["icd9_code"].isna().to_numpy()
    stats["n_null_codes"] = int(null_code.sum())
    stats["n_unknown_codes"] = int(np.sum((pos < 0) & ~null_code))
    cd_gv = vis.position_of(_int_column(cd, "visit_codes", "icustay_id"), "visit_codes")
    seq = _float_column(cd, "visit_codes", "seq_num", allow_null=True)
    seq = np.where(np.isnan(seq), np.inf, seq)
    keep = ~null_code
    cd_gv, cd_tok, cd_px, seq = cd_gv[keep], cd_tok[keep], is_px[keep], seq[keep]
    order = _code_order(cd_gv, cd_px, seq, cd_tok, n_visits, vocab.size)
    cd_gv, cd_tok = cd_gv[order], cd_tok[order]
    _, first = np.unique(cd_gv * vocab.size + cd_tok, return_index=True)
    first_mask = np.zeros(len(cd_gv), dtype=bool)
    first_mask[first] = True
    stats["n_duplicate_codes"] = int(len(cd_gv) - first_mask.sum())
    cd_gv, cd_tok = cd_gv[first_mask], cd_tok[first_mask]
    n_cd, cd_rank = _group_rank(cd_gv, n_visits)

    # Measurements.
    m = _measurement_tokens(cohort.measurements, vocab, vis, stats)
    n_val, n_row = m.n_val, m.n_row

    # Positions: every section's start is arithmetic on the per-visit counts.
    visit_len = header_len + n_ph + 1 + n_cd + 1 + n_val + n_row + 2
    patient_len = np.bincount(vis.patient, weights=visit_len, minlength=len(vis.patient_subject))
    patient_len = patient_len.astype(np.int64) + 2
    offsets = np.concatenate([[0], np.cumsum(patient_len)]).astype(np.int64)
    visit_start = _excl_cumsum(visit_len) + 2 * vis.patient + 1
    out = np.empty(int(offsets[-1]), dtype=np.int32)
    out[offsets[:-1]] = vocab.bos_id
    out[offsets[1:] - 1] = vocab.eos_id
    first_v = np.flatnonzero(vis.is_first)
    later_v = np.flatnonzero(later)
    out[(visit_start[first_v, None] + np.arange(8)).ravel()] = header[first_v, 1:].ravel()
    out[(visit_start[later_v, None] + np.arange(9)).ravel()] = header[later_v].ravel()
    ph_start = visit_start + header_len
    out[ph_start[ph_gv] + ph_rank] = ph_tok
    out[ph_start + n_ph] = vocab.end_label_id
    cd_start = ph_start + n_ph + 1
    out[cd_start[cd_gv] + cd_rank] = cd_tok
    out[cd_start + n_cd] = vocab.end_code_id
    m_start = cd_start + n_cd + 1
    if len(m.stream):
        # Each visit's segment moves as a block: position = stream position + segment shift.
        shift = m_start[m.seg_gv] - m.seg_start
        if len(shift) == 1 or np.all(shift[1:] == shift[:-1]):
            out[shift[0]:shift[0] + len(m.stream)] = m.stream
        else:
            pos = np.repeat(shift, m.seg_len)
            pos += np.arange(len(m.stream))
            out[pos] = m.stream
    ts_end = m_start + n_val + n_row
    out[ts_end] = vocab.end_ts_id
    out[ts_end + 1] = vocab.end_adm_id
    return TokenSequences(out, offsets, vis.patient_subject.astype(np.int64), visit_start,
                          vocab.version, stats)


@dataclass
class _Measured:
    """Measurement section of every visit: one int32 stream of value and DT tokens.

    The stream holds one contiguous segment per visit (values, each row closed by its DT token);
    segments come in the input's visit order, which need not be the sorted-visit order.
    """

    n_val: np.ndarray      # values per visit
    n_row: np.ndarray      # rows (= DT tokens) per visit
    stream: np.ndarray     # int32 [n_values + n_rows]
    seg_gv: np.ndarray     # visit of each segment
    seg_start: np.ndarray  # first stream position of each segment
    seg_len: np.ndarray


def _codes(series: pd.Series, table: str, column: str) -> tuple[np.ndarray, list[str]]:
    """int32 codes (-1: NULL) and their categories for a text column of any representation.

    Categoricals (the marts loader's measurement text) cost nothing; arrow dictionary columns
    cost a concatenation; plain strings are dictionary-encoded once."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return (series.cat.codes.to_numpy().astype(np.int32, copy=False),
                [str(c) for c in series.cat.categories])
    arr = _to_arrow_strings(series, table, column, keep_dictionary=True)
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    chunks = arr.unify_dictionaries().chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    chunks = [ch for ch in chunks if len(ch)]
    if not chunks:
        return np.zeros(0, dtype=np.int32), []
    codes = np.concatenate([
        ch.indices.cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False) for ch in chunks])
    return codes.astype(np.int32, copy=False), [str(c) for c in chunks[0].dictionary.to_pylist()]


def _positions(categories: list[str], values: Sequence[str], absent: int) -> np.ndarray:
    index = {v: i for i, v in enumerate(values)}
    return np.array([index.get(c, absent) for c in categories] or [absent], dtype=np.int32)


def _value_tokens(meas: pd.DataFrame, vocab: TokenVocabulary, stats: dict):
    """Token id of every measurement row (-1: missing or unknown category) and variable rank."""
    n = len(meas)
    var_code, var_cats = _codes(meas["variable"], "measurements", "variable")
    text_code, text_cats = _codes(meas["value_text"], "measurements", "value_text")
    value = _float_column(meas, "measurements", "value", allow_null=True)
    var_map = _positions(var_cats, vocab.variable_names, -1)
    text_map = _positions(text_cats, vocab._category_union, -2)
    token = np.empty(n, dtype=np.int32)
    rank = np.empty(n, dtype=np.int16)
    counts = np.zeros(4, dtype=np.int64)
    grid = vocab._grid
    _kernels.value_tokens(*map(_kernels.readonly, (
        var_code, var_map, value, text_code, text_map, vocab._var_continuous, grid.low,
        grid.scale)), int(grid.size), *map(_kernels.readonly, (
        grid.base, grid.edge, vocab._value_base32, vocab._valid_low, vocab._valid_high,
        vocab._category_token, vocab._rank_of_var)), token, rank, counts)
    if counts[0]:
        var = _lookup(meas["variable"], vocab.variable_names, "measurements", "variable")
        _raise_unknown_variables(meas, var)
    if counts[3]:
        # A categorical value without text: its score names the category ("%g" of the score).
        rows = np.flatnonzero(token == _kernels.NEEDS_SCORE_LOOKUP)
        formatted = pd.Series(np.char.mod("%g", value[rows]))
        pos = _lookup(formatted, vocab._category_union, "measurements", "value")
        var = var_map[var_code[rows]]
        cat_tok = np.where(pos >= 0, vocab._category_token[var, np.maximum(pos, 0)], -1)
        counts[2] += int(np.count_nonzero(cat_tok < 0))
        token[rows] = cat_tok
    stats["n_values_clipped"] = int(counts[1])
    stats["n_unknown_categories"] = int(counts[2])
    return token, rank


def _arrow_valid(arr) -> np.ndarray:
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    out = []
    for ch in chunks:
        if ch.null_count == 0:
            out.append(np.ones(len(ch), dtype=bool))
        elif ch.null_count == len(ch):
            out.append(np.zeros(len(ch), dtype=bool))
        else:
            bits = np.frombuffer(ch.buffers()[0], dtype=np.uint8)
            out.append(np.unpackbits(bits, bitorder="little")[ch.offset:ch.offset + len(ch)]
                       .astype(bool))
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def _arrow_index(result) -> np.ndarray:
    """int32 numpy view of an arrow int32 result, NULL -> -1 (cheaper than fill_null)."""
    chunks = result.chunks if isinstance(result, pa.ChunkedArray) else [result]
    out = []
    for ch in chunks:
        if ch.null_count == len(ch):
            out.append(np.full(len(ch), -1, dtype=np.int32))
            continue
        values = np.frombuffer(ch.buffers()[1], dtype=np.int32,
                               count=ch.offset + len(ch))[ch.offset:]
        if ch.null_count:
            values = np.where(_arrow_valid(ch), values, -1)
        out.append(values)
    return np.concatenate(out) if len(out) != 1 else out[0]


def _measurement_tokens(meas: pd.DataFrame, vocab: TokenVocabulary, vis: _Visits,
                        stats: dict) -> _Measured:
    """Value and DT tokens of every visit, ordered (hours, variable rank) within the visit.

    Rows in the marts loader's order (a stay's rows contiguous, by hours, then variable name,
    which is the rank order) go through one compiled pass. Any other order costs one lexsort
    first and gives the same tokens.
    """
    hours = _float_column(meas, "measurements", "hours", allow_null=False)
    gv = vis.position_of(_int_column(meas, "measurements", "icustay_id"), "measurements")
    token, rank = _value_tokens(meas, vocab, stats)
    dt = vocab.scales["DT"]
    args = (_kernels.readonly(dt.edges[1:-1]), float(dt.edges[-1]), int(vocab.dt_base), int(vis.n))
    rows = tuple(map(_kernels.readonly, (gv, hours, rank, token)))
    ok, stream, seg_gv, seg_start, seg_len, n_val, n_row, counts = _kernels.measurement_stream(
        *rows, *args)
    if not ok:
        keep = np.flatnonzero(token >= 0)
        order = keep[np.lexsort((token[keep], rank[keep], hours[keep], gv[keep]))]
        rows = tuple(_kernels.readonly(a[order]) for a in (gv, hours, rank, token))
        ok, stream, seg_gv, seg_start, seg_len, n_val, n_row, counts = _kernels.measurement_stream(
            *rows, *args)
        assert ok, "measurement rows still out of order after sorting"
    stats["n_duplicate_values"] = int(counts[0])
    stats["n_negative_first_gaps"] = int(counts[1])
    stats["n_gaps_clipped"] = int(counts[2])
    return _Measured(n_val=n_val, n_row=n_row, stream=stream, seg_gv=seg_gv,
                     seg_start=seg_start, seg_len=seg_len)


# ----------------------------------------------------------------------------------------------
# Decoding


@dataclass
class DecodeReport:
    """Structural validity of decoded sequences; invalid ones are dropped, never repaired."""

    n_sequences: int
    n_valid: int
    n_invalid: int
    reasons: dict
    valid: np.ndarray  # bool per input sequence

    @property
    def validity_rate(self) -> float:
        return self.n_valid / self.n_sequences if self.n_sequences else 0.0

    def to_dict(self) -> dict:
        return {"n_sequences": self.n_sequences, "n_valid": self.n_valid,
                "n_invalid": self.n_invalid, "validity_rate": self.validity_rate,
                "reasons": dict(self.reasons)}


def _flatten(sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(sequences, TokenSequences):
        return (np.asarray(sequences.tokens, dtype=np.int64), np.asarray(sequences.offsets),
                np.asarray(sequences.subject_ids))
    arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return flat, offsets, None


def _sample_bins(vocab: TokenVocabulary, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sample inside each token's bin, interpolating the stored quantiles."""
    table = vocab._qtable[vocab._qrow[tokens]]
    k = table.shape[1]
    u = rng.random(len(tokens)) * (k - 1)
    i = np.minimum(u.astype(np.int64), k - 2)
    frac = u - i
    rows = np.arange(len(tokens))
    lo, hi = table[rows, i], table[rows, i + 1]
    return lo + frac * (hi - lo)


def decode(
    sequences,
    vocab: TokenVocabulary,
    seed: int = 0,
    subject_ids: np.ndarray | None = None,
) -> tuple[StagedCohort, DecodeReport]:
    """Parse token sequences back into marts-shaped frames; invalid sequences are dropped.

    Subject ids: `subject_ids` if given, else the TokenSequences' own, else 0..n-1 (position of
    the sequence in the input). Stays get synthetic ids 0..n_visits-1 (`hadm_id` the same);
    intime/outtime are NULL (the MIMIC writer fills dates).
    """
    flat, offsets, own_ids = _flatten(sequences)
    n_seq = len(offsets) - 1
    if subject_ids is None:
        subject_ids = own_ids if own_ids is not None else np.arange(n_seq, dtype=np.int64)
    subject_ids = np.asarray(subject_ids, dtype=np.int64)
    if len(subject_ids) != n_seq:
        raise ValueError(f"decode: {len(subject_ids)} subject ids for {n_seq} sequences")
    if isinstance(sequences, TokenSequences) and sequences.vocab_version != vocab.version:
        raise ValueError(f"decode: sequences use vocabulary {sequences.vocab_version}, "
                         f"got vocabulary {vocab.version}")
    violations: Violations = find_violations(flat, offsets, vocab.token_types, vocab.value_rank)
    valid = violations.valid
    reasons = violations.counts()
    report = DecodeReport(n_seq, int(valid.sum()), int((~valid).sum()), reasons, valid)

    lengths = np.diff(offsets)
    keep_tok = np.repeat(valid, lengths)
    tokens = flat[keep_tok]
    seq_of = np.repeat(np.flatnonzero(valid), lengths[valid])
    types = vocab.token_types[tokens]
    rng = np.random.default_rng(seed)

    # Visits: one AGE token each.
    is_age = types == T.AGE
    visit_of = np.cumsum(is_age) - 1  # valid for every token from its visit's AGE onwards
    age_pos = np.flatnonzero(is_age)
    n_visits = len(age_pos)
    v_seq = seq_of[age_pos]
    v_first = np.ones(n_visits, dtype=bool)
    v_first[1:] = v_seq[1:] != v_seq[:-1]
    v_index = np.arange(n_visits) - np.maximum.accumulate(np.where(v_first, np.arange(n_visits), 0))

    def per_visit(kind: TokenType) -> np.ndarray:
        return tokens[types == kind]

    age_tok = tokens[age_pos]
    age_years = _sample_bins(vocab, age_tok, rng)
    age_capped = age_tok == vocab.age_base + vocab.scales["AGE"].n_bins - 1
    gap = np.full(n_visits, np.nan)
    gap[~v_first] = _sample_bins(vocab, per_visit(T.GAP_VISIT), rng)

    # Measurements: rows end with a DT token; values belong to the next DT.
    is_dt = types == T.DT
    dt_pos = np.flatnonzero(is_dt)
    row_visit = visit_of[dt_pos]
    row_gap = _sample_bins(vocab, tokens[dt_pos], rng)
    row_first = np.ones(len(dt_pos), dtype=bool)
    row_first[1:] = row_visit[1:] != row_visit[:-1]
    # Rows are distinct times: a later row comes at least one second after the previous one
    # (a zero gap only occurs for a stay's first row in training data).
    row_gap[~row_first] = np.maximum(row_gap[~row_first], MIN_ROW_GAP_HOURS)
    csum = np.cumsum(row_gap)
    base = np.maximum.accumulate(np.where(row_first, np.arange(len(dt_pos)), 0))
    row_hours = csum - (csum[base] - row_gap[base]) if len(dt_pos) else csum
    val_pos = np.flatnonzero(types == T.VALUE)
    val_tok = tokens[val_pos]
    val_row = np.cumsum(is_dt)[val_pos]  # DT tokens before the value = its row index
    var_idx = vocab.value_var[val_tok]
    continuous = vocab._var_continuous[var_idx]
    values = np.where(continuous, 0.0, vocab._number[val_tok])
    cont = np.flatnonzero(continuous)
    values[cont] = _sample_bins(vocab, val_tok[cont], rng)
    value_text = np.where(continuous, None, vocab._text[val_tok])

    los = np.full(n_visits, np.nan)
    row_last = np.ones(len(dt_pos), dtype=bool)
    row_last[:-1] = row_visit[1:] != row_visit[:-1]
    los[row_visit[row_last]] = row_hours[row_last]
    empty = np.isnan(los)
    if empty.any():
        if vocab.los_quantiles is not None:
            q = np.asarray(vocab.los_quantiles)
            u = rng.random(int(empty.sum())) * (len(q) - 1)
            i = np.minimum(u.astype(np.int64), len(q) - 2)
            los[empty] = q[i] + (u - i) * (q[i + 1] - q[i])

    subj = subject_ids[v_seq]
    icustay = np.arange(n_visits, dtype=np.int64)
    visits = pd.DataFrame({
        "subject_id": subj,
        "hadm_id": icustay.copy(),
        "icustay_id": icustay,
        "visit_index": v_index.astype(np.int32),
        "intime": pd.Series(pd.NaT, index=range(n_visits), dtype="datetime64[us]"),
        "outtime": pd.Series(pd.NaT, index=range(n_visits), dtype="datetime64[us]"),
        "los_hours": los,
        "hours_since_previous_visit": gap,
        "age_years": np.where(age_capped, AGE_CAP, age_years),
        "age_is_capped": age_capped,
    })
    for col, kind in COVARIATES:
        visits[col] = pd.Series(vocab._text[per_visit(kind)], dtype=object)
    visits["mortality_inhospital"] = (per_visit(T.MORTALITY) - vocab.mortality_base).astype(np.int32)
    visits = visits[VISIT_COLUMNS]

    ph_pos = np.flatnonzero(types == T.PHENOTYPE)
    ph_visit = visit_of[ph_pos]
    phenotypes = pd.DataFrame({
        "subject_id": subj[ph_visit], "icustay_id": icustay[ph_visit],
        "phenotype": pd.Series(vocab._text[tokens[ph_pos]], dtype=object),
    })[PHENOTYPE_COLUMNS]

    cd_pos = np.flatnonzero((types == T.DX) | (types == T.PX))
    cd_visit = visit_of[cd_pos]
    cd_px = types[cd_pos] == T.PX
    group = cd_visit * 2 + cd_px
    g_first = np.ones(len(cd_pos), dtype=bool)
    g_first[1:] = group[1:] != group[:-1]
    g_start = np.maximum.accumulate(np.where(g_first, np.arange(len(cd_pos)), 0))
    codes = pd.DataFrame({
        "subject_id": subj[cd_visit], "icustay_id": icustay[cd_visit],
        "code_type": np.where(cd_px, "procedure", "diagnosis").astype(object),
        "icd9_code": pd.Series(vocab._text[tokens[cd_pos]], dtype=object),
        "seq_num": (np.arange(len(cd_pos)) - g_start + 1).astype(np.int64),
    })[CODE_COLUMNS]

    mv_visit = row_visit[val_row]
    measurements = pd.DataFrame({
        "subject_id": subj[mv_visit], "icustay_id": icustay[mv_visit],
        "hours": row_hours[val_row],
        "variable": pd.Series(np.asarray(vocab.variable_names, dtype=object)[var_idx], dtype=object),
        "value": values,
        "value_text": pd.Series(value_text, dtype=object),
    })[MEASUREMENT_COLUMNS]
    return StagedCohort(visits, codes, phenotypes, measurements), report


# ----------------------------------------------------------------------------------------------
# Context windows


@dataclass
class ContextWindows:
    """Training windows over a `TokenSequences`.

    Window i is ``[<s>] * prefix[i] + tokens[starts[i]:starts[i] + lengths[i]]`` (at most n_ctx
    tokens). Every token of a window except its first is a next-token target.
    """

    n_ctx: int
    starts: np.ndarray
    lengths: np.ndarray
    prefix: np.ndarray
    patient: np.ndarray
    bos_id: int
    n_tokens: int
    n_target_tokens: int
    reference_fraction: float

    @property
    def fraction_of_tokens_used(self) -> float:
        return self.n_target_tokens / self.n_tokens if self.n_tokens else 1.0

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def n_windows(self) -> int:
        return len(self.starts)

    def window(self, tokens: np.ndarray, i: int) -> np.ndarray:
        body = np.asarray(tokens[self.starts[i]:self.starts[i] + self.lengths[i]])
        if self.prefix[i]:
            return np.concatenate([np.array([self.bos_id], dtype=body.dtype), body])
        return body

    def arrays(self, seqs: TokenSequences) -> list[np.ndarray]:
        """Every window as its own int array (views into the token array where no prefix)."""
        return [self.window(seqs.tokens, i) for i in range(len(self))]

    _ARRAYS = ("starts", "lengths", "prefix", "patient")

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, name))
        meta = {"n_ctx": self.n_ctx, "bos_id": self.bos_id, "n_tokens": self.n_tokens,
                "n_target_tokens": self.n_target_tokens,
                "reference_fraction": self.reference_fraction, "n_windows": len(self)}
        (directory / "windows.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ContextWindows":
        directory = Path(directory)
        meta_path = directory / "windows.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no context windows saved here")
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(directory / f"{name}.npy") for name in cls._ARRAYS}
        windows = cls(n_ctx=meta["n_ctx"], bos_id=meta["bos_id"], n_tokens=meta["n_tokens"],
                      n_target_tokens=meta["n_target_tokens"],
                      reference_fraction=meta["reference_fraction"], **arrays)
        if len(windows) != meta["n_windows"]:
            raise ValueError(f"{directory}: arrays do not match windows.json")
        return windows


def _patients(seqs: TokenSequences, subset) -> np.ndarray:
    if subset is None:
        return np.arange(len(seqs))
    subset = np.asarray(subset)
    if subset.dtype == bool:
        subset = np.flatnonzero(subset)
    return subset.astype(np.int64)


def reference_fraction(seqs: TokenSequences, n_ctx: int, subset=None) -> float:
    """Fraction of tokens kept by plain truncation to the first n_ctx (the reference policy)."""
    lengths = np.diff(seqs.offsets)[_patients(seqs, subset)]
    total = lengths.sum()
    return float(np.minimum(lengths, n_ctx).sum() / total) if total else 1.0


def context_windows(seqs: TokenSequences, n_ctx: int, subset=None) -> ContextWindows:
    """Cut patients into windows of <= n_ctx tokens without dropping anything.

    A patient that fits is one window. A longer one is cut at visit boundaries; each later window
    starts at a visit and is prefixed with `<s>`. A stretch with no visit boundary inside the
    available room (a very long visit) is cut into full chunks that continue mid-visit; such a
    chunk starts one token before the previous chunk ended, so that token is its context and
    nothing is skipped, but it sees none of the earlier context.
    """
    if n_ctx < 3:
        raise ValueError(f"context_windows: n_ctx must be >= 3, got {n_ctx}")
    patients = _patients(seqs, subset)
    offsets = np.asarray(seqs.offsets)
    starts_p, ends_p = offsets[patients], offsets[patients + 1]
    lengths = ends_p - starts_p
    short = lengths <= n_ctx
    w_start = [starts_p[short]]
    w_len = [lengths[short]]
    w_prefix = [np.zeros(int(short.sum()), dtype=bool)]
    w_patient = [patients[short]]
    n_targets = int(np.sum(lengths[short] - 1))
    visit_starts = np.asarray(seqs.visit_starts)
    long_ids = np.flatnonzero(~short)
    # Patients too long for one window: a greedy walk over their visit boundaries (a loop over
    # visits, not tokens).
    starts_l, lens_l, pref_l, pat_l = [], [], [], []
    for i in long_ids:
        a, b = int(starts_p[i]), int(ends_p[i])
        lo, hi = np.searchsorted(visit_starts, [a, b])
        bounds = visit_starts[lo:hi]
        start, prefix, covered = a, False, a + 1  # tokens [a+1, covered) are targets already
        while covered < b:
            room = n_ctx - prefix
            if b - start <= room:
                end = b
            else:
                j = np.searchsorted(bounds, start + room, side="right") - 1
                end = int(bounds[j]) if j >= 0 and bounds[j] > covered else -1
            if end > 0:
                starts_l.append(start)
                lens_l.append(end - start)
                pref_l.append(prefix)
                pat_l.append(patients[i])
                n_targets += end - covered
                covered = end
                start, prefix = end, True
            else:
                end = start + room
                starts_l.append(start)
                lens_l.append(room)
                pref_l.append(prefix)
                pat_l.append(patients[i])
                n_targets += end - covered
                covered = end
                start, prefix = end - 1, False
    w_start.append(np.asarray(starts_l, dtype=np.int64))
    w_len.append(np.asarray(lens_l, dtype=np.int64))
    w_prefix.append(np.asarray(pref_l, dtype=bool))
    w_patient.append(np.asarray(pat_l, dtype=np.int64))
    starts = np.concatenate(w_start).astype(np.int64)
    order = np.argsort(starts, kind="stable")
    return ContextWindows(
        n_ctx=n_ctx,
        starts=starts[order],
        lengths=np.concatenate(w_len).astype(np.int64)[order],
        prefix=np.concatenate(w_prefix)[order],
        patient=np.concatenate(w_patient)[order],
        bos_id=int(seqs.tokens[offsets[0]]) if len(seqs) and offsets[-1] > 0 else 1,
        n_tokens=int(lengths.sum()),
        n_target_tokens=n_targets,
        reference_fraction=reference_fraction(seqs, n_ctx, subset),
    )
