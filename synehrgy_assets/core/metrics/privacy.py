"""Privacy: nearest-neighbour distances between real train, real test and synthetic records, in the
standardized feature space and over code sets (Hamming/Jaccard): distance to closest record
against the test→train baseline, exact copies and nearest-neighbour adversarial accuracy
(`nearest_neighbour_privacy`, which adds the membership attacks of `attacks.py`), the attacks
that read the visits (`privacy_attacks`: membership inference with the real member prior,
attribute inference), and the distance histograms the plots draw (`distance_histograms`, small
real-test cells suppressed). The token-copy attack is `attacks.token_copies`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics.pairwise import euclidean_distances
from threadpoolctl import threadpool_limits

from synehrgy_assets.core.metrics.attacks import (
    DEFAULT_MAX_REFERENCE,
    _nearest,
    _nearest_codes,
    attribute_inference,
    membership_attacks,
)
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


def _real_share(hit: np.ndarray, min_cell_count: int) -> float:
    """mean(hit) for real records, 0 when fewer than `min_cell_count` records are hits."""
    return 0.0 if 0 < int(hit.sum()) < min_cell_count else float(np.mean(hit))


def _ratio(num: float, den: float, key: str, what: str) -> MetricValue:
    return num / den if den > 0 else MetricError(key, f"{what} is 0; ratio undefined")


def _privacy_from_features(
    x: dict[str, np.ndarray], raw: dict[str, pd.DataFrame], codes: dict[str, sp.csr_matrix],
    seed: int, max_records: int, max_reference: int = DEFAULT_MAX_REFERENCE,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
) -> tuple[dict[str, MetricValue], dict[str, np.ndarray]]:
    """Feature-space and code-set nearest-neighbour privacy metrics, plus distance arrays for plots.

    DCR (distance to closest record) and the code-set copies: synthetic and real test visits
    (each a seeded sample of at most `max_records`) against one train reference of at most
    `max_reference` visits, so a copy of any of those train visits sits at distance 0, and the
    real-test distances to the same reference are the baseline. NNAA needs sets of one size: one
    seeded sample of n = min(set sizes, max_records) records per set (T = real train, E = real
    test, S = synthetic) gives T→S, S→T, E→S, S→E, E→T, T→E and the leave-one-out T→T, S→S, E→E.
    The membership attacks are `attacks.membership_attacks`. A real-test share resting on fewer
    than `min_cell_count` visits is reported as 0 (no small real cell leaves the workspace).
    """
    sizes = {k: len(v) for k, v in x.items()}
    too_small = [k for k, v in sizes.items() if v < 2]
    if too_small:
        raise MetricInputError(f"privacy metrics need at least 2 visits in each cohort; too few in {too_small}")
    rng = np.random.default_rng(seed)
    n = min(max_records, *sizes.values())
    pick = {k: np.sort(rng.choice(v, size=n, replace=False)) for k, v in sizes.items()}
    T, E, S = (x[k][pick[k]] for k in ("real_train", "real_test", "synthetic"))
    ref = np.sort(rng.choice(sizes["real_train"], min(sizes["real_train"], max_reference), replace=False))
    src = {k: np.sort(rng.choice(sizes[k], min(sizes[k], max_records), replace=False)) for k in ("real_test", "synthetic")}

    out: dict[str, MetricValue] = {"n_records": float(n), "n_train_reference": float(len(ref))}
    d_st_all = _nearest(x["synthetic"][src["synthetic"]], x["real_train"][ref])
    d_et_all = _nearest(x["real_test"][src["real_test"]], x["real_train"][ref])
    med_syn, med_test = float(np.median(d_st_all)), float(np.median(d_et_all))
    out["dcr_median_synthetic_to_train"] = med_syn
    out["dcr_median_test_to_train"] = med_test
    out["dcr_median_ratio"] = _ratio(med_syn, med_test, "dcr_median_ratio", "median test→train distance")
    out["dcr_share_below_test_p5"] = float(np.mean(d_st_all < np.quantile(d_et_all, 0.05)))

    # Exact copies: identical feature rows, checked by hashing against the WHOLE train set.
    train_hashes = pd.util.hash_pandas_object(raw["real_train"], index=False).to_numpy()
    syn_match = np.isin(pd.util.hash_pandas_object(raw["synthetic"], index=False).to_numpy(), train_hashes)
    test_match = np.isin(pd.util.hash_pandas_object(raw["real_test"], index=False).to_numpy(), train_hashes)
    out["exact_match_count"] = float(syn_match.sum())
    out["exact_match_fraction"] = float(syn_match.mean())
    out["exact_match_fraction_test"] = _real_share(test_match, min_cell_count)

    # Nearest-neighbour adversarial accuracy (Yale et al.), on the equal-size samples.
    d_ts, d_st = _block_min(T, S)
    d_et, d_te = _block_min(E, T)
    d_es, d_se = _block_min(E, S)
    d_tt, d_ee, d_ss = (_block_min(m, m, same=True)[0] for m in (T, E, S))
    aa = lambda d_ab, d_aa, d_ba, d_bb: float(0.5 * (np.mean(d_ab > d_aa) + np.mean(d_ba > d_bb)))  # noqa: E731
    out["aa_train_synthetic"] = aa(d_ts, d_tt, d_st, d_ss)
    out["aa_test_synthetic"] = aa(d_es, d_ee, d_se, d_ss)
    out["aa_train_test"] = aa(d_te, d_tt, d_et, d_ee)
    out["nnaa"] = out["aa_train_synthetic"] - out["aa_test_synthetic"]

    # Code-set variant over all codes (not only the top-K feature columns), same reference as DCR.
    c_ref = codes["real_train"][ref]
    h_syn, j_syn = _nearest_codes(codes["synthetic"][src["synthetic"]], c_ref)
    h_test, j_test = _nearest_codes(codes["real_test"][src["real_test"]], c_ref)
    out["codes_hamming_median_synthetic_to_train"] = float(np.median(h_syn))
    out["codes_hamming_median_test_to_train"] = float(np.median(h_test))
    out["codes_jaccard_median_synthetic_to_train"] = float(np.median(j_syn))
    out["codes_jaccard_median_test_to_train"] = float(np.median(j_test))
    out["codes_jaccard_median_ratio"] = _ratio(float(np.median(j_syn)), float(np.median(j_test)),
                                               "codes_jaccard_median_ratio", "median test→train Jaccard distance")
    out["codes_exact_match_fraction"] = float(np.mean(h_syn == 0))
    out["codes_exact_match_fraction_test"] = _real_share(h_test == 0, min_cell_count)
    distances = {"features:synthetic_to_train": d_st_all, "features:test_to_train": d_et_all,
                 "codes:synthetic_to_train": j_syn, "codes:test_to_train": j_test}
    return out, distances


def _code_set_matrices(preps: dict[str, PreparedCohort]) -> dict[str, sp.csr_matrix]:
    """Binary visit × code matrices over the union vocabulary of all cohorts."""
    vocab = pd.Index(sorted(set().union(*(set(p.code_key) for p in preps.values()))))
    return {n: _binary_matrix(p.code_pos, vocab.get_indexer(p.code_key), (p.n_visits, len(vocab)))
            for n, p in preps.items()}


def default_member_share(preps: dict[str, PreparedCohort]) -> float:
    """Train patients / (train + test patients) of the cohorts at hand; pass the real sampling
    fraction (train patients / all real patients) when the split has more parts."""
    n_t, n_e = (preps[k].cohort.visits["subject_id"].nunique() for k in ("real_train", "real_test"))
    return n_t / max(n_t + n_e, 1)


def privacy_attacks(
    preps: dict[str, PreparedCohort],
    x: dict[str, np.ndarray],
    codes: dict[str, sp.csr_matrix] | None,
    seed: int = 0,
    max_records: int = DEFAULT_MAX_RECORDS,
    member_share: float | None = None,
) -> dict[str, MetricValue]:
    """Membership inference (distance, code-set and density-ratio attacks, with the real member
    prior) and attribute inference from the quasi-identifiers; see `attacks.py`."""
    share = default_member_share(preps) if member_share is None else member_share
    groups = preps["real_test"].cohort.visits["subject_id"].to_numpy()
    out = membership_attacks(x, codes, groups, share, seed, max_records)
    out.update(attribute_inference(
        {n: p.cohort.visits for n, p in preps.items()}, {n: p.code_pos for n, p in preps.items()},
        {n: p.code_key for n, p in preps.items()}, seed, max_records))
    return out


def nearest_neighbour_privacy(
    real_train: CohortLike,
    real_test: CohortLike,
    synthetic: CohortLike,
    seed: int = 0,
    max_records: int = DEFAULT_MAX_RECORDS,
    variables: pd.DataFrame | Sequence[str] | None = None,
    space: FeatureSpace | None = None,
    n_threads: int | None = 1,
    member_share: float | None = None,
) -> dict[str, MetricValue]:
    """DCR vs the test→train baseline, exact matches, NNAA (feature and code-set spaces), and the
    membership and attribute attacks of `privacy_attacks`."""
    preps = _prepare_three(real_train, real_test, synthetic)
    space = space or FeatureSpace.fit(preps["real_train"], variables)
    raw = {n: space.transform(p) for n, p in preps.items()}
    x = {n: space.standardize(f).to_numpy() for n, f in raw.items()}
    codes = _code_set_matrices(preps)
    with threadpool_limits(limits=n_threads):
        out, _ = _privacy_from_features(x, raw, codes, seed, max_records)
        out.update(privacy_attacks(preps, x, codes, seed, max_records, member_share))
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
