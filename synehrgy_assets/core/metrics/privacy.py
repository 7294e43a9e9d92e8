"""Privacy: nearest-neighbour distances between real train, real test and synthetic records, in the
standardized feature space and over code sets (Hamming/Jaccard): distance to closest record
against the test→train baseline, exact copies, the distance membership-inference AUROC and
nearest-neighbour adversarial accuracy (`nearest_neighbour_privacy`), and the distance histograms
the plots draw (`distance_histograms`, small real-test cells suppressed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import euclidean_distances
from threadpoolctl import threadpool_limits

from synehrgy_assets.core.metrics.common import (
    DEFAULT_MAX_RECORDS,
    DEFAULT_MIN_CELL_COUNT,
    MetricError,
    MetricInputError,
    MetricValue,
    _binary_matrix,
    _suppress,
)
from synehrgy_assets.core.metrics.features import CohortLike, FeatureSpace, PreparedCohort, _prepare_three


def _block_min(a: np.ndarray, b: np.ndarray, same: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each row of `a` to its nearest row of `b`, and vice versa.

    `same=True` (a is b) excludes each row itself (leave-one-out). Row chunks bound memory.
    """
    b_sq = np.einsum("ij,ij->i", b, b)[None, :]
    row_min, col_min = np.empty(len(a)), np.full(len(b), np.inf)
    chunk = max(1, 8_000_000 // max(len(b), 1))
    for start in range(0, len(a), chunk):
        stop = min(start + chunk, len(a))
        d = euclidean_distances(a[start:stop], b, Y_norm_squared=b_sq)
        if same:
            d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        row_min[start:stop] = d.min(axis=1)
        np.minimum(col_min, d.min(axis=0), out=col_min)
    return row_min, col_min


def _set_block_min(a: sp.csr_matrix, b: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Nearest code-set distances between visits of `a` and `b`, both directions.

    |A△B| = |A| + |B| − 2|A∩B| and Jaccard distance |A△B| / |A∪B|, with |A∩B| from a sparse
    product in row chunks. Two empty sets are at distance 0.
    """
    a_size, b_size = np.asarray(a.sum(axis=1)).ravel(), np.asarray(b.sum(axis=1)).ravel()
    b_t = b.T.tocsc()
    out = {"hamming_a": np.empty(a.shape[0]), "jaccard_a": np.empty(a.shape[0]),
           "hamming_b": np.full(b.shape[0], np.inf), "jaccard_b": np.full(b.shape[0], np.inf)}
    chunk = max(1, 4_000_000 // max(b.shape[0], 1))
    for start in range(0, a.shape[0], chunk):
        stop = min(start + chunk, a.shape[0])
        inter = (a[start:stop] @ b_t).toarray()
        sizes = a_size[start:stop, None] + b_size[None, :]
        union = sizes - inter
        sym = union - inter
        jac = np.divide(sym, union, out=np.zeros_like(sym), where=union > 0)
        out["hamming_a"][start:stop], out["jaccard_a"][start:stop] = sym.min(axis=1), jac.min(axis=1)
        np.minimum(out["hamming_b"], sym.min(axis=0), out=out["hamming_b"])
        np.minimum(out["jaccard_b"], jac.min(axis=0), out=out["jaccard_b"])
    return out


def _mia_auroc(members_d: np.ndarray, nonmembers_d: np.ndarray) -> float:
    """AUROC of score = −(distance to nearest synthetic record); members labelled 1."""
    y = np.r_[np.ones(len(members_d)), np.zeros(len(nonmembers_d))]
    return float(roc_auc_score(y, -np.r_[members_d, nonmembers_d]))


def _ratio(num: float, den: float, key: str, what: str) -> MetricValue:
    return num / den if den > 0 else MetricError(key, f"{what} is 0; ratio undefined")


def _privacy_from_features(
    x: dict[str, np.ndarray], raw: dict[str, pd.DataFrame], codes: dict[str, sp.csr_matrix],
    seed: int, max_records: int,
) -> tuple[dict[str, MetricValue], dict[str, np.ndarray]]:
    """Feature-space and code-set nearest-neighbour privacy metrics, plus distance arrays for plots.

    One seeded sample of n = min(set sizes, max_records) records per set (T = real train,
    E = real test, S = synthetic) feeds every metric: DCR uses S→T and E→T, the MIA uses T→S and
    E→S, NNAA adds the leave-one-out T→T, S→S, E→E.
    """
    sizes = {k: len(v) for k, v in x.items()}
    too_small = [k for k, v in sizes.items() if v < 2]
    if too_small:
        raise MetricInputError(f"privacy metrics need at least 2 visits in each cohort; too few in {too_small}")
    rng = np.random.default_rng(seed)
    n = min(max_records, *sizes.values())
    pick = {k: np.sort(rng.choice(v, size=n, replace=False)) for k, v in sizes.items()}
    T, E, S = (x[k][pick[k]] for k in ("real_train", "real_test", "synthetic"))

    d_ts, d_st = _block_min(T, S)
    d_et, d_te = _block_min(E, T)
    d_es, d_se = _block_min(E, S)
    d_tt, d_ee, d_ss = (_block_min(m, m, same=True)[0] for m in (T, E, S))

    out: dict[str, MetricValue] = {"n_records": float(n)}
    med_syn, med_test = float(np.median(d_st)), float(np.median(d_et))
    out["dcr_median_synthetic_to_train"] = med_syn
    out["dcr_median_test_to_train"] = med_test
    out["dcr_median_ratio"] = _ratio(med_syn, med_test, "dcr_median_ratio", "median test→train distance")
    out["dcr_share_below_test_p5"] = float(np.mean(d_st < np.quantile(d_et, 0.05)))

    # Exact copies: identical feature rows, checked by hashing against the WHOLE train set.
    train_hashes = pd.util.hash_pandas_object(raw["real_train"], index=False).to_numpy()
    syn_match = np.isin(pd.util.hash_pandas_object(raw["synthetic"], index=False).to_numpy(), train_hashes)
    test_match = np.isin(pd.util.hash_pandas_object(raw["real_test"], index=False).to_numpy(), train_hashes)
    out["exact_match_count"] = float(syn_match.sum())
    out["exact_match_fraction"] = float(syn_match.mean())
    out["exact_match_fraction_test"] = float(test_match.mean())

    # Membership inference: members (train) vs non-members (test), score = −distance to synthetic.
    out["mia_auroc"] = _mia_auroc(d_ts, d_es)

    # Nearest-neighbour adversarial accuracy (Yale et al.).
    aa = lambda d_ab, d_aa, d_ba, d_bb: float(0.5 * (np.mean(d_ab > d_aa) + np.mean(d_ba > d_bb)))  # noqa: E731
    out["aa_train_synthetic"] = aa(d_ts, d_tt, d_st, d_ss)
    out["aa_test_synthetic"] = aa(d_es, d_ee, d_se, d_ss)
    out["aa_train_test"] = aa(d_te, d_tt, d_et, d_ee)
    out["nnaa"] = out["aa_train_synthetic"] - out["aa_test_synthetic"]

    # Code-set variant over all codes (not only the top-K feature columns).
    cT, cE, cS = (codes[k][pick[k]] for k in ("real_train", "real_test", "synthetic"))
    ts, et, es = _set_block_min(cT, cS), _set_block_min(cE, cT), _set_block_min(cE, cS)
    j_syn, j_test = ts["jaccard_b"], et["jaccard_a"]
    out["codes_hamming_median_synthetic_to_train"] = float(np.median(ts["hamming_b"]))
    out["codes_hamming_median_test_to_train"] = float(np.median(et["hamming_a"]))
    out["codes_jaccard_median_synthetic_to_train"] = float(np.median(j_syn))
    out["codes_jaccard_median_test_to_train"] = float(np.median(j_test))
    out["codes_jaccard_median_ratio"] = _ratio(float(np.median(j_syn)), float(np.median(j_test)),
                                               "codes_jaccard_median_ratio", "median test→train Jaccard distance")
    out["codes_exact_match_fraction"] = float(np.mean(ts["hamming_b"] == 0))
    out["codes_exact_match_fraction_test"] = float(np.mean(et["hamming_a"] == 0))
    out["codes_mia_auroc"] = _mia_auroc(ts["jaccard_a"], es["jaccard_a"])
    distances = {"features:synthetic_to_train": d_st, "features:test_to_train": d_et,
                 "codes:synthetic_to_train": j_syn, "codes:test_to_train": j_test}
    return out, distances


def _code_set_matrices(preps: dict[str, PreparedCohort]) -> dict[str, sp.csr_matrix]:
    """Binary visit × code matrices over the union vocabulary of all cohorts."""
    vocab = pd.Index(sorted(set().union(*(set(p.code_key) for p in preps.values()))))
    return {n: _binary_matrix(p.code_pos, vocab.get_indexer(p.code_key), (p.n_visits, len(vocab)))
            for n, p in preps.items()}


def nearest_neighbour_privacy(
    real_train: CohortLike,
    real_test: CohortLike,
    synthetic: CohortLike,
    seed: int = 0,
    max_records: int = DEFAULT_MAX_RECORDS,
    variables: pd.DataFrame | Sequence[str] | None = None,
    space: FeatureSpace | None = None,
    n_threads: int | None = 1,
) -> dict[str, MetricValue]:
    """DCR vs the test→train baseline, exact matches, distance MIA AUROC, NNAA; feature and code-set spaces."""
    preps = _prepare_three(real_train, real_test, synthetic)
    space = space or FeatureSpace.fit(preps["real_train"], variables)
    raw = {n: space.transform(p) for n, p in preps.items()}
    x = {n: space.standardize(f).to_numpy() for n, f in raw.items()}
    with threadpool_limits(limits=n_threads):
        out, _ = _privacy_from_features(x, raw, _code_set_matrices(preps), seed, max_records)
    return out


def distance_histograms(
    distances: dict[str, np.ndarray], bins: int = 40, min_cell_count: int = DEFAULT_MIN_CELL_COUNT
) -> pd.DataFrame:
    """Histograms of nearest-record distances per space (`features`/`codes`), shared edges per
    space; small cells of the real-test distances are blanked."""
    parts = []
    for space in dict.fromkeys(k.split(":")[0] for k in distances):  # insertion order: features, codes
        groups = {k.split(":")[1]: v for k, v in distances.items() if k.startswith(space + ":")}
        pooled = np.concatenate(list(groups.values()))
        hi = float(np.quantile(pooled, 0.99)) if len(pooled) else 1.0
        edges = np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)
        for group, d in groups.items():
            counts = np.histogram(np.clip(d, 0.0, edges[-1]), edges)[0]
            small = np.zeros(len(counts), bool)
            if group.startswith("test"):  # the only distances of real records to real records
                counts, small = _suppress(counts, min_cell_count)
            parts.append(pd.DataFrame({"space": space, "group": group, "left": edges[:-1], "right": edges[1:],
                                       "fraction": counts / max(len(d), 1), "suppressed": small}))
    return pd.concat(parts, ignore_index=True)
