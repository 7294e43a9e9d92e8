"""k-anonymous aggregates: numbers fitted on real data that may leave the workspace.

A number that leaves the workspace (a vocabulary quantile or bin edge, a histogram axis, a summary
statistic) must be computed over at least `k` distinct patients, and must not single out fewer
than `k` of them. Counting values is not enough: ten order statistics can all be one patient's.
Each function here takes the values together with the patient of each value, and guarantees:

1. **k patients per number.** A quantile is the mean of a window of order statistics around its
   rank, widened until it holds values of at least `k` distinct patients; inside the window each
   patient's values are averaged first, so every patient weighs the same (1/k or less).
2. **k patients on each side.** Every number lies in the sample's k-anonymous range
   [`lo`, `hi`] (`k_anonymous_range`): at least `k` patients have a value >= `hi` and `hi` is the
   mean of `k` patients' values; `lo` likewise from the bottom. No number sits in a tail that
   fewer than `k` patients reach (the top quantile of a variable is not the mean of one patient's
   highest values).
3. **Nothing from fewer.** A sample of fewer than `k` patients gives no number (None), and no
   number equals a value that fewer than `k` patients hold, or the mean of a run of consecutive
   order statistics that one patient holds all of (a window or a range that lands on one by
   coincidence takes one more value or patient): it could not be told apart from those.

`tests/leak_scan.py` checks the result from the outside: for each number that leaves, how many
real patients reach it (2.), hold exactly it, or fill a run of order statistics whose mean it is (3.).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_MIN_PATIENTS = 10
# Two numbers this close (relative) count as equal (a value read back from JSON or CSV).
EQUAL_RTOL = 1e-9
# The longest run of one patient's consecutive order statistics whose mean no number may equal.
MAX_RUN = 30


def _check(values, patients, k: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    patients = np.asarray(patients)
    if values.ndim != 1 or values.shape != patients.shape:
        raise ValueError(f"k-anonymous aggregate: values {values.shape} and patients {patients.shape} "
                         "must be 1-D arrays of the same length")
    if np.isnan(values).any():
        raise ValueError(f"k-anonymous aggregate: {int(np.isnan(values).sum())} NaN value(s); "
                         "drop missing values first")
    if k < 1:
        raise ValueError(f"k-anonymous aggregate: k (min_patients) must be >= 1, got {k}")
    # Integer codes in id order: any id type sorts, and ties sort the same for any row order.
    return values, pd.factorize(patients, sort=True)[0]


def sort_order(values: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Order by value, ties by patient: the same windows for any row order (two stable argsorts
    are several times faster than np.lexsort on millions of rows)."""
    by_patient = np.argsort(patients, kind="stable")
    return by_patient[np.argsort(values[by_patient], kind="stable")]


def n_patients(patients) -> int:
    """Distinct patients in `patients`."""
    return int(pd.unique(np.asarray(patients)).size)


def k_anonymous_range(values, patients, k: int = DEFAULT_MIN_PATIENTS) -> tuple[float, float] | None:
    """(lo, hi): at least `k` patients have a value <= lo and at least `k` a value >= hi, and each
    is the mean of `k` different patients' values.

    Let M be the k-th largest per-patient maximum (k patients reach it). Each patient's largest
    value <= M is a candidate; hi is the mean of the k largest candidates, so hi <= M, and it lies
    close to M when patients have values near it. lo likewise from the bottom. None when the sample
    has fewer than `k` patients, or when lo > hi (no number is k-anonymous on both sides)."""
    values, patients = _check(values, patients, k)
    if n_patients(patients) < k:
        return None
    order = sort_order(values, patients)
    values, patients = values[order], patients[order]
    frame = pd.DataFrame({"p": patients, "v": values})
    hi = _tail_mean(frame, k, _Holders(values, patients, k, presorted=True))
    lo = -_tail_mean(frame.assign(v=-values), k, _Holders(-values[::-1], patients[::-1], k, presorted=True))
    return (lo, hi) if lo <= hi else None


class _Holders:
    """Whether a number equals a value that fewer than k patients hold, or the mean of a run of
    consecutive order statistics that one patient holds all of. Such a number cannot be told
    apart from those (an order statistic, a smoothed quantile of one patient), so none is
    stored, even by coincidence."""

    def __init__(self, values: np.ndarray, patients: np.ndarray, k: int, presorted: bool = False):
        if not presorted:
            order = sort_order(values, patients)
            values, patients = values[order], patients[order]
        self.values, self.patients, self.k = values, patients, k

    def rare(self, x: float) -> bool:
        tol = EQUAL_RTOL * max(abs(x), 1.0)
        a = int(np.searchsorted(self.values, x - tol, side="left"))
        b = int(np.searchsorted(self.values, x + tol, side="right"))
        if 0 < pd.unique(self.patients[a:b]).size < self.k:
            return True
        if b - a > MAX_RUN:
            return False  # a run with mean x and unequal values would span all these ties
        # A run of at most MAX_RUN order statistics whose mean is x straddles [a, b).
        lo, hi = max(a - MAX_RUN, 0), min(b + MAX_RUN, len(self.values))
        means = one_patient_run_means(self.values[lo:hi], self.patients[lo:hi])
        i = np.searchsorted(means, x - tol, side="left")
        return bool(i < len(means) and means[i] <= x + tol)


def one_patient_run_means(sorted_values: np.ndarray, sorted_patients: np.ndarray,
                          max_run: int = MAX_RUN) -> np.ndarray:
    """Sorted means of every run of 2..`max_run` consecutive order statistics (values sorted, the
    patient of each aligned) that one patient holds all of and that are not all equal (within
    EQUAL_RTOL: a run of equal values means the value itself)."""
    v, p = np.asarray(sorted_values, dtype=np.float64), np.asarray(sorted_patients)
    if len(v) < 2:
        return np.zeros(0)
    segment = np.concatenate([[0], np.cumsum(p[1:] != p[:-1])])
    prefix = np.concatenate([[0.0], np.cumsum(v)])
    out = []
    for m in range(2, min(max_run, len(v)) + 1):
        start = np.arange(len(v) - m + 1)
        spread = v[start + m - 1] - v[start]
        one = (segment[start] == segment[start + m - 1]) & (spread > EQUAL_RTOL * np.maximum(np.abs(v[start]), 1.0))
        if not (segment[start] == segment[start + m - 1]).any():
            break  # no longer run of one patient either
        out.append(((prefix[start + m] - prefix[start]) / m)[one])
    return np.sort(np.concatenate(out)) if out else np.zeros(0)


def _tail_mean(frame: pd.DataFrame, k: int, holders: _Holders) -> float:
    """Mean of the k largest per-patient candidates: each patient's largest value <= the k-th
    largest per-patient maximum (one more candidate while the mean equals a rare value)."""
    cap = np.sort(frame.groupby("p", sort=False)["v"].max().to_numpy())[::-1][k - 1]
    candidates = np.sort(frame[frame["v"] <= cap].groupby("p", sort=False)["v"].max().to_numpy())[::-1]
    m = k  # >= k candidates: every patient below the cap has one
    mean = min(float(candidates[:m].mean()), cap)
    while holders.rare(mean) and m < len(candidates):
        m += 1
        mean = min(float(candidates[:m].mean()), cap)
    return mean


def _window_mean(values: np.ndarray, patients: np.ndarray) -> float:
    """Mean over patients of each patient's mean (every patient weighs the same)."""
    _, inv = np.unique(patients, return_inverse=True)
    per_patient = np.bincount(inv, weights=values) / np.bincount(inv)
    return float(per_patient.mean())


def _widen(patients: np.ndarray, start: int, width: int, k: int) -> tuple[int, int]:
    """The narrowest symmetric widening of [start, start + width) holding >= k patients."""
    n = len(patients)

    def window(e: int) -> tuple[int, int]:
        return max(0, start - e), min(n, start + width + e)

    def enough(e: int) -> bool:
        a, b = window(e)
        return pd.unique(patients[a:b]).size >= k

    if enough(0):
        return window(0)
    # Doubling, then bisection: the work grows with the window found, not with the sample.
    # enough(n) holds: the caller checked the whole sample.
    lo, hi = 0, 1
    while not enough(hi):
        lo, hi = hi, min(2 * hi, n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return window(hi)


def k_anonymous_quantiles(
    values,
    patients,
    levels,
    k: int = DEFAULT_MIN_PATIENTS,
    window: int = 10,
    guard: tuple[float, float] | None = None,
    bounds: tuple[float, float] | None = None,
) -> list[float] | None:
    """Quantiles at `levels` (in [0, 1]) that each depend on >= `k` distinct patients.

    Each is the patient-weighted mean (`_window_mean`) of the `window` order statistics around its
    rank, the window widened symmetrically until it holds values of `k` patients; then clipped to
    `guard` (default: this sample's `k_anonymous_range`) and to `bounds` (e.g. a bin's edges).
    Nondecreasing in the level. None when the sample holds fewer than `k` patients, when it has no
    k-anonymous range, or when `guard` and `bounds` do not overlap.

    Reuse it for any distribution fitted on real data (pass one patient id per value)."""
    values, patients = _check(values, patients, k)
    levels = np.asarray(levels, dtype=np.float64)
    if levels.size and (levels.min() < 0 or levels.max() > 1):
        raise ValueError(f"k-anonymous quantiles: levels must lie in [0, 1], got {levels.tolist()}")
    n = len(values)
    if n == 0 or n_patients(patients) < k:
        return None
    if guard is None:
        guard = k_anonymous_range(values, patients, k)
        if guard is None:
            return None
    low, high = guard
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    if low > high:
        return None
    order = sort_order(values, patients)  # ties by patient: independent of the input order
    values, patients = values[order], patients[order]
    width = max(1, min(int(window), n))
    holders = _Holders(values, patients, k, presorted=True)
    out = []
    for level in levels:
        start = int(np.clip(np.rint(level * (n - 1) - (width - 1) / 2), 0, n - width))
        a, b = _widen(patients, start, width, k)
        mean = _window_mean(values[a:b], patients[a:b])
        while holders.rare(mean) and (a > 0 or b < n):
            a, b = max(a - 1, 0), min(b + 1, n)
            mean = _window_mean(values[a:b], patients[a:b])
        out.append(mean)
    return np.maximum.accumulate(np.clip(out, low, high)).tolist()


def patients_per_category(categories, patients) -> pd.Series:
    """Distinct patients per category (nulls dropped), indexed by the category as text."""
    frame = pd.DataFrame({"c": pd.Series(np.asarray(categories, dtype=object)), "p": np.asarray(patients)})
    frame = frame[frame["c"].notna()]
    return frame.assign(c=frame["c"].astype(str)).groupby("c", sort=True)["p"].nunique()


def merge_bins_to_patients(sorted_values, patients, inner: list[float], k: int,
                           min_count: int = 1) -> list[float]:
    """Remove inner edges until every bin [e_i, e_i+1) holds values of >= k distinct patients and
    >= `min_count` values (or one bin remains). `patients` is aligned with `sorted_values`.

    The bin with the fewest patients is merged with its neighbour holding fewer patients, so the
    top and bottom bins are treated like the others."""
    sorted_values = np.asarray(sorted_values, dtype=np.float64)
    patients = np.asarray(patients)
    inner = list(inner)
    codes = pd.factorize(patients)[0].astype(np.int64)
    n_codes = int(codes.max()) + 1 if len(codes) else 1

    def counts() -> tuple[np.ndarray, np.ndarray]:
        bins = np.searchsorted(np.asarray(inner, dtype=np.float64), sorted_values, side="right")
        rows = np.bincount(bins, minlength=len(inner) + 1)
        pairs = np.unique(bins.astype(np.int64) * n_codes + codes)
        people = np.bincount(pairs // n_codes, minlength=len(inner) + 1)
        return people, rows

    while inner:
        people, rows = counts()
        short = (people < k) | (rows < min_count)
        if not short.any():
            break
        score = np.where(short, people, np.iinfo(np.int64).max)
        i = int(np.argmin(score))
        if i == 0:
            j = 1
        elif i == len(people) - 1:
            j = i - 1
        else:
            j = i - 1 if people[i - 1] <= people[i + 1] else i + 1
        del inner[min(i, j)]  # the edge between bins min(i, j) and min(i, j) + 1
    return inner
