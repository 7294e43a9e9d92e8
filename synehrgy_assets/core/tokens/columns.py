"""Column helpers (clear errors naming table and column) and the visit structure shared by
fitting the vocabulary and encoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
