"""Measurements charted together that must agree (`dbt_mimic/seeds/variable_relations.csv`).

Two kinds of relation, stored in the vocabulary (`TokenVocabulary.relations`):

* `less_than` (lower, upper, margin): in one measurement row, lower + margin <= upper
  (diastolic < mean < systolic, per source).
* `sum_of` (total, parts): in one row where the total and every part are charted, the total's
  score is the sum of the parts' scores (GCS total = eye + motor + verbal).

They are kept in two places, which together make every sampled row agree:

* the sampling constraint (`consistency.PatientConsistency`) forbids the *bins* that cannot agree
  with the values already written in the row (a systolic bin that lies wholly below the row's
  diastolic bin, a GCS verbal score that does not complete the total);
* decoding (`sample_row_values`) draws the values inside those bins jointly: each value's
  within-bin draw is truncated to the interval its row partners leave it.

Real rows are never changed (encoding is exact); relations only shape what is sampled.
"""

from __future__ import annotations

import numpy as np


def _cdf(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Within-bin CDF at `x` of each row's quantile function (piecewise linear, levels 0..1)."""
    k = table.shape[1]
    x = np.clip(x, table[:, 0], table[:, -1])
    seg = np.clip((x[:, None] >= table).sum(axis=1) - 1, 0, k - 2)
    rows = np.arange(len(x))
    lo, hi = table[rows, seg], table[rows, seg + 1]
    width = hi - lo
    frac = np.where(width > 0, (x - lo) / np.where(width > 0, width, 1.0), 0.0)
    return (seg + np.clip(frac, 0.0, 1.0)) / (k - 1)


def _quantile(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    k = table.shape[1]
    pos = np.clip(u, 0.0, 1.0) * (k - 1)
    i = np.minimum(pos.astype(np.int64), k - 2)
    rows = np.arange(len(u))
    lo, hi = table[rows, i], table[rows, i + 1]
    return lo + (pos - i) * (hi - lo)


def less_than_pairs(vocab) -> list[tuple[int, int, float]]:
    """(lower variable index, upper variable index, margin) of the vocabulary's less_than relations."""
    index = {name: j for j, name in enumerate(vocab.variable_names)}
    return [(index[r["lower"]], index[r["upper"]], float(r["margin"]))
            for r in vocab.relations if r["kind"] == "less_than"
            and r["lower"] in index and r["upper"] in index
            and vocab._var_continuous[index[r["lower"]]] and vocab._var_continuous[index[r["upper"]]]]


def sample_row_values(vocab, val_tok: np.ndarray, val_row: np.ndarray, values: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Redraw the continuous values that take part in a less_than relation so that every pair in
    a row agrees, processing variables in row order (by name).

    A value's draw is truncated to [lower bound, upper bound]: partners already drawn give their
    value (plus or minus the margin), partners later in the row give their bin's edge. When the
    bins leave no room (a row the constraint did not shape, e.g. a real one), the unconstrained
    draw is kept.
    """
    pairs = less_than_pairs(vocab)
    if not pairs or len(val_tok) == 0:
        return values
    values = values.copy()
    var = vocab.value_var[val_tok]
    n_rows = int(val_row.max()) + 1
    members = sorted({j for a, b, _ in pairs for j in (a, b)}, key=lambda j: vocab._rank_of_var[j])
    where = {j: np.full(n_rows, -1, dtype=np.int64) for j in members}  # row -> value index
    for j in members:
        idx = np.flatnonzero(var == j)
        where[j][val_row[idx]] = idx
    rank = {j: int(vocab._rank_of_var[j]) for j in members}
    for j in members:
        idx = np.flatnonzero(var == j)
        if idx.size == 0:
            continue
        rows = val_row[idx]
        tok = val_tok[idx]
        low, high = vocab.bin_low[tok].copy(), vocab.bin_high[tok].copy()
        lower, upper = low.copy(), high.copy()
        for a, b, margin in pairs:
            if j not in (a, b):
                continue
            other = b if j == a else a
            partner = where[other][rows]
            has = partner >= 0
            if not has.any():
                continue
            p = partner[has]
            drawn = rank[other] < rank[j]
            # Earlier partners are drawn already: their value; later ones: their bin's edge.
            if j == b:  # j is the upper one: j >= partner + margin
                bound = np.where(drawn, values[p], vocab.bin_low[val_tok[p]]) + margin
                lower[has] = np.maximum(lower[has], bound)
            else:       # j is the lower one: j <= partner - margin
                bound = np.where(drawn, values[p], vocab.bin_high[val_tok[p]]) - margin
                upper[has] = np.minimum(upper[has], bound)
        shaped = (lower > low) | (upper < high)
        # lower == upper is one feasible value (an earlier partner drawn at the edge its bin left)
        feasible = shaped & (lower <= upper)
        if not feasible.any():
            continue
        f = np.flatnonzero(feasible)
        table = vocab._qtable[vocab._qrow[tok[f]]]
        u_lo, u_hi = _cdf(table, lower[f]), _cdf(table, upper[f])
        draw = _quantile(table, u_lo + rng.random(len(f)) * (u_hi - u_lo))
        values[idx[f]] = np.clip(draw, lower[f], upper[f])
    return values
