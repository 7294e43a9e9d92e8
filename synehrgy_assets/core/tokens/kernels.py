"""Compiled per-row loops of the tokenizer (numba, cached on disk, GIL released).

Two passes over the measurement rows that numpy could only express as ~40 full-array
operations each: value tokens (variable lookup, exact binning, categories) and the measurement
section of every visit (rows, DT tokens, duplicate values). They do exactly what the array code
in `encoding.py` describes; the tests compare them with `searchsorted` and with reference
orderings.
"""

from __future__ import annotations

import numpy as np
from numba import njit

def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous view: every input array gets one numba type (read-only or not
    would otherwise compile, and cache, each kernel twice)."""
    view = np.ascontiguousarray(array).view()
    view.flags.writeable = False
    return view


# Placeholder token of a categorical value with no text whose score names the category; the
# caller resolves these few rows with string formatting (`tokenizer._value_tokens`).
NEEDS_SCORE_LOOKUP = -3


@njit(cache=True, nogil=True)
def value_tokens(var_code, var_map, value, text_code, text_map, continuous, grid_low, grid_scale,
                 grid_size, grid_base, grid_edge, value_base, valid_low, valid_high,
                 category_token, rank_of_var, token_out, rank_out, counts):
    """Token id (-1: none) and variable rank of every measurement row.

    `var_code`/`text_code` index `var_map`/`text_map` (-1: NULL); `var_map` gives the vocabulary
    variable (-1: unknown), `text_map` the position in the category union (-2: unknown).
    counts: [unknown variables, clipped values, unknown categories, score lookups needed].
    """
    for i in range(len(var_code)):
        code = var_code[i]
        j = var_map[code] if code >= 0 else -1
        if j < 0:
            counts[0] += 1
            token_out[i] = -1
            rank_out[i] = 0
            continue
        rank_out[i] = rank_of_var[j]
        v = value[i]
        if continuous[j]:
            if v != v:  # NaN: no value, no token
                token_out[i] = -1
                continue
            if v < valid_low[j] or v > valid_high[j]:
                counts[1] += 1
            t = (v - grid_low[j]) * grid_scale[j]
            if t < 0.0:
                t = 0.0
            if t > grid_size - 1:
                t = grid_size - 1
            key = j * grid_size + np.int64(t)
            b = grid_base[key]
            if v >= grid_edge[key]:
                b += 1
            token_out[i] = value_base[j] + b
        else:
            tc = text_code[i]
            if tc >= 0:
                pos = text_map[tc]
                tok = category_token[j, pos] if pos >= 0 else -1
                if tok < 0:
                    counts[2] += 1
                token_out[i] = tok
            elif v == v:
                counts[3] += 1
                token_out[i] = NEEDS_SCORE_LOOKUP
            else:
                token_out[i] = -1


@njit(cache=True, nogil=True)
def measurement_stream(gv, hours, rank, token, dt_inner, dt_cap, dt_base, n_visits):
    """Values and DT tokens of every visit, for rows already in (visit, hours, rank) order.

    Rows with token < 0 are skipped. Several values of one variable at one time keep the lower
    median token. Each row of values is closed by the DT token of its gap to the previous row
    (the first row of a visit: to hour 0).

    Returns ok (False: rows not in order; nothing else is meaningful then), the stream, the
    visit, start and length of each visit's segment, values and rows per visit, and
    [duplicate values dropped, negative first gaps, clipped gaps].
    """
    n = len(gv)
    stream = np.empty(2 * n, np.int32)
    seg_gv = np.empty(n_visits, np.int64)
    seg_start = np.empty(n_visits, np.int64)
    seg_len = np.empty(n_visits, np.int64)
    n_val = np.zeros(n_visits, np.int64)
    n_row = np.zeros(n_visits, np.int64)
    seen = np.zeros(n_visits, np.bool_)
    stats = np.zeros(3, np.int64)
    k = 0            # next stream position
    s = 0            # segments so far
    ok = True
    i = 0
    while i < n:
        if token[i] < 0:
            i += 1
            continue
        g = gv[i]
        if seen[g]:
            ok = False  # the visit's rows are not contiguous
            break
        seen[g] = True
        seg_gv[s] = g
        seg_start[s] = k
        # One call per visit, not per row: the per-row loop stays in one compiled function.
        i, k, ok = _visit_stream(gv, hours, rank, token, i, stream, k, n_val, n_row,
                                 dt_inner, dt_cap, dt_base, stats)
        if not ok:
            break
        seg_len[s] = k - seg_start[s]
        s += 1
    if not ok:
        return False, stream[:0], seg_gv[:0], seg_start[:0], seg_len[:0], n_val, n_row, stats
    return True, stream[:k], seg_gv[:s], seg_start[:s], seg_len[:s], n_val, n_row, stats


@njit(cache=True, nogil=True)
def _visit_stream(gv, hours, rank, token, i, stream, k, n_val, n_row, dt_inner, dt_cap, dt_base, stats):
    """The values and DT tokens of the visit of row i (which has a token), written from stream
    position k on. Returns the first row of the next visit (or len(gv)), the next stream position
    and ok (False: the visit's rows are out of order; the row and position are then meaningless)."""
    n = len(gv)
    g = gv[i]
    row_open = False
    cur_h = 0.0      # hours of the open row
    cur_r = -1       # rank of the last value in the open row
    last_h = 0.0     # hours of the previous row of this visit (0: ICU admission)
    while i < n and gv[i] == g:
        h = hours[i]
        r = rank[i]
        if row_open:
            if h == cur_h:
                if r <= cur_r:
                    return i, k, False  # variables of a row out of rank order
            else:
                if h < cur_h:
                    return i, k, False  # rows of a visit out of time order
                stream[k] = _dt_token(cur_h - last_h, dt_inner, dt_cap, dt_base, stats)
                k += 1
                n_row[g] += 1
                last_h = cur_h
                row_open = False
        if not row_open:
            row_open = True
            cur_h = h
        # The run of values of this variable at this time (skipping rows without a token); it
        # ends at a row with a token, so every row the loop starts from has one.
        j = i + 1
        m = 1
        while j < n:
            if token[j] < 0:
                j += 1
            elif gv[j] == g and hours[j] == h and rank[j] == r:
                m += 1
                j += 1
            else:
                break
        t = token[i]
        if m > 1:
            buf = np.empty(m, np.int32)
            c = 0
            for q in range(i, j):
                if token[q] >= 0:
                    buf[c] = token[q]
                    c += 1
            buf.sort()
            t = buf[(m - 1) // 2]
            stats[0] += m - 1
        stream[k] = t
        k += 1
        n_val[g] += 1
        cur_r = r
        i = j
    stream[k] = _dt_token(cur_h - last_h, dt_inner, dt_cap, dt_base, stats)
    n_row[g] += 1
    return i, k + 1, True


@njit(cache=True, nogil=True)
def _dt_token(gap, dt_inner, dt_cap, dt_base, stats):
    if gap < 0.0:
        stats[1] += 1
        gap = 0.0
    if gap > dt_cap:
        stats[2] += 1
    return dt_base + np.searchsorted(dt_inner, gap, side="right")
