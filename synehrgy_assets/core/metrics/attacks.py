"""Privacy attacks that can fail on a real leak (docs/evaluation.md, "Privacy").

* `token_copies`: copies of train content in the DISCRETE token sequences (codes, labels,
  covariates, value bins, DT bins), which decoding cannot hide by re-drawing values inside their
  bins: synthetic visits whose token sequence, token multiset or header (covariates, labels,
  codes) equals a train visit's, and long token n-grams shared with train patients. Every figure
  comes with the same figure for real test patients, the chance level.
* `membership_attacks`: membership inference on an attack set whose member share is the real
  sampling fraction (El Emam et al.): nearest-synthetic distance in feature space and over code
  sets, and a density-ratio attack (DOMIAS-style, p_synthetic / p_reference with Gaussian kernel
  densities in a PCA space of the synthetic features). AUROC and precision at that prior, per
  attack and the maximum.
* `attribute_inference`: predict sensitive fields (in-hospital mortality, the most prevalent
  diagnoses) from quasi-identifiers with the synthetic records (nearest QI match, Yan et al.);
  the risk on real train records (members) against real test records (non-members).

Every result is an aggregate (a share, an AUROC, an F1); no record leaves these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import euclidean_distances

from synehrgy_assets.core.metrics.common import DEFAULT_MIN_CELL_COUNT, MetricError, MetricInputError, MetricValue

DEFAULT_NGRAM_LENGTH = 32
DEFAULT_NEAR_COPY_SHARE = 0.5
DEFAULT_NGRAM_SAMPLE_BITS = 3
DEFAULT_MAX_REFERENCE = 10_000
DEFAULT_DOMIAS_COMPONENTS = 32
DEFAULT_N_DIAGNOSES = 5
QUASI_IDENTIFIERS = ("age_bin", "gender", "ethnicity_group", "insurance", "admission_type", "first_careunit")

# --------------------------------------------------------------------------------------------
# Hashing token sequences
# --------------------------------------------------------------------------------------------

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(0x100000001B3)  # odd: multiplication by it is a bijection mod 2**64


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit (wraps mod 2**64)."""
    x = np.asarray(x).astype(np.uint64) + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class TokenStreams:
    """The token sequences `token_copies` compares: real train, real test and synthetic patients.

    Each is a `TokenSequences` (or anything with flat `tokens` and `offsets`, n + 1, and optionally
    `vocab_version`) or a `(tokens, offsets)` pair; `token_types` is `vocab.token_types`.
    """

    real_train: object
    real_test: object
    synthetic: object
    token_types: np.ndarray


def _flat(seqs, name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    if isinstance(seqs, tuple):
        tokens, offsets, version = seqs[0], seqs[1], None
    else:
        tokens, offsets, version = seqs.tokens, seqs.offsets, getattr(seqs, "vocab_version", None)
    tokens, offsets = np.asarray(tokens), np.asarray(offsets).astype(np.int64)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise MetricInputError(f"{name} token sequences: token ids must be integers, got {tokens.dtype}")
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(tokens) \
            or np.any(np.diff(offsets) < 0):
        raise MetricInputError(f"{name} token sequences: offsets must rise from 0 to len(tokens)")
    return tokens, offsets, version


def _strip(tokens: np.ndarray, offsets: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the tokens flagged in `drop`, keeping patient boundaries."""
    if not drop.any():
        return tokens, offsets
    kept = np.r_[0, np.cumsum(~drop)]
    return tokens[~drop], kept[offsets]


def _visit_hashes(tokens: np.ndarray, offsets: np.ndarray, types: np.ndarray,
                  mixed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One hash per complete visit (closed by `</adm>`), three ways: the token sequence, the token
    multiset, and the header (covariates, labels and codes, up to `</code>`); plus `patient`, the
    patient index of each visit. `mixed` is `_mix64` of every token id (computed when None).

    A visit's content is its tokens from AGE to `</adm>`: GAP_VISIT (the time since the previous
    stay) and the patient markers are left out, so a first visit and a later one compare alike.
    Sequence hash: sum of mix(token) x R[position] over the content (R: fixed odd 64-bit
    multipliers per position, so order counts); multiset hash: sum of mix(token); each finalized
    with the content length. A few passes over the flat stream, no Python loop.
    """
    from synehrgy_assets.core.tokens.grammar import TokenType as T

    mixed = _mix64(np.arange(len(types))) if mixed is None else mixed
    n = len(tokens)
    empty = {k: np.zeros(0, np.uint64) for k in ("sequence", "multiset", "header")}
    if not n:
        return {**empty, "patient": np.zeros(0, np.int64)}
    ty = types[tokens]
    end_pos = np.flatnonzero(ty == T.END_ADM)
    # Segments: each patient's start and the token after every </adm>; a segment is a visit when
    # its last token is </adm> (the rest is `</s> <pad>*` or an unfinished visit).
    seg_start = np.union1d(offsets[:-1][offsets[:-1] < n], end_pos[end_pos + 1 < n] + 1)
    seg_len = np.diff(np.r_[seg_start, n])
    closed = ty[seg_start + seg_len - 1] == T.END_ADM
    seg = np.repeat(np.arange(len(seg_start), dtype=np.int32 if len(seg_start) < 2**31 else np.int64), seg_len)
    markers = np.zeros(max(int(t) for t in T) + 1, dtype=bool)
    markers[[T.PAD, T.BOS, T.EOS, T.GAP_VISIT]] = True
    content = ~markers[ty] & closed[seg]
    pos = np.cumsum(content) - content  # content tokens before this one, flat ...
    pos -= pos[seg_start][seg]          # ... and within its segment
    code_ends = np.cumsum(ty == T.END_CODE) - (ty == T.END_CODE)
    header = content & (code_ends == code_ends[seg_start][seg])  # no </code> before it in its visit
    m = np.where(content, mixed[tokens], np.uint64(0))
    max_pos = int(pos[content].max()) + 1 if content.any() else 1
    r = _mix64(np.arange(max_pos, dtype=np.uint64) + np.uint64(1 << 40)) | np.uint64(1)
    ordered = m * r[np.minimum(pos, max_pos - 1)]
    visits = np.flatnonzero(closed)
    first = seg_start[visits]
    sums = {"sequence": np.add.reduceat(ordered, seg_start)[visits],
            "multiset": np.add.reduceat(m, seg_start)[visits],
            "header": np.add.reduceat(np.where(header, ordered, np.uint64(0)), seg_start)[visits]}
    sizes = {"sequence": np.add.reduceat(content, seg_start)[visits],
             "header": np.add.reduceat(header, seg_start)[visits]}
    sizes["multiset"] = sizes["sequence"]
    patient = np.searchsorted(offsets, first, side="right") - 1
    return {"patient": patient,
            **{k: _mix64(v ^ _mix64(sizes[k].astype(np.uint64) + np.uint64(len(k)))) for k, v in sums.items()}}


def _ngram_hashes(tokens: np.ndarray, offsets: np.ndarray, length: int, mixed: np.ndarray | None = None,
                  sample_bits: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial hashes of every `length`-token window inside one patient, and its patient index.

    Built by doubling (windows of 1, 2, 4, ... tokens combined as h[i] * B**m + h[i + m]), so the
    cost is O(log length) passes over the flat stream, not `length` passes. `mixed`: `_mix64` of
    every token id. `sample_bits` > 0 keeps only the windows whose hash has that many leading zero
    bits (1 in 2**sample_bits): a choice by content, so the same n-gram is kept in every set.
    """
    n = len(tokens)
    if n < length:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    values = mixed[tokens] if mixed is not None else _mix64(tokens)
    with np.errstate(over="ignore"):
        h = _combine_windows(values, n, length)
    del values
    patient = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[:len(h)]
    keep = np.arange(len(h)) + length <= offsets[1:][patient]
    if sample_bits:
        keep &= (h >> np.uint64(64 - sample_bits)) == 0
    return h[keep], patient[keep]


def _combine_windows(mixed: np.ndarray, n: int, length: int) -> np.ndarray:
    """h[i] = sum_k mixed[i + k] * B**(length - 1 - k), k < length, for i <= n - length."""
    keep: dict[int, np.ndarray] = {}  # the power-of-two windows in the binary decomposition of `length`
    power = {1: _BASE}
    h, m = mixed, 1
    while True:
        if length & m:
            keep[m] = h
        if 2 * m > length:
            break
        h = h[:-m] * power[m] + h[m:]  # windows of 2m tokens
        power[2 * m] = power[m] * power[m]
        m *= 2
    out, covered = None, 0
    for size in sorted(keep, reverse=True):
        piece = keep.pop(size)[covered:covered + n - length + 1]
        out = piece if out is None else out * power[size] + piece
        covered += size
    return out


def _member(values: np.ndarray, sorted_reference: np.ndarray) -> np.ndarray:
    """values ∈ reference: binary search of the sorted values in the sorted reference (sorted
    queries keep the search cache-friendly; several times faster than np.isin on these sizes)."""
    hit = np.zeros(len(values), dtype=bool)
    if not len(sorted_reference) or not len(values):
        return hit
    order = np.argsort(values)
    queries = values[order]
    pos = np.minimum(np.searchsorted(sorted_reference, queries), len(sorted_reference) - 1)
    hit[order] = sorted_reference[pos] == queries
    return hit


def _share(hit: np.ndarray, patient: np.ndarray, min_cell_count: int, real: bool) -> float:
    """mean(hit); for real records, 0 when the hits come from fewer than `min_cell_count` patients
    (no small cell leaves the workspace; the gates' floor covers a share that small)."""
    if real and 0 < np.count_nonzero(np.bincount(patient[hit])) < min_cell_count:
        return 0.0
    return float(np.mean(hit))


def token_copies(
    streams: TokenStreams,
    ngram_length: int = DEFAULT_NGRAM_LENGTH,
    near_copy_share: float = DEFAULT_NEAR_COPY_SHARE,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    ngram_sample_bits: int = DEFAULT_NGRAM_SAMPLE_BITS,
) -> dict[str, MetricValue]:
    """Copies of train patients in the discrete token content, synthetic beside real test.

    Against the WHOLE train set: the share of visits whose token sequence / token multiset /
    header equals some train visit's (`visit_*_copy_fraction`), the share of `ngram_length`-token
    windows that occur in some train patient (`ngram_shared_fraction`) and the share of patients
    with at least `near_copy_share` of their windows in train (`ngram_near_copy_patient_share`).
    Each `…_test` key is the same figure for real test patients (the chance level); a real-test
    share resting on fewer than `min_cell_count` patients is reported as 0. The n-gram shares are
    estimated on the windows whose hash starts with `ngram_sample_bits` zero bits (1 in 8 by
    default; a choice by content, the same windows in every set), which bounds the cost at 40k
    patients; a copied n-gram is kept or dropped in train and synthetic alike.
    """
    types = np.asarray(streams.token_types)
    flat = {n: _flat(getattr(streams, n), n) for n in ("real_train", "real_test", "synthetic")}
    versions = {n: v[2] for n, v in flat.items() if v[2] is not None}
    if len(set(versions.values())) > 1:
        raise MetricInputError(f"token sequences use different vocabularies: {versions}")
    for name, (tokens, _, _) in flat.items():
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= len(types)):
            raise MetricInputError(f"{name} token sequences hold ids outside the vocabulary [0, {len(types)})")
    if ngram_length < 2:
        raise MetricInputError(f"ngram_length must be >= 2, got {ngram_length}")

    from synehrgy_assets.core.tokens.grammar import TokenType as T

    mixed = _mix64(np.arange(len(types)))
    visits = {n: _visit_hashes(t, o, types, mixed) for n, (t, o, _) in flat.items()}
    grams = {}
    for n, (t, o, _) in flat.items():
        t, o = _strip(t, o, types[t] == T.PAD)
        grams[n] = _ngram_hashes(t, o, ngram_length, mixed, ngram_sample_bits) + (len(o) - 1,)
    train_visits = {kind: np.sort(h) for kind, h in visits["real_train"].items() if kind != "patient"}
    train_grams = np.sort(grams["real_train"][0])

    out: dict[str, MetricValue] = {"ngram_length": float(ngram_length)}
    for name, suffix in (("synthetic", ""), ("real_test", "_test")):
        real = name != "synthetic"
        for kind, label in (("sequence", "visit_sequence"), ("multiset", "visit_multiset"), ("header", "visit_header")):
            h = visits[name][kind]
            key = f"{label}_copy_fraction{suffix}"
            out[key] = _share(_member(h, train_visits[kind]), visits[name]["patient"], min_cell_count, real) \
                if len(h) else MetricError(key, f"no complete visit in the {name} token sequences")
        h, patient, n_patients = grams[name]
        key = f"ngram_shared_fraction{suffix}"
        if not len(h):
            out[key] = MetricError(key, f"no {ngram_length}-token window in the {name} token sequences")
            out[f"ngram_near_copy_patient_share{suffix}"] = MetricError(key, "no window")
            continue
        hit = _member(h, train_grams)
        out[key] = _share(hit, patient, min_cell_count, real)
        windows = np.bincount(patient, minlength=n_patients)
        shared = np.bincount(patient, weights=hit, minlength=n_patients)
        has = np.flatnonzero(windows > 0)
        near = shared[has] / windows[has] >= near_copy_share
        out[f"ngram_near_copy_patient_share{suffix}"] = _share(near, has, min_cell_count, real)
    return out


# --------------------------------------------------------------------------------------------
# Membership inference
# --------------------------------------------------------------------------------------------


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of `a` to its nearest row of `b` (row chunks bound memory)."""
    b_sq = np.einsum("ij,ij->i", b, b)[None, :]
    out = np.empty(len(a))
    chunk = max(1, 8_000_000 // max(len(b), 1))
    for start in range(0, len(a), chunk):
        out[start:start + chunk] = euclidean_distances(a[start:start + chunk], b, Y_norm_squared=b_sq).min(axis=1)
    return out


def _nearest_codes(a: sp.csr_matrix, b: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """From each code set of `a` to its nearest one in `b`: the Hamming distance |A△B| and the
    Jaccard distance |A△B| / |A∪B| (two empty sets: 0), with |A∩B| from a chunked sparse product."""
    a_size, b_size = np.asarray(a.sum(axis=1)).ravel(), np.asarray(b.sum(axis=1)).ravel()
    b_t = b.T.tocsc()
    hamming, jaccard = np.empty(a.shape[0]), np.empty(a.shape[0])
    chunk = max(1, 4_000_000 // max(b.shape[0], 1))
    for start in range(0, a.shape[0], chunk):
        stop = min(start + chunk, a.shape[0])
        inter = (a[start:stop] @ b_t).toarray()
        union = a_size[start:stop, None] + b_size[None, :] - inter
        sym = union - inter
        hamming[start:stop] = sym.min(axis=1)
        jaccard[start:stop] = np.divide(sym, union, out=np.zeros_like(union), where=union > 0).min(axis=1)
    return hamming, jaccard


def _kde_logpdf(points: np.ndarray, data: np.ndarray) -> np.ndarray:
    """log density of an isotropic Gaussian KDE of `data` (whitened coordinates) at `points`;
    Scott's bandwidth n**(-1/(d+4))."""
    n, d = data.shape
    h = n ** (-1.0 / (d + 4))
    out = np.empty(len(points))
    d_sq = np.einsum("ij,ij->i", data, data)[None, :]
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, len(points), chunk):
        dist2 = euclidean_distances(points[start:start + chunk], data, Y_norm_squared=d_sq, squared=True)
        out[start:start + chunk] = logsumexp(-dist2 / (2 * h * h), axis=1)
    return out - np.log(n) - d * np.log(h) - 0.5 * d * np.log(2 * np.pi)


def _precision_at_prior(y: np.ndarray, score: np.ndarray, rng: np.random.Generator) -> float:
    """Precision of claiming the top-k scores members, k = the number of members (random tie-break).
    With k predicted members precision equals recall and F1."""
    k = int(y.sum())
    order = np.lexsort((rng.random(len(score)), -score))
    return float(y[order[:k]].mean()) if k else float("nan")


def membership_attacks(
    x: dict[str, np.ndarray],
    codes: dict[str, sp.csr_matrix] | None,
    test_groups: np.ndarray,
    member_share: float,
    seed: int = 0,
    max_records: int = 5_000,
    max_reference: int = DEFAULT_MAX_REFERENCE,
    n_components: int = DEFAULT_DOMIAS_COMPONENTS,
) -> dict[str, MetricValue]:
    """Membership inference with the real member prior; members = real train visits (label 1),
    non-members = real test visits (label 0), every attack scoring against the synthetic set.

    `x`: standardized visit features per cohort (`real_train`, `real_test`, `synthetic`);
    `codes`: binary visit × code matrices (None skips the code-set attack); `test_groups`: the
    patient of each test visit (the DOMIAS reference folds keep a patient's visits together);
    `member_share`: the real sampling fraction (train patients / all patients), the share of
    members in the attack set.
    """
    if not 0.0 < member_share < 1.0:
        raise MetricInputError(f"member_share must be in (0, 1), got {member_share}")
    n_t, n_e, n_s = (len(x[k]) for k in ("real_train", "real_test", "synthetic"))
    if min(n_t, n_e, n_s) < 2:
        raise MetricInputError("membership inference needs at least 2 visits in each cohort")
    rng = np.random.default_rng(seed)
    total = int(min(max_records, n_e / (1 - member_share), n_t / member_share))
    n_non = max(1, min(n_e, round((1 - member_share) * total)))
    n_mem = max(1, min(n_t, total - n_non))
    mem = np.sort(rng.choice(n_t, n_mem, replace=False))
    non = np.sort(rng.choice(n_e, n_non, replace=False))
    ref = np.sort(rng.choice(n_s, min(n_s, max_reference), replace=False))
    y = np.r_[np.ones(n_mem), np.zeros(n_non)]
    out: dict[str, MetricValue] = {"mia_member_prior": float(n_mem / (n_mem + n_non)),
                                   "mia_attack_members": float(n_mem), "mia_attack_nonmembers": float(n_non)}
    scores: dict[str, np.ndarray | MetricError] = {}

    attack = np.vstack([x["real_train"][mem], x["real_test"][non]])
    syn = x["synthetic"][ref]
    scores["mia"] = -_nearest(attack, syn)
    if codes is not None:
        attack_codes = sp.vstack([codes["real_train"][mem], codes["real_test"][non]]).tocsr()
        scores["codes_mia"] = -_nearest_codes(attack_codes, codes["synthetic"][ref])[1]
    scores["domias_mia"] = _domias(x, attack, syn, mem, non, test_groups, n_components, rng)

    for name, score in scores.items():
        if isinstance(score, MetricError):
            out[f"{name}_auroc"] = score
            continue
        out[f"{name}_auroc"] = float(roc_auc_score(y, score))
        out[f"{name}_precision_at_prior"] = _precision_at_prior(y, score, rng)
    done = [k for k in scores if not isinstance(scores[k], MetricError)]
    out["mia_auroc_max"] = max(out[f"{k}_auroc"] for k in done)
    out["mia_precision_at_prior_max"] = max(out[f"{k}_precision_at_prior"] for k in done)
    return out


def _domias(x, attack, syn, mem, non, test_groups, n_components, rng) -> np.ndarray | MetricError:
    """DOMIAS-style density ratio: score = log p_synthetic(x) - log p_reference(x).

    Coordinates: the first `n_components` principal components of the synthetic features, scaled
    to unit variance (what an attacker holding the release can fit). p_reference is a KDE of real
    non-member visits; the test patients are split in two folds and each test visit is scored with
    the other fold's KDE, so no record is in its own reference. Each member is scored with one of
    the two fold KDEs at random, so both classes meet references of the same size.
    """
    key = "domias_mia_auroc"
    test_groups = np.asarray(test_groups)
    groups = pd.unique(test_groups)
    if len(groups) < 4:
        return MetricError(key, f"{len(groups)} test patients: too few for two reference folds")
    d = int(min(n_components, syn.shape[1], len(syn) - 1))
    pca = PCA(n_components=d, random_state=0).fit(syn)
    scale = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
    proj = lambda a: pca.transform(a) / scale  # noqa: E731
    fold_of_group = dict(zip(groups, rng.permutation(len(groups)) % 2))
    fold = np.array([fold_of_group[g] for g in test_groups])
    test_proj = proj(x["real_test"])
    sizes = np.bincount(fold, minlength=2)
    if sizes.min() < 2:
        return MetricError(key, "a reference fold holds fewer than 2 test visits")
    points = proj(attack)
    log_syn = _kde_logpdf(points, proj(syn))
    # The fold each attack record is NOT in supplies its reference density.
    other = np.r_[rng.integers(0, 2, len(mem)), 1 - fold[non]]
    log_ref = np.empty(len(points))
    for k in (0, 1):
        rows = other == k
        log_ref[rows] = _kde_logpdf(points[rows], test_proj[fold == k])
    return log_syn - log_ref


# --------------------------------------------------------------------------------------------
# Attribute inference
# --------------------------------------------------------------------------------------------


def _quasi_identifiers(visits: pd.DataFrame) -> pd.DataFrame:
    """Age bin (the tokenizer's AGE bins, the capped > 89 group apart) and the categorical covariates."""
    from synehrgy_assets.core.tokens.vocabulary import AGE_EDGES

    age = pd.to_numeric(visits["age_years"], errors="coerce").to_numpy(dtype=float)
    age_bin = np.searchsorted(np.asarray(AGE_EDGES), age, side="right").astype(np.int64)
    capped = visits["age_is_capped"].fillna(False).astype(bool).to_numpy() | (age >= 90)
    age_bin[capped] = len(AGE_EDGES) + 1
    age_bin[np.isnan(age)] = -1
    qi = {"age_bin": age_bin.astype(str)}
    for col in QUASI_IDENTIFIERS[1:]:
        qi[col] = visits[col].astype("object").where(visits[col].notna(), "__null__").astype(str).to_numpy()
    return pd.DataFrame(qi)


def _sensitive(visits: pd.DataFrame, code_pos: np.ndarray, code_key: np.ndarray, diagnoses: list[str]) -> np.ndarray:
    """visit × attribute 0/1 matrix: in-hospital mortality, then one column per diagnosis key."""
    out = np.zeros((len(visits), 1 + len(diagnoses)), dtype=np.int8)
    out[:, 0] = pd.to_numeric(visits["mortality_inhospital"], errors="coerce").fillna(0).to_numpy() > 0
    col = pd.Index(diagnoses).get_indexer(code_key)
    hit = col >= 0
    out[code_pos[hit], 1 + col[hit]] = 1
    return out


def _nearest_cell_predictions(query: np.ndarray, cells: np.ndarray, counts: np.ndarray, sums: np.ndarray
                              ) -> np.ndarray:
    """For each query QI vector: the mean attribute over every synthetic record at the smallest
    number of mismatching quasi-identifiers (all tied nearest records vote). The matches come from
    a product of one-hot encodings (codes are category indices per column, shared by both sides)."""
    width = np.maximum(query.max(axis=0), cells.max(axis=0)) + 1
    base = np.r_[0, np.cumsum(width)[:-1]]

    def onehot(codes: np.ndarray) -> sp.csr_matrix:
        rows = np.repeat(np.arange(len(codes)), codes.shape[1])
        return sp.csr_matrix((np.ones(codes.size, np.float32), (rows, (codes + base).ravel())),
                             shape=(len(codes), int(width.sum())))

    cells_t = onehot(cells).T.tocsc()
    q = onehot(query)
    out = np.empty((len(query), sums.shape[1]))
    chunk = max(1, 4_000_000 // max(len(cells), 1))
    for start in range(0, len(query), chunk):
        matches = (q[start:start + chunk] @ cells_t).toarray()
        nearest = (matches == matches.max(axis=1, keepdims=True)).astype(np.float64)
        out[start:start + chunk] = (nearest @ sums) / (nearest @ counts)[:, None]
    return out


def _f1(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Positive-class F1 per attribute column, under row weights (n_rows,) or (n_boot, n_rows)."""
    tp = weights @ (y & pred)
    fp = weights @ (~y & pred)
    fn = weights @ (y & ~pred)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den, dtype=float), where=den > 0)


def attribute_inference(
    visits: dict[str, pd.DataFrame],
    code_pos: dict[str, np.ndarray],
    code_key: dict[str, np.ndarray],
    seed: int = 0,
    max_records: int = 5_000,
    n_diagnoses: int = DEFAULT_N_DIAGNOSES,
    n_bootstrap: int = 200,
) -> dict[str, MetricValue]:
    """Attribute inference from the quasi-identifiers, with the synthetic records as the model.

    Sensitive attributes: in-hospital mortality and the `n_diagnoses` diagnoses most prevalent in
    real train. Risk = mean positive-class F1 over the attributes, weighted by each attribute's
    binary entropy in real train (Yan et al.), on real train visits (members) and real test visits
    (non-members); `attribute_advantage` = member risk − non-member risk, with its bootstrap
    standard error `attribute_advantage_se`.
    """
    train_keys = pd.Series(code_key["real_train"])
    is_dx = train_keys.str.startswith("D:").to_numpy()
    prevalence = pd.Series(code_pos["real_train"][is_dx]).groupby(train_keys[is_dx].to_numpy()).nunique()
    diagnoses = sorted(prevalence.index, key=lambda k: (-prevalence[k], k))[:n_diagnoses]
    qi = {n: _quasi_identifiers(v) for n, v in visits.items()}
    sens = {n: _sensitive(visits[n], code_pos[n], code_key[n], diagnoses) for n in visits}
    if min(len(v) for v in visits.values()) < 2:
        raise MetricInputError("attribute inference needs at least 2 visits in each cohort")

    # One integer code per category over all cohorts, so cells compare as integer vectors.
    coded = {n: np.empty((len(q), len(QUASI_IDENTIFIERS)), np.int64) for n, q in qi.items()}
    for j, col in enumerate(QUASI_IDENTIFIERS):
        cats = pd.Index(sorted(set().union(*(set(q[col]) for q in qi.values()))))
        for n, q in qi.items():
            coded[n][:, j] = cats.get_indexer(q[col])
    cells, inverse = np.unique(coded["synthetic"], axis=0, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse, minlength=len(cells)).astype(float)
    sums = np.zeros((len(cells), sens["synthetic"].shape[1]))
    np.add.at(sums, inverse, sens["synthetic"])

    p = sens["real_train"].mean(axis=0)
    entropy = -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0)
                + np.where(p < 1, (1 - p) * np.log2(np.where(p < 1, 1 - p, 1)), 0))
    if entropy.sum() <= 0:
        return {"attribute_risk_members": MetricError("attribute_risk_members",
                                                      "every sensitive attribute is constant in real train")}
    w = entropy / entropy.sum()

    rng = np.random.default_rng(seed)
    out: dict[str, MetricValue] = {"attribute_n_attributes": float(len(w))}
    risk, boot = {}, {}
    for name, label in (("real_train", "members"), ("real_test", "nonmembers")):
        n = len(coded[name])
        pick = np.sort(rng.choice(n, min(n, max_records), replace=False))
        y = sens[name][pick].astype(bool)
        pred = _nearest_cell_predictions(coded[name][pick], cells, counts, sums) >= 0.5
        risk[label] = float(_f1(y, pred, np.ones(len(pick))) @ w)
        weights = rng.multinomial(len(pick), np.full(len(pick), 1 / len(pick)), size=n_bootstrap).astype(float)
        boot[label] = _f1(y, pred, weights) @ w
        out[f"attribute_risk_{label}"] = risk[label]
    out["attribute_advantage"] = risk["members"] - risk["nonmembers"]
    out["attribute_advantage_se"] = float(np.std(boot["members"] - boot["nonmembers"], ddof=1))
    return out
