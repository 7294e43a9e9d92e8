"""Fitting the vocabulary on the train split: covariate and code lists, the visit scales (age,
gap between visits, LOS, hospital-stay offsets) and the measurement variables' bins and categories.

`fit_parts` returns the `TokenVocabulary` constructor's arguments; only aggregates, each over
>= `min_patients` train patients, never patient rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synehrgy_assets.core import variables as _variables
from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.privacy_aggregates import (
    k_anonymous_quantiles,
    k_anonymous_range,
    patients_per_category,
)
from synehrgy_assets.core.tokens.bins import NumericBins, VariableSpec, _fit_bins, clipped_quantiles
from synehrgy_assets.core.tokens.columns import (
    _distinct_text,
    _float_column,
    _int_column,
    _lookup,
    _one_sorted_run_per_visit,
    _prepare_visits,
    _rows_and_gaps,
)
from synehrgy_assets.core.tokens.stay_end import fit_stay_end
from synehrgy_assets.core.tokens.vocab_config import (
    AGE_CAP,
    AGE_EDGES,
    CODE_TYPES,
    COVARIATES,
    DT_EDGES,
    GAP_VISIT_EDGES,
    STAY_OFFSETS,
    UNK,
    VocabularyConfig,
    _check_variables_table,
    _parse_edges,
    load_variables,
)


def fit_parts(train_cohort: StagedCohort, config: VocabularyConfig,
              variables: pd.DataFrame | None = None) -> dict:
    """The `TokenVocabulary` arguments fitted on the train split: codes, categories, bin edges
    and within-bin quantiles. The steps run in a fixed order, so a bad column is reported the
    same way whatever else is wrong."""
    train_cohort.validate_columns("train_cohort")
    table = load_variables() if variables is None else _check_variables_table(variables)
    k_levels = np.linspace(0.0, 1.0, config.within_bin_quantiles)
    stats: dict = {}
    visits = train_cohort.visits
    vis = _prepare_visits(visits)
    stats["n_patients"] = int(len(vis.patient_subject))
    stats["n_visits"] = int(vis.n)
    subject = _int_column(visits, "visits", "subject_id")

    covariates = _fit_covariates(visits, subject, config, stats)
    scales = _fit_visit_scales(visits, vis, subject, config)
    los = _float_column(visits, "visits", "los_hours", allow_null=True)
    known = ~np.isnan(los)
    los_guard = k_anonymous_range(los[known], subject[known], config.min_patients)
    los_quantiles = clipped_quantiles(los[known], subject[known], k_levels, config, los_guard)
    stay_offsets = _fit_stay_offsets(visits, k_levels, config)

    ph = train_cohort.visit_phenotypes
    _distinct_text(ph["phenotype"], "visit_phenotypes", "phenotype")  # checks the column
    phenotypes, rare = _frequent(ph["phenotype"], _int_column(ph, "visit_phenotypes", "subject_id"), config)
    stats["n_rare_phenotypes_dropped"] = rare
    codes = _fit_codes(train_cohort.visit_codes, config, stats)

    meas = train_cohort.measurements
    var = _lookup(meas["variable"], table["variable"], "measurements", "variable")
    _raise_unknown_variables(meas, var)
    value = _float_column(meas, "measurements", "value", allow_null=True)
    hours = _float_column(meas, "measurements", "hours", allow_null=False)
    meas_subject = _int_column(meas, "measurements", "subject_id")
    stay_offsets.update(fit_stay_end(visits, meas, lambda v, p: clipped_quantiles(
        v, p, k_levels, config, k_anonymous_range(v, p, config.min_patients))))
    var_specs, present = _fit_measurement_variables(meas, var, value, meas_subject, table, config, stats)
    meas_visit = vis.position_of(_int_column(meas, "measurements", "icustay_id"), "measurements")
    scales["DT"] = _fit_row_gaps(meas_visit[present], hours[present], vis, config, stats)
    variable_databases = _fit_variable_databases(
        meas_visit[present], var[present], list(table["variable"]), visits, vis,
        covariates["icu_database"], config.min_patients)
    relations = _variables.load_relations(variables=list(table["variable"]))
    return dict(config=config, variables=var_specs, scales=scales, covariates=covariates,
                phenotypes=phenotypes, codes=codes, los_quantiles=los_quantiles, fit_stats=stats,
                stay_offsets=stay_offsets, variable_databases=variable_databases, relations=relations)


def _fit_covariates(visits: pd.DataFrame, subject: np.ndarray, config: VocabularyConfig,
                    stats: dict) -> dict[str, list[str]]:
    covariates = {}
    stats["n_rare_categories_dropped"] = 0
    for col, _ in COVARIATES:
        kept, rare = _frequent(_visit_column(visits, col), subject, config)
        covariates[col] = [c for c in kept if c != UNK]
        stats["n_rare_categories_dropped"] += rare
    return covariates


def _fit_visit_scales(visits: pd.DataFrame, vis, subject: np.ndarray,
                      config: VocabularyConfig) -> dict[str, NumericBins]:
    """The AGE and GAP_VISIT scales: fixed public edges, within-bin quantiles from train."""
    age = _float_column(visits, "visits", "age_years", allow_null=False)
    capped = visits["age_is_capped"].to_numpy(dtype=bool, na_value=False) | (age >= AGE_CAP)
    age_values = np.clip(age[~capped], AGE_EDGES[0], AGE_CAP)
    below = age_values < AGE_CAP
    scales = {"AGE": _fit_bins(age_values[below], subject[~capped][below], AGE_EDGES, config,
                               merge=False, top_bucket=AGE_CAP)}
    gap = _float_column(visits, "visits", "hours_since_previous_visit", allow_null=True)
    gap = gap[vis.frame_order][~vis.is_first]
    if np.isnan(gap).any():
        raise ValueError("table 'visits': column 'hours_since_previous_visit' is NULL for "
                         f"{int(np.isnan(gap).sum())} visit(s) that are not a patient's first")
    gap = np.clip(gap, GAP_VISIT_EDGES[0], GAP_VISIT_EDGES[-1])
    scales["GAP_VISIT"] = _fit_bins(gap, vis.subject[~vis.is_first], GAP_VISIT_EDGES, config, merge=False)
    return scales


def _fit_codes(codes_frame: pd.DataFrame, config: VocabularyConfig, stats: dict) -> dict[str, list[str]]:
    """Diagnosis and procedure codes seen `min_code_count` times in `min_patients` patients."""
    code_type = codes_frame["code_type"]
    _check_code_types(code_type)
    codes = {}
    code_subject = _int_column(codes_frame, "visit_codes", "subject_id")
    for name, _, _ in CODE_TYPES:
        is_type = (code_type == name).to_numpy(dtype=bool, na_value=False)
        sub = codes_frame.loc[is_type, "icd9_code"]
        counts = sub.dropna().astype(str).value_counts()
        people = patients_per_category(sub.to_numpy(dtype=object), code_subject[is_type])
        keep = counts[(counts >= config.min_code_count)
                      & (people.reindex(counts.index, fill_value=0) >= config.min_patients)]
        codes[name] = sorted(c for c in keep.index if c != UNK)
        total = int(counts.sum())
        stats[f"n_{name}_occurrences"] = total
        stats[f"{name}_coverage"] = float(keep.sum() / total) if total else 1.0
        stats[f"n_{name}_codes_seen"] = int(len(counts))
    return codes


def _fit_measurement_variables(meas: pd.DataFrame, var: np.ndarray, value: np.ndarray, meas_subject: np.ndarray,
                               table: pd.DataFrame, config: VocabularyConfig,
                               stats: dict) -> tuple[list[VariableSpec], np.ndarray]:
    """One spec per variable (bins of a continuous one, categories of a categorical one), and
    which measurement rows hold a value (the rows the gaps between rows are fitted on)."""
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
            v, who = v[ok], meas_subject[rows[ok]]
            present[rows[ok]] = True
            n_clipped += int(np.sum((v < low) | (v > high)))
            v = np.clip(v, low, high)
            inner = _candidate_inner_edges(v, who, low, high, config, row.clinical_edges, row.variable)
            bins = _fit_bins(v, who, [low, *inner, high], config, merge=True)
            var_specs.append(VariableSpec(row.variable, "continuous", low, high, bins))
            n_values += len(v)
        else:
            spec, ok = _fit_categorical(row, text.iloc[rows], value[rows], meas_subject[rows], config, stats)
            present[rows[ok]] = True
            var_specs.append(spec)
            n_values += int(ok.sum())
    stats["n_measurement_values"] = n_values
    stats["measurement_values_clipped"] = float(n_clipped / n_values) if n_values else 0.0
    return var_specs, present


def _fit_categorical(row, text: pd.Series, value: np.ndarray, who: np.ndarray, config: VocabularyConfig,
                     stats: dict) -> tuple[VariableSpec, np.ndarray]:
    """A categorical variable's frequent categories with their scores, and which rows hold one."""
    cat_text = _category_text(text, value)
    ok = cat_text.notna().to_numpy()
    frame = pd.DataFrame({"c": cat_text[ok].astype(str).to_numpy(), "v": value[ok], "p": who[ok]})
    scored = frame[frame["v"].notna()]
    cats, rare = _frequent(frame["c"], frame["p"].to_numpy(), config)
    stats["n_rare_categories_dropped"] += rare
    vals = [_category_score(frame[frame["c"] == cat], scored, config) for cat in cats]
    low, high = float(row.valid_low), float(row.valid_high)
    return VariableSpec(row.variable, "categorical", low, high, None, cats, vals), ok


def _fit_row_gaps(gv: np.ndarray, h: np.ndarray, vis, config: VocabularyConfig, stats: dict) -> NumericBins:
    """The DT scale: hours between measurement rows (the rows holding a value: visit `gv`,
    hours `h`), in stay/time order."""
    if not _one_sorted_run_per_visit(gv, h):
        o = np.lexsort((h, gv))
        gv, h = gv[o], h[o]
    _, row_gv, dt = _rows_and_gaps(gv, h)
    dt = np.clip(dt, DT_EDGES[0], DT_EDGES[-1])
    stats["n_measurement_rows"] = int(len(dt))
    return _fit_bins(dt, vis.subject[row_gv], DT_EDGES, config, merge=False)


def _visit_column(visits: pd.DataFrame, column: str) -> pd.Series:
    """A visits column, or all NULL when the cohort lacks an optional column (cohort.py)."""
    if column in visits.columns and not visits[column].isna().all():
        return visits[column]
    return pd.Series([None] * len(visits), index=visits.index, dtype=object)


def _hours_between(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    delta = pd.to_datetime(later, errors="coerce") - pd.to_datetime(earlier, errors="coerce")
    return (delta.dt.total_seconds() / 3600.0).to_numpy(dtype=float, na_value=np.nan)


def _fit_stay_offsets(visits: pd.DataFrame, levels: np.ndarray, config: "VocabularyConfig") -> dict:
    """Quantiles of admission -> ICU in and ICU out -> discharge (by outcome) over train visits,
    each over at least `min_patients` patients (like the LOS quantiles).

    Negative offsets (an ICU stay charted before its admission, a death after ICU out) count as 0.
    """
    if not {"admittime", "dischtime"} <= set(visits.columns):
        return {name: None for name in STAY_OFFSETS}
    before = _hours_between(visits["intime"], visits["admittime"])
    after = _hours_between(visits["dischtime"], visits["outtime"])
    died = pd.to_numeric(visits["mortality_inhospital"], errors="coerce").to_numpy(dtype=float, na_value=np.nan) == 1
    subject = _int_column(visits, "visits", "subject_id")

    def q(values, keep):
        keep = keep & ~np.isnan(values)
        values, patients = np.maximum(values[keep], 0.0), subject[keep]
        guard = k_anonymous_range(values, patients, config.min_patients)
        return clipped_quantiles(values, patients, levels, config, guard)

    every = np.ones(len(visits), dtype=bool)
    return {"admit_to_icu_hours": q(before, every), "icu_to_discharge_hours_survived": q(after, ~died),
            "icu_to_discharge_hours_died": q(after, died)}


def _fit_variable_databases(meas_visit: np.ndarray, var: np.ndarray, names: list[str], visits: pd.DataFrame,
                            vis, databases: list[str], min_patients: int) -> dict[str, list[str]]:
    """variable -> the ICU databases whose stays chart it for at least `min_patients` patients."""
    if not databases:
        return {}
    db_sorted = _visit_column(visits, "icu_database").to_numpy(dtype=object)[vis.frame_order]
    code = np.full(len(db_sorted), -1, dtype=np.int64)
    for i, name in enumerate(databases):
        code[db_sorted == name] = i
    rows = code[meas_visit] >= 0
    frame = pd.DataFrame({"var": var[rows], "db": code[meas_visit][rows],
                          "patient": vis.patient[meas_visit][rows]}).drop_duplicates()
    counts = frame.groupby(["var", "db"]).size()
    out: dict[str, list[str]] = {name: [] for name in names}
    for (j, d), n in counts.items():
        if n >= min_patients:
            out[names[int(j)]].append(databases[int(d)])
    return out


def _frequent(series: pd.Series, patients, config: VocabularyConfig) -> tuple[list[str], int]:
    """Distinct non-null values seen at least `min_code_count` times and held by at least
    `min_patients` patients (sorted), and how many rarer ones were left out."""
    series = pd.Series(series).reset_index(drop=True)
    rows = series.dropna().astype(str).value_counts()
    people = patients_per_category(series.to_numpy(dtype=object), patients).reindex(rows.index, fill_value=0)
    ok = (rows >= config.min_code_count) & (people >= config.min_patients)
    return sorted(str(c) for c in rows.index[ok]), int((~ok).sum())


def _candidate_inner_edges(values, patients, low, high, config, clinical_text, name) -> list[float]:
    if config.binning == "quantile":
        levels = np.linspace(0.0, 1.0, config.n_bins + 1)[1:-1]
        levels = np.unique(np.r_[levels, [q for q in config.tail_levels if 0 < q < 1]])
        # Edges are stored: k-anonymous quantiles of the whole variable (none when too few patients).
        inner = k_anonymous_quantiles(values, patients, levels, k=config.min_patients,
                                      window=max(config.tail_count, 1)) if len(values) else None
        inner = np.array([]) if inner is None else np.asarray(inner)
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


def _category_score(part: pd.DataFrame, scored: pd.DataFrame, config: VocabularyConfig) -> float | None:
    """The score decoded for a category: its one value when all its rows share it (the category
    is held by >= min_patients patients), else a k-anonymous median guarded over the variable."""
    values = part["v"].dropna().to_numpy(dtype=np.float64)
    if len(values) == 0:
        return None
    if np.all(values == values[0]):
        return float(values[0])
    guard = k_anonymous_range(scored["v"].to_numpy(np.float64), scored["p"].to_numpy(), config.min_patients)
    median = k_anonymous_quantiles(values, part.loc[part["v"].notna(), "p"].to_numpy(), [0.5],
                                   k=config.min_patients, window=max(config.tail_count, 1), guard=guard)
    return None if median is None else float(median[0])


def _category_text(text: pd.Series, value: np.ndarray) -> pd.Series:
    """The category of categorical rows: `value_text`, or the score formatted when text is NULL."""
    text = text.reset_index(drop=True).astype(object)
    fill = text.isna().to_numpy() & ~np.isnan(value)
    if fill.any():
        text = text.copy()
        text[fill] = np.char.mod("%g", value[fill]).astype(object)
    return text
