"""The context format for long patients (docs/tokens.md section 6).

A patient longer than the model's context is seen through windows. Every window, in training and
in generation alike, carries what its tokens depend on, in a form the grammar accepts:

    <s> [<skip-visits>] history* [header [<skip-rows>]] tokens...

* `history` is each earlier visit compressed to its header (gap, covariates, labels, codes) and
  `<skip-rows> ELAPSED//i </ts> </adm>`: its measurement rows are left out, and `ELAPSED//i` says
  how many hours they covered. When the history does not fit
  the budget the oldest visits go first and `<skip-visits>` says so.
* `header` is the current visit's header when the window starts after it (in the measurement
  rows), followed by `<skip-rows> ELAPSED//i` when earlier rows of the visit are left out: the
  model knows how far into the stay the window starts (what the stay's end depends on).
* `tokens...` continue the patient from a row boundary: up to `overlap` tokens of recent rows as
  context, then the new tokens (the only ones a training window learns).

`ContextFormat.window_start(seq, p)` builds that prefix for the window whose first new token is
`seq[p]`; the training windows (`windows.py`) cut patients with it, and the sampler's `roll` uses
the same call when a row's KV cache fills, so the model generates in exactly the format it was
trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synehrgy_assets.core.tokens.grammar import TokenType

T = TokenType


@dataclass(frozen=True)
class WindowStart:
    """How a window whose first new token is `seq[p]` begins.

    The window is ``prefix + seq[c:...]``: `prefix` is written by the format (never targets),
    `seq[c:p]` is raw context (recent rows or the current header so far), new tokens start at p.
    """

    prefix: np.ndarray
    c: int
    header_complete: bool   # the current visit's whole header (so far) is in context
    history_complete: bool  # and every earlier visit's header too
    grammatical: bool       # False only for the last-resort raw chunk of a tiny n_ctx


@dataclass(frozen=True)
class _Layout:
    starts: np.ndarray      # first token of each visit (its GAP_VISIT, or AGE for the first)
    label_end: np.ndarray   # position of the visit's </label>, -1 if not generated yet
    header_end: np.ndarray  # position of the visit's </code>, -1 if not generated yet
    row_starts: np.ndarray  # every position where a measurement row (or the </ts>) starts
    hours: np.ndarray       # hours of the DT tokens up to and including each position (bin medians)

    def hours_between(self, a: int, b: int) -> float:
        """Hours covered by the rows in seq[a:b]."""
        return float(self.hours[b - 1] - (self.hours[a - 1] if a > 0 else 0.0)) if b > a else 0.0


def _first_at_or_after(marks: np.ndarray, starts: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Per visit, the first mark in [start, limit), or -1."""
    i = np.searchsorted(marks, starts)
    found = np.full(len(starts), -1, dtype=np.int64)
    ok = i < len(marks)
    found[ok] = marks[i[ok]]
    return np.where((found >= 0) & (found < limits), found, -1)


class ContextFormat:
    """Windows of at most `n_ctx + 1` tokens (n_ctx inputs) over one patient's tokens.

    `max_prefix` (default n_ctx // 2) bounds `<s>` + history + header; `overlap` (default
    n_ctx // 4) bounds the raw context before the new tokens, so every window adds at least
    n_ctx // 4 new tokens.
    """

    def __init__(self, vocab, n_ctx: int, max_prefix: int | None = None, overlap: int | None = None):
        if n_ctx < 4:
            raise ValueError(f"ContextFormat: n_ctx must be >= 4, got {n_ctx}")
        self.n_ctx = int(n_ctx)
        self.max_prefix = int(max_prefix if max_prefix is not None else n_ctx // 2)
        self.overlap = int(overlap if overlap is not None else n_ctx // 4)
        if self.max_prefix + self.overlap >= n_ctx:
            raise ValueError(f"ContextFormat: max_prefix {self.max_prefix} + overlap {self.overlap} must "
                             f"leave room for new tokens in n_ctx {n_ctx}")
        self.token_types = np.asarray(vocab.token_types)
        self.bos, self.end_code = int(vocab.bos_id), int(vocab.end_code_id)
        self.end_ts, self.end_adm = int(vocab.end_ts_id), int(vocab.end_adm_id)
        self.skip_visits, self.skip_rows = int(vocab.skip_visits_id), int(vocab.skip_rows_id)
        self.dt_hours = np.asarray(vocab.dt_hours)
        self.elapsed_token = vocab.elapsed_token

    # ---- layout of one patient (complete, or generated so far)
    def layout(self, seq: np.ndarray) -> _Layout:
        types = self.token_types[seq]
        n = len(seq)
        # A visit starts after <s> and after every </adm>; a start at n means the next token opens
        # a visit (or closes the patient): the same cut a training window makes there.
        starts = np.concatenate([[1], np.flatnonzero(types == T.END_ADM) + 1]).astype(np.int64)
        starts = starts[starts <= n]
        limits = np.append(starts[1:], n)
        label_end = _first_at_or_after(np.flatnonzero(types == T.END_LABEL), starts, limits)
        header_end = _first_at_or_after(np.flatnonzero(types == T.END_CODE), starts, limits)
        rows = np.concatenate([header_end[header_end >= 0] + 1, np.flatnonzero(types == T.DT) + 1])
        return _Layout(starts, label_end, header_end, np.unique(rows).astype(np.int64),
                       np.cumsum(self.dt_hours[seq]))

    def _history(self, seq: np.ndarray, lay: _Layout, k: int, budget: int) -> tuple[list[np.ndarray], bool]:
        """Compressed headers of visits < k, newest first kept, within `budget` tokens."""
        parts: list[np.ndarray] = []
        used = 0
        for j in range(k - 1, -1, -1):
            h_end = int(lay.header_end[j])
            rows_end = int(lay.starts[j + 1]) - 2  # the visit's </ts>
            tail = [self.skip_rows, self.elapsed_token(lay.hours_between(h_end + 1, rows_end)),
                    self.end_ts, self.end_adm]
            piece = np.concatenate([seq[lay.starts[j]:h_end + 1], tail])
            # Room for <skip-visits> if this is not the oldest visit and an older one may be dropped.
            need = len(piece) + (1 if j > 0 else 0)
            if used + need > budget:
                return parts[::-1], False
            parts.append(piece)
            used += len(piece)
        return parts[::-1], True

    def window_start(self, seq: np.ndarray, p: int, lay: _Layout | None = None) -> WindowStart:
        """The start of the window whose first new token is seq[p] (1 <= p <= len(seq))."""
        seq = np.asarray(seq, dtype=np.int64)
        lay = lay or self.layout(seq[:p] if p < len(seq) else seq)
        k = int(np.searchsorted(lay.starts, p, side="right") - 1)
        start, h_end = int(lay.starts[k]), int(lay.header_end[k])
        bos = np.array([self.bos], dtype=np.int64)
        room = self.n_ctx - self.n_ctx // 4  # context (prefix + raw) leaves n_ctx // 4 for new tokens
        if h_end < 0 or p <= h_end:
            # In the header: the header so far is raw context, only the history is written.
            c = start
            budget = min(self.max_prefix, room - (p - c)) - 1
            header, complete = np.zeros(0, dtype=np.int64), True
            skip = np.zeros(0, dtype=np.int64)
        else:
            meas = h_end + 1
            rows = lay.row_starts
            floor = int(rows[np.searchsorted(rows, p, side="right") - 1])
            ceil_at = np.searchsorted(rows, max(meas, p - self.overlap), side="left")
            c = min(int(rows[ceil_at]) if ceil_at < len(rows) else floor, floor)
            skip = np.array([self.skip_rows, self.elapsed_token(lay.hours_between(meas, c))] if c > meas else [],
                            dtype=np.int64)
            header = seq[start:h_end + 1]
            complete = True
            budget_header = self.max_prefix - 1 - len(skip)
            if len(header) > budget_header:
                # Too long a header: keep covariates and labels, as many codes as fit.
                keep = budget_header - 1  # room for </code>
                l_end = int(lay.label_end[k])
                if keep < l_end + 1 - start:
                    return self.raw_chunk(p)
                header = np.concatenate([seq[start:start + keep], [self.end_code]])
                complete = False
            budget = self.max_prefix - 1 - len(header) - len(skip)
        if budget < 0:
            return self.raw_chunk(p)
        history, history_complete = self._history(seq, lay, k, budget)
        marker = np.array([self.skip_visits] if not history_complete else [], dtype=np.int64)
        prefix = np.concatenate([bos, marker, *history, header, skip]).astype(np.int64)
        return WindowStart(prefix, c, complete, complete and history_complete, True)

    def raw_chunk(self, p: int) -> WindowStart:
        # Last resort for an n_ctx too small to hold a visit's covariates and labels: a plain chunk
        # continuing from the previous token (not grammatical on its own, counted as such).
        return WindowStart(np.zeros(0, dtype=np.int64), p - 1, False, False, False)

    # ---- generation
    def roll(self, tokens: np.ndarray) -> np.ndarray:
        """A patient generated so far -> the context to continue it from (<= 3/4 n_ctx tokens,
        ending with the same token), in the training-window format."""
        tokens = np.asarray(tokens, dtype=np.int64)
        start = self.window_start(tokens, len(tokens))
        return np.concatenate([start.prefix, tokens[start.c:]])
