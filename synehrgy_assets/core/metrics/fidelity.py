"""Fidelity: how closely a cohort's distributions match real train. Code, code-pair and phenotype
prevalence agreement over the union of items, mortality rates, per-variable marginal distances
(normalized Wasserstein-1, KS, total variation, missingness; `marginal_distances`,
`summarize_marginals`), record-structure distributions (`structure_stats`), and the aggregate
tables the plots draw (`marginal_histograms`, `suppressed_prevalence_table`) with small real cells
suppressed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from synehrgy_assets.core.metrics.common import (
    DEFAULT_MAX_VALUES,
    DEFAULT_MIN_CELL_COUNT,
    MetricError,
    MetricInputError,
    MetricValue,
    _binary_matrix,
    _numeric,
    _suppress,
    resolve_variables,
)
from synehrgy_assets.core.privacy_aggregates import k_anonymous_quantiles, n_patients
from synehrgy_assets.core.metrics.features import (
    CohortLike,
    PreparedCohort,
    _distinct_times,
    mortality_labels,
    prepare_cohort,
)


# --------------------------------------------------------------------------------------------
# Codes, phenotypes and mortality
# --------------------------------------------------------------------------------------------


def _correlations(x: np.ndarray, y: np.ndarray, metric: str) -> dict[str, MetricValue]:
    """Pearson and Spearman r, or explicit errors when undefined (too few points, constant)."""
    names = (f"{metric}_pearson", f"{metric}_spearman")
    if len(x) < 3:
        err = f"only {len(x)} item(s) to correlate; need at least 3"
        return {n: MetricError(n, err) for n in names}
    constant = [side for side, v in (("real", x), ("synthetic", y)) if np.ptp(v) == 0]
    if constant:
        err = f"prevalence is constant in {constant[0]} data; correlation undefined"
        return {n: MetricError(n, err) for n in names}
    return {
        names[0]: float(np.corrcoef(x, y)[0, 1]),
        names[1]: float(stats.spearmanr(x, y).statistic),
    }


def _nonempty(prep: PreparedCohort) -> PreparedCohort:
    if prep.n_visits == 0:
        raise MetricInputError(f"{prep.origin}: table 'visits' is empty")
    return prep


def code_prevalence_table(real: CohortLike, synthetic: CohortLike) -> pd.DataFrame:
    """Per code over the UNION of codes: visit counts, real patients (`n_real_patients`, for
    suppression) and per-visit prevalence (absent = 0)."""
    real, synthetic = _nonempty(prepare_cohort(real, "real")), _nonempty(prepare_cohort(synthetic, "synthetic"))
    counts = [pd.Series(p.code_key, dtype=object).value_counts().rename(n)
              for p, n in ((real, "n_real"), (synthetic, "n_synthetic"))]
    subject = real.cohort.visits["subject_id"].to_numpy()[real.code_pos]
    counts.append(pd.DataFrame({"c": real.code_key, "p": subject}).groupby("c")["p"].nunique()
                  .rename("n_real_patients"))
    table = pd.concat(counts, axis=1).fillna(0)
    table.index = table.index.astype(str)
    table = table.rename_axis("code").reset_index().sort_values("code", kind="stable").reset_index(drop=True)
    table["code_type"] = np.where(table["code"].str.startswith("D:"), "diagnosis", "procedure")
    table["prevalence_real"] = table["n_real"] / real.n_visits
    table["prevalence_synthetic"] = table["n_synthetic"] / synthetic.n_visits
    return table


def _pair_prevalence(prep: PreparedCohort, vocab: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Unordered within-visit code pairs: (sorted pair keys i*V+j with i<j, per-visit prevalence)."""
    x = _binary_matrix(prep.code_pos, vocab.get_indexer(prep.code_key), (prep.n_visits, len(vocab)))
    co = sp.triu(x.T @ x, k=1).tocoo()
    keys = co.row.astype(np.int64) * len(vocab) + co.col.astype(np.int64)
    order = np.argsort(keys)
    return keys[order], co.data[order] / prep.n_visits


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values[keys == wanted] for sorted `keys`, 0 where absent."""
    if len(keys) == 0:
        return np.zeros(len(wanted))
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, values[at], 0.0)


def code_prevalence_correlation(
    real: CohortLike, synthetic: CohortLike, top_pairs: int = 1000
) -> dict[str, MetricValue]:
    """Code, code-pair and phenotype prevalence agreement over the UNION of items (absent = 0),
    the shares of missing/invented codes, and mortality rates."""
    real, synthetic = prepare_cohort(real, "real"), prepare_cohort(synthetic, "synthetic")
    table = code_prevalence_table(real, synthetic)
    out: dict[str, MetricValue] = {}
    for name, mask in (
        ("code_prevalence", np.ones(len(table), bool)),
        ("diagnosis_prevalence", (table["code_type"] == "diagnosis").to_numpy()),
        ("procedure_prevalence", (table["code_type"] == "procedure").to_numpy()),
    ):
        sub = table[mask]
        out.update(_correlations(sub["prevalence_real"].to_numpy(), sub["prevalence_synthetic"].to_numpy(), name))
    shared = ((table["n_real"] > 0) & (table["n_synthetic"] > 0)).to_numpy()
    # The reference's biased variant (intersection only), kept for comparability with the paper.
    inter = _correlations(table.loc[shared, "prevalence_real"].to_numpy(),
                          table.loc[shared, "prevalence_synthetic"].to_numpy(), "code_prevalence_intersection")
    out["code_prevalence_intersection_pearson"] = inter["code_prevalence_intersection_pearson"]
    n_real_codes = int((table["n_real"] > 0).sum())
    n_syn_codes = int((table["n_synthetic"] > 0).sum())
    out["n_codes_union"] = float(len(table))
    key = "share_real_codes_absent_in_synthetic"
    out[key] = (float(((table["n_real"] > 0) & (table["n_synthetic"] == 0)).sum() / n_real_codes)
                if n_real_codes else MetricError(key, "real cohort has no codes"))
    if n_syn_codes:
        invented = (table["n_real"] == 0).to_numpy()
        out["share_synthetic_codes_unseen_in_real"] = float(invented.sum() / n_syn_codes)
        out["synthetic_code_mass_unseen_in_real"] = float(
            table.loc[invented, "n_synthetic"].sum() / table["n_synthetic"].sum())
    else:
        for key in ("share_synthetic_codes_unseen_in_real", "synthetic_code_mass_unseen_in_real"):
            out[key] = MetricError(key, "synthetic cohort has no codes")

    vocab = pd.Index(table["code"].to_numpy(dtype=object))
    real_keys, real_prev = _pair_prevalence(real, vocab)
    syn_keys, syn_prev = _pair_prevalence(synthetic, vocab)
    top = np.union1d(real_keys[np.argsort(-real_prev, kind="stable")[:top_pairs]],
                     syn_keys[np.argsort(-syn_prev, kind="stable")[:top_pairs]])
    out.update(_correlations(_lookup(real_keys, real_prev, top), _lookup(syn_keys, syn_prev, top),
                             "code_pair_prevalence"))
    out["n_code_pairs_compared"] = float(len(top))
    out.update(phenotype_prevalence(real, synthetic))
    out.update(mortality_rates(real, synthetic))
    return out


def phenotype_prevalence(real: CohortLike, synthetic: CohortLike) -> dict[str, MetricValue]:
    """Per-visit phenotype prevalence agreement over the union of phenotypes."""
    preps = _nonempty(prepare_cohort(real, "real")), _nonempty(prepare_cohort(synthetic, "synthetic"))
    both = pd.concat([pd.Series(p.ph_name, dtype=object).value_counts().rename(n) / p.n_visits
                      for p, n in zip(preps, ("real", "syn"))], axis=1).fillna(0.0)
    out = _correlations(both["real"].to_numpy(), both["syn"].to_numpy(), "phenotype_prevalence")
    key = "phenotype_prevalence_max_abs_diff"
    out[key] = (float((both["real"] - both["syn"]).abs().max()) if len(both)
                else MetricError(key, "no phenotype labels in either cohort"))
    return out


def mortality_rates(real: CohortLike, synthetic: CohortLike) -> dict[str, MetricValue]:
    """In-hospital mortality per visit, real vs synthetic."""
    preps = _nonempty(prepare_cohort(real, "real")), _nonempty(prepare_cohort(synthetic, "synthetic"))
    rate_real, rate_syn = (float(mortality_labels(p.cohort, p.origin).mean()) for p in preps)
    return {"mortality_rate_real": rate_real, "mortality_rate_synthetic": rate_syn,
            "mortality_rate_abs_diff": abs(rate_real - rate_syn)}


# --------------------------------------------------------------------------------------------
# Marginal distributions of the measurements
# --------------------------------------------------------------------------------------------


def _ks_and_wasserstein(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic sup|F_a − F_b| and Wasserstein-1 ∫|F_a − F_b| dx, from one sort."""
    a, b = np.sort(a), np.sort(b)
    grid = np.sort(np.concatenate([a, b]))
    diff = np.abs(np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b))
    return float(diff.max()), float(np.sum(diff[:-1] * np.diff(grid)))


def _robust_scale(values: np.ndarray) -> tuple[float, str]:
    """Real IQR, else real std (0 when both are 0), and which one was used."""
    q25, q75 = np.quantile(values, [0.25, 0.75])
    return (float(q75 - q25), "iqr") if q75 > q25 else (float(np.std(values)), "std")


def _sample(values: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[np.sort(rng.choice(len(values), size=limit, replace=False))]


def _values_by_variable(prep: PreparedCohort, names: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """Numeric values per variable over whole stays, and the number of visits with ≥1 row of it."""
    key = ("values_by_variable", tuple(names))
    if key not in prep.cache:
        prep.cache[key] = _compute_values_by_variable(prep, names)
    return prep.cache[key]


def _compute_values_by_variable(prep: PreparedCohort, names: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    var = prep.variable_positions(names).astype(np.int16)  # small ints: stable argsort is a radix sort
    known = var >= 0
    seen = np.zeros((prep.n_visits, len(names) + 1), dtype=bool)
    seen[prep.m_pos, var] = True  # column -1 (unlisted variables) is the extra last column
    visits_with = seen[:, : len(names)].sum(axis=0)
    keep = known & ~np.isnan(prep.m_value)
    order = np.argsort(var[keep], kind="stable")
    sorted_vals, sorted_var = prep.m_value[keep][order], var[keep][order]
    bounds = np.searchsorted(sorted_var, np.arange(len(names) + 1))
    return [sorted_vals[bounds[i]:bounds[i + 1]] for i in range(len(names))], visits_with


def _patients_by_variable(prep: PreparedCohort, names: list[str]) -> list[np.ndarray]:
    """The patient (subject_id) of each value of `_values_by_variable`, aligned with it."""
    key = ("patients_by_variable", tuple(names))
    if key not in prep.cache:
        var = prep.variable_positions(names).astype(np.int16)
        keep = (var >= 0) & ~np.isnan(prep.m_value)
        subject = prep.cohort.visits["subject_id"].to_numpy()[prep.m_pos[keep]]
        order = np.argsort(var[keep], kind="stable")  # the same order as the values
        bounds = np.searchsorted(var[keep][order], np.arange(len(names) + 1))
        prep.cache[key] = [subject[order][bounds[i]:bounds[i + 1]] for i in range(len(names))]
    return prep.cache[key]


def _histogram_edges(row: pd.Series, real_values: np.ndarray) -> np.ndarray:
    edges = np.asarray(row["clinical_edges"], dtype=float)
    return edges if len(edges) else np.unique(np.quantile(real_values, np.linspace(0.1, 0.9, 9)))


def _tv_distance(row: pd.Series, real_values: np.ndarray, syn_values: np.ndarray) -> float:
    """Total variation distance: over categories (categorical) or clinical bins (continuous)."""
    if row["kind"] == "categorical":
        cats, inv = np.unique(np.round(np.concatenate([real_values, syn_values]), 6), return_inverse=True)
        p = np.bincount(inv[: len(real_values)], minlength=len(cats)) / len(real_values)
        q = np.bincount(inv[len(real_values):], minlength=len(cats)) / len(syn_values)
    else:
        edges = _histogram_edges(row, real_values)
        p = np.bincount(np.searchsorted(edges, real_values, side="right"), minlength=len(edges) + 1) / len(real_values)
        q = np.bincount(np.searchsorted(edges, syn_values, side="right"), minlength=len(edges) + 1) / len(syn_values)
    return float(0.5 * np.abs(p - q).sum())


MARGINAL_COLUMNS = [
    "variable", "label", "kind", "unit", "n_values_real", "n_values_synthetic", "wasserstein_normalized",
    "scale_kind", "ks_statistic", "tv_distance", "missingness_real", "missingness_synthetic",
    "missingness_diff", "error",
]


def marginal_distances(
    real: CohortLike,
    synthetic: CohortLike,
    variables: pd.DataFrame | Sequence[str] | None = None,
    max_values: int = DEFAULT_MAX_VALUES,
    seed: int = 0,
) -> pd.DataFrame:
    """Per variable: normalized Wasserstein-1, KS, total variation, missingness (whole stays).

    Rows that cannot be computed (e.g. variable absent from one cohort) carry a non-empty
    `error` and NaN distances; `summarize_marginals` counts them.
    """
    real, synthetic = _nonempty(prepare_cohort(real, "real")), _nonempty(prepare_cohort(synthetic, "synthetic"))
    table = resolve_variables(variables)
    names = table["variable"].tolist()
    rng = np.random.default_rng(seed)
    real_vals, real_seen = _values_by_variable(real, names)
    syn_vals, syn_seen = _values_by_variable(synthetic, names)
    rows = []
    for i, row in table.iterrows():  # one iteration per variable (~40), vectorized inside
        r, s = _sample(real_vals[i], max_values, rng), _sample(syn_vals[i], max_values, rng)
        miss_r, miss_s = real_seen[i] / real.n_visits, syn_seen[i] / synthetic.n_visits
        rec = {
            "variable": row["variable"], "label": row["label"], "kind": row["kind"], "unit": row["unit"],
            "n_values_real": len(real_vals[i]), "n_values_synthetic": len(syn_vals[i]),
            "wasserstein_normalized": np.nan, "scale_kind": "", "ks_statistic": np.nan, "tv_distance": np.nan,
            "missingness_real": miss_r, "missingness_synthetic": miss_s, "missingness_diff": miss_s - miss_r,
            "error": "",
        }
        if len(r) == 0 or len(s) == 0:
            empty = "real" if len(r) == 0 else "synthetic"
            rec["error"] = f"no numeric values of '{row['variable']}' in the {empty} cohort"
            rows.append(rec)
            continue
        if row["kind"] == "categorical":
            # Ordinal scores: normalize by the documented score range, which is never 0.
            scale, scale_kind = float(row["valid_high"]) - float(row["valid_low"]), "score_range"
        else:
            scale, scale_kind = _robust_scale(r)
            if scale <= 0:  # a single real value: W1 in units of the documented valid range
                scale, scale_kind = float(row["valid_high"]) - float(row["valid_low"]), "valid_range"
        rec["ks_statistic"], w1 = _ks_and_wasserstein(r, s)
        rec["tv_distance"] = _tv_distance(row, r, s)
        if scale > 0:
            rec["wasserstein_normalized"] = w1 / scale
            rec["scale_kind"] = scale_kind
        else:
            rec["error"] = f"real values of '{row['variable']}' have zero spread; Wasserstein cannot be normalized"
        rows.append(rec)
    return pd.DataFrame(rows, columns=MARGINAL_COLUMNS)


def summarize_marginals(table: pd.DataFrame) -> dict[str, MetricValue]:
    """Mean/median of the per-variable distances over the rows without an error."""
    ok = table[table["error"] == ""]
    out: dict[str, MetricValue] = {
        "n_variables": float(len(table)),
        "n_variables_failed": float(len(table) - len(ok)),
    }
    for key, agg in (("missingness_abs_diff_mean", "mean"), ("missingness_abs_diff_max", "max")):
        out[key] = (float(getattr(table["missingness_diff"].abs(), agg)()) if len(table)
                    else MetricError(key, "no variables"))
    for column, short in (("wasserstein_normalized", "wasserstein"), ("ks_statistic", "ks"), ("tv_distance", "tv")):
        for agg in ("mean", "median"):
            key = f"marginal_{short}_{agg}"
            out[key] = float(getattr(ok[column], agg)()) if len(ok) else MetricError(
                key, "no variable could be compared (see the marginal table's error column)")
    return out


# --------------------------------------------------------------------------------------------
# Record structure
# --------------------------------------------------------------------------------------------


def _structure_samples(prep: PreparedCohort) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each quantity's values and the patient of each value."""
    n, visits, origin = prep.n_visits, prep.cohort.visits, prep.origin
    subject = visits["subject_id"].to_numpy()
    is_diag = prep.is_diagnosis
    distinct = _distinct_times(prep.m_pos, prep.m_hours)
    same_visit = prep.m_pos[1:] == prep.m_pos[:-1]
    gap_rows = same_visit & distinct[1:] if len(distinct) > 1 else np.zeros(0, bool)
    gaps = np.diff(prep.m_hours)[gap_rows] if len(distinct) > 1 else np.empty(0)
    prev = _numeric(visits, "hours_since_previous_visit", "visits", origin, allow_null=True)
    per_patient = visits.groupby("subject_id").size()
    per_visit = {
        "codes_per_visit": np.bincount(prep.code_pos, minlength=n).astype(float),
        "diagnoses_per_visit": np.bincount(prep.code_pos[is_diag], minlength=n).astype(float),
        "procedures_per_visit": np.bincount(prep.code_pos[~is_diag], minlength=n).astype(float),
        "phenotypes_per_visit": np.bincount(prep.ph_pos, minlength=n).astype(float),
        "measurement_rows_per_visit": np.bincount(prep.m_pos, minlength=n).astype(float),
        "measurement_times_per_visit": np.bincount(prep.m_pos[distinct], minlength=n).astype(float),
        "los_hours": _numeric(visits, "los_hours", "visits", origin, allow_null=False),
    }
    return {
        "visits_per_patient": (per_patient.to_numpy(dtype=float), per_patient.index.to_numpy()),
        **{q: (v, subject) for q, v in per_visit.items()},
        "hours_between_visits": (prev[~np.isnan(prev)], subject[~np.isnan(prev)]),
        "measurement_gap_hours": (gaps, subject[prep.m_pos[1:][gap_rows]] if len(gaps) else np.empty(0, np.int64)),
    }


STRUCTURE_COLUMNS = [
    "quantity", "n_real", "n_synthetic", "mean_real", "mean_synthetic", "median_real", "median_synthetic",
    "ks_statistic", "wasserstein_normalized", "error",
]


def structure_stats(
    real: CohortLike, synthetic: CohortLike, max_values: int = DEFAULT_MAX_VALUES, seed: int = 0,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT, other_is_real: bool = False,
) -> pd.DataFrame:
    """Record-structure distributions (visits/patient, codes/visit, rows/visit, stay length, gaps):
    KS and normalized Wasserstein-1 per quantity; failures in the `error` column.

    Small cells: the mean and median of a real sample are given only when it holds at least
    2 x `min_cell_count` values of at least `min_cell_count` patients, and the median is a
    k-anonymous one (`privacy_aggregates.k_anonymous_quantiles`, k = `min_cell_count`: a plain
    median is one patient's value); `other_is_real` applies the same to the second cohort (the
    real-test baseline). KS and W1 are kept."""
    rng = np.random.default_rng(seed)
    real_s = _structure_samples(_nonempty(prepare_cohort(real, "real")))
    syn_s = _structure_samples(_nonempty(prepare_cohort(synthetic, "synthetic")))
    rows = []
    for quantity in real_s:
        (r_all, r_who), (s_all, s_who) = real_s[quantity], syn_s[quantity]
        r, s = _sample(r_all, max_values, rng), _sample(s_all, max_values, rng)
        rec = {"quantity": quantity, "n_real": len(r_all), "n_synthetic": len(s_all),
               "mean_real": np.nan, "mean_synthetic": np.nan, "median_real": np.nan, "median_synthetic": np.nan,
               "ks_statistic": np.nan, "wasserstein_normalized": np.nan, "error": ""}
        if len(r) == 0 or len(s) == 0:
            rec["error"] = f"no '{quantity}' values in the {'real' if len(r) == 0 else 'synthetic'} cohort"
            rows.append(rec)
            continue
        small = [side for side, n, is_real in (("real", len(r), True), ("synthetic", len(s), other_is_real))
                 if is_real and n < min_cell_count]
        if small:  # a count and a distribution of a handful of real values: a small cell
            rec.update({f"n_{side}": np.nan for side in small})
            rec["error"] = f"fewer than {min_cell_count} real '{quantity}' values (small cell, held back)"
            rows.append(rec)
            continue
        ks, w1 = _ks_and_wasserstein(r, s)
        rec["ks_statistic"] = ks
        for side, values, who, is_real in (("real", r_all, r_who, True), ("synthetic", s_all, s_who, other_is_real)):
            if not is_real:
                rec[f"mean_{side}"], rec[f"median_{side}"] = float(values.mean()), float(np.median(values))
            elif len(values) >= 2 * min_cell_count and n_patients(who) >= min_cell_count:
                median = k_anonymous_quantiles(values, who, [0.5], k=min_cell_count)
                rec[f"mean_{side}"] = float(values.mean())
                rec[f"median_{side}"] = np.nan if median is None else median[0]
        scale, _ = _robust_scale(r)
        if scale > 0:
            rec["wasserstein_normalized"] = w1 / scale
        else:
            rec["error"] = f"real '{quantity}' is constant; Wasserstein cannot be normalized"
        rows.append(rec)
    return pd.DataFrame(rows, columns=STRUCTURE_COLUMNS)


# --------------------------------------------------------------------------------------------
# Aggregate tables for plots (small real cells suppressed)
# --------------------------------------------------------------------------------------------


HISTOGRAM_COLUMNS = ["variable", "label", "kind", "unit", "bin", "bin_label", "left", "right",
                     "real_fraction", "synthetic_fraction", "real_suppressed"]


def marginal_histograms(
    real: CohortLike,
    synthetic: CohortLike,
    variables: pd.DataFrame | Sequence[str] | None = None,
    bins: int = 30,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
) -> pd.DataFrame:
    """Binned value fractions per variable, real vs synthetic (aggregates only).

    Continuous bins span the real 0.5–99.5th percentiles, each a k-anonymous quantile
    (`privacy_aggregates.k_anonymous_quantiles`, k = `min_cell_count`: it depends on that many
    patients and at least that many reach beyond it; values outside fall in the edge bins), so no
    individual value or extreme sets an axis. Real bins with fewer than `min_cell_count` values or
    values of fewer than `min_cell_count` patients are blanked (`real_suppressed`). A variable
    whose real values give no such range (too few patients) has its real side blanked and its axis
    from the synthetic values; a category only real and blanked is left out.
    """
    real, synthetic = prepare_cohort(real, "real"), prepare_cohort(synthetic, "synthetic")
    table = resolve_variables(variables)
    names = table["variable"].tolist()
    real_vals, _ = _values_by_variable(real, names)
    real_who = _patients_by_variable(real, names)
    syn_vals, _ = _values_by_variable(synthetic, names)
    parts = []
    for i, row in table.iterrows():
        r, s, who = real_vals[i], syn_vals[i], real_who[i]
        if len(r) == 0 and len(s) == 0:
            continue
        if row["kind"] == "categorical":
            cats = np.unique(np.round(np.concatenate([r, s]), 6))
            bin_of = np.searchsorted(cats, np.round(r, 6))
            sc = np.bincount(np.searchsorted(cats, np.round(s, 6)), minlength=len(cats))
        else:
            axis = k_anonymous_quantiles(r, who, [0.005, 0.995], k=min_cell_count) if len(r) else None
            if axis is None:  # no k-anonymous real range: the real side is blanked below
                if len(s) == 0:
                    continue
                axis = np.quantile(s, [0.005, 0.995])
                who = np.full(len(r), -1)  # counts as one patient: every real bin is blanked
            lo, hi = axis
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            edges = np.linspace(lo, hi, bins + 1)
            bin_of = np.clip(np.searchsorted(edges, np.clip(r, lo, hi), side="right") - 1, 0, bins - 1)
            sc = np.histogram(np.clip(s, lo, hi), edges)[0]
            cats = edges[:-1]
        rc = np.bincount(bin_of, minlength=len(cats))
        rc_kept, small = _suppress(rc, min_cell_count)
        people = pd.DataFrame({"b": bin_of, "p": who}).groupby("b")["p"].nunique().reindex(
            range(len(cats)), fill_value=0).to_numpy()
        few = (rc > 0) & (people < min_cell_count)
        rc_kept, small = np.where(few, 0, rc_kept), small | few
        if row["kind"] == "categorical":
            shown = ~(small & (sc == 0))
            cats, rc_kept, small, sc = cats[shown], rc_kept[shown], small[shown], sc[shown]
            left = right = cats
            labels = [f"{c:g}" for c in cats]
        else:
            left, right = edges[:-1], edges[1:]
            labels = [f"[{a:.4g}, {b:.4g})" for a, b in zip(left, right)]
        parts.append(pd.DataFrame({
            "variable": row["variable"], "label": row["label"], "kind": row["kind"], "unit": row["unit"],
            "bin": np.arange(len(left)), "bin_label": labels, "left": left, "right": right,
            "real_fraction": rc_kept / max(len(r), 1), "synthetic_fraction": sc / max(len(s), 1),
            "real_suppressed": small,
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=HISTOGRAM_COLUMNS)


def suppressed_prevalence_table(table: pd.DataFrame, min_cell_count: int = DEFAULT_MIN_CELL_COUNT) -> pd.DataFrame:
    """Code prevalence table without codes seen in fewer than `min_cell_count` real visits or
    real patients (but > 0)."""
    rare = (table["n_real"] > 0) & (table["n_real"] < min_cell_count)
    if "n_real_patients" in table:
        rare |= (table["n_real"] > 0) & (table["n_real_patients"] < min_cell_count)
    return table.loc[~rare, ["code", "code_type", "prevalence_real", "prevalence_synthetic"]].reset_index(drop=True)
