"""Cohort preparation and visit features: `prepare_cohort` validates the marts contract and parses a
cohort once into a `PreparedCohort` (arrays every metric accepts in place of the frames),
`mortality_labels`, `los_labels` and `phenotype_labels` are the utility targets, and `FeatureSpace` (fitted on real train only:
categories, top-K codes, imputation medians, standardization) maps any cohort to one row of visit
features (`visit_features`), from the raw per-visit covariates, code indicators and windowed
measurement summaries (mean/min/max/last and missing indicators).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.metrics.common import (
    COVARIATE_COLUMNS,
    DEFAULT_TOP_K_CODES,
    DEFAULT_WINDOW_HOURS,
    OTHER_CATEGORY,
    SUMMARY_STATS,
    MetricInputError,
    _code_keys,
    _numeric,
    _positions,
    _require_columns,
    _visit_index,
    resolve_variables,
)


# --------------------------------------------------------------------------------------------
# Prepared cohorts
# --------------------------------------------------------------------------------------------


def mortality_labels(cohort: StagedCohort, origin: str = "cohort") -> np.ndarray:
    """In-hospital mortality per visit (0/1), in `visits` row order. Never part of the features."""
    y = _numeric(cohort.visits, "mortality_inhospital", "visits", origin, allow_null=False)
    if not np.isin(y, (0.0, 1.0)).all():
        raise MetricInputError(f"{origin}: table 'visits' column 'mortality_inhospital' has values other than 0/1")
    return y.astype(np.int64)


def los_labels(cohort: StagedCohort, days: float, min_hours: float, origin: str = "cohort") -> tuple[np.ndarray, np.ndarray]:
    """Length of stay over `days` days per visit (0/1) and the visits eligible for the task (a stay
    of at least `min_hours`: the feature window plus the gap before the prediction counts), in
    `visits` row order."""
    los = _numeric(cohort.visits, "los_hours", "visits", origin, allow_null=False)
    if (los < 0).any():
        raise MetricInputError(f"{origin}: table 'visits' column 'los_hours' has {int((los < 0).sum())} "
                               "negative value(s)")
    return (los > 24.0 * days).astype(np.int64), los >= min_hours


def phenotype_labels(prep: "PreparedCohort", names: Sequence[str]) -> np.ndarray:
    """Visit x phenotype 0/1 matrix ([n_visits, len(names)], `visits` row order) from
    `visit_phenotypes`; a phenotype the cohort never carries is an all-zero column."""
    out = np.zeros((prep.n_visits, len(names)), dtype=np.int64)
    col = pd.Index(list(names)).get_indexer(prep.ph_name)
    out[prep.ph_pos[col >= 0], col[col >= 0]] = 1
    return out


@dataclass
class PreparedCohort:
    """A validated cohort parsed once into arrays; every metric accepts it in place of a cohort.

    Measurement arrays are sorted by (visit position, hours); code pairs are distinct.
    """

    origin: str
    cohort: StagedCohort
    index: pd.Index
    code_pos: np.ndarray
    code_key: np.ndarray
    is_diagnosis: np.ndarray
    m_pos: np.ndarray
    m_hours: np.ndarray
    m_value: np.ndarray
    m_var: np.ndarray
    m_var_names: np.ndarray
    ph_pos: np.ndarray
    ph_name: np.ndarray
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_visits(self) -> int:
        return len(self.index)

    def variable_positions(self, names: list[str]) -> np.ndarray:
        """Position of each measurement row's variable in `names` (-1 when not listed)."""
        lookup = np.append(pd.Index(names).get_indexer(self.m_var_names), -1)
        return lookup[self.m_var]  # m_var == -1 (null name) picks the appended -1


def prepare_cohort(cohort: StagedCohort | PreparedCohort, origin: str = "cohort") -> PreparedCohort:
    """Validate the marts contract and parse the frames once (raises `MetricInputError`)."""
    if isinstance(cohort, PreparedCohort):
        return cohort
    _require_columns(cohort, origin)
    index = _visit_index(cohort, origin)
    codes = cohort.visit_codes
    pairs = pd.DataFrame({"pos": _positions(index, codes, "visit_codes", origin), "key": _code_keys(codes, origin)})
    pairs = pairs.drop_duplicates()
    m = cohort.measurements
    pos = _positions(index, m, "measurements", origin)
    hours = _numeric(m, "hours", "measurements", origin, allow_null=False)
    value = _numeric(m, "value", "measurements", origin, allow_null=True)
    var, var_names = pd.factorize(m["variable"], use_na_sentinel=True)
    order = _visit_time_order(pos, hours)
    ph = cohort.visit_phenotypes
    ph_frame = pd.DataFrame({"pos": _positions(index, ph, "visit_phenotypes", origin),
                             "name": ph["phenotype"].astype(str).to_numpy(dtype=object)}).drop_duplicates()
    return PreparedCohort(
        origin=origin, cohort=cohort, index=index,
        code_pos=pairs["pos"].to_numpy(), code_key=pairs["key"].to_numpy(dtype=object),
        is_diagnosis=pairs["key"].str.startswith("D:").to_numpy(dtype=bool),
        m_pos=pos[order], m_hours=hours[order], m_value=value[order], m_var=var[order],
        m_var_names=np.asarray(var_names.astype(str), dtype=object),
        ph_pos=ph_frame["pos"].to_numpy(), ph_name=ph_frame["name"].to_numpy(dtype=object),
    )


def _visit_time_order(pos: np.ndarray, hours: np.ndarray) -> slice | np.ndarray:
    """Row order grouping each visit's rows together in time order (no sort when already so,
    as the marts deliver them: ordered by patient, stay, hours)."""
    if len(pos) < 2:
        return slice(None)
    change = pos[1:] != pos[:-1]
    runs_are_visits = int(change.sum()) + 1 == np.count_nonzero(np.bincount(pos))
    if runs_are_visits and bool(np.all(change | (hours[1:] >= hours[:-1]))):
        return slice(None)
    return np.lexsort((hours, pos))


def _distinct_times(pos: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Mask of the first row of each distinct (visit, time) in (visit, hours)-sorted arrays."""
    if len(pos) == 0:
        return np.zeros(0, bool)
    return np.r_[True, (pos[1:] != pos[:-1]) | (hours[1:] != hours[:-1])]


def _prepare_three(real_train: CohortLike, real_test: CohortLike, synthetic: CohortLike) -> dict[str, PreparedCohort]:
    return {n: prepare_cohort(c, n)
            for n, c in (("real_train", real_train), ("real_test", real_test), ("synthetic", synthetic))}


# --------------------------------------------------------------------------------------------
# Visit features
# --------------------------------------------------------------------------------------------


def _window_summaries(
    prep: PreparedCohort, names: list[str], window_hours: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (visit, variable) mean/min/max/last over `hours < window_hours`, NaN where unobserved.

    Returns (summaries [n_visits, n_vars, 4], rows per visit, distinct times per visit).
    """
    n_visits, n_vars = prep.n_visits, len(names)
    in_window = prep.m_hours < window_hours
    pos, hours, values = prep.m_pos[in_window], prep.m_hours[in_window], prep.m_value[in_window]
    var = prep.variable_positions(names)[in_window]
    n_rows = np.bincount(pos, minlength=n_visits).astype(float)
    n_times = np.bincount(pos[_distinct_times(pos, hours)], minlength=n_visits).astype(float)

    n_cells = n_visits * n_vars
    out = np.full((n_cells, len(SUMMARY_STATS)), np.nan)
    keep = (var >= 0) & ~np.isnan(values)
    if keep.any():
        # Unbuffered scatter reductions, O(rows) with no sort; rows are time-ordered within a
        # visit, so a cell's largest row number is its "last" value.
        cell = pos[keep].astype(np.int64) * n_vars + var[keep]
        vals = values[keep]
        count = np.bincount(cell, minlength=n_cells)
        seen = count > 0
        lo, hi = np.full(n_cells, np.inf), np.full(n_cells, -np.inf)
        np.minimum.at(lo, cell, vals)
        np.maximum.at(hi, cell, vals)
        last_row = np.full(n_cells, -1, dtype=np.int64)
        np.maximum.at(last_row, cell, np.arange(len(cell)))
        out[seen, 0] = np.bincount(cell, weights=vals, minlength=n_cells)[seen] / count[seen]
        out[seen, 1], out[seen, 2] = lo[seen], hi[seen]
        out[seen, 3] = vals[last_row[seen]]
    return out.reshape(n_visits, n_vars, len(SUMMARY_STATS)), n_rows, n_times


def _raw_visit_features(
    prep: PreparedCohort,
    names: list[str],
    categories: dict[str, list[str]],
    codes: list[str],
    window_hours: float,
) -> pd.DataFrame:
    """Visit features before imputation (NaN = variable unobserved in the window), cached per cohort."""
    key = ("raw_features", tuple(names), tuple((k, tuple(v)) for k, v in sorted(categories.items())),
           tuple(codes), float(window_hours))
    if key not in prep.cache:
        prep.cache[key] = _compute_raw_visit_features(prep, names, categories, codes, window_hours)
    return prep.cache[key]


def _compute_raw_visit_features(
    prep: PreparedCohort,
    names: list[str],
    categories: dict[str, list[str]],
    codes: list[str],
    window_hours: float,
) -> pd.DataFrame:
    visits, origin, n = prep.cohort.visits, prep.origin, prep.n_visits
    cols: dict[str, np.ndarray] = {}

    cols["age_years"] = _numeric(visits, "age_years", "visits", origin, allow_null=False)
    cols["age_is_capped"] = visits["age_is_capped"].fillna(False).astype(bool).to_numpy(dtype=float)
    gender = visits["gender"].astype("object")
    if not gender.isin(["M", "F"]).all():
        bad = sorted(set(gender[~gender.isin(["M", "F"])].astype(str)))
        raise MetricInputError(f"{origin}: table 'visits' column 'gender' has value(s) {bad}; expected 'M'/'F'")
    cols["gender_male"] = (gender == "M").to_numpy(dtype=float)
    cols["visit_index"] = _numeric(visits, "visit_index", "visits", origin, allow_null=False)
    cols["los_hours"] = _numeric(visits, "los_hours", "visits", origin, allow_null=False)
    gap = _numeric(visits, "hours_since_previous_visit", "visits", origin, allow_null=True)
    cols["hours_since_previous_visit"] = np.nan_to_num(gap, nan=0.0)
    cols["first_visit"] = np.isnan(gap).astype(float)

    for column in COVARIATE_COLUMNS:
        known = categories[column]
        found = pd.Index(known).get_indexer(visits[column].astype("object").to_numpy())
        for j, category in enumerate(known):
            cols[f"{column}={category}"] = (found == j).astype(float)
        # Unseen (or null) categories get their own column so invented values stay visible.
        cols[f"{column}={OTHER_CATEGORY}"] = (found < 0).astype(float)

    is_diag = prep.is_diagnosis
    cols["n_diagnoses"] = np.bincount(prep.code_pos[is_diag], minlength=n).astype(float)
    cols["n_procedures"] = np.bincount(prep.code_pos[~is_diag], minlength=n).astype(float)
    col = pd.Index(codes).get_indexer(prep.code_key)
    top = np.zeros((n, len(codes)))
    top[prep.code_pos[col >= 0], col[col >= 0]] = 1.0
    for j, key in enumerate(codes):
        cols[f"code:{key}"] = top[:, j]

    summaries, n_rows, n_times = _window_summaries(prep, names, window_hours)
    for v, name in enumerate(names):
        for s, stat in enumerate(SUMMARY_STATS):
            cols[f"m:{name}:{stat}"] = summaries[:, v, s]
    for v, name in enumerate(names):
        cols[f"m:{name}:missing"] = np.isnan(summaries[:, v, 0]).astype(float)
    cols["n_measurement_rows"] = n_rows
    cols["n_measurement_times"] = n_times
    return pd.DataFrame(cols, index=pd.Index(prep.index, name="icustay_id"))


CohortLike = StagedCohort | PreparedCohort


@dataclass
class FeatureSpace:
    """Visit feature space fitted on real train; map any cohort with `transform`."""

    variables: pd.DataFrame
    categories: dict[str, list[str]]
    codes: list[str]
    window_hours: float
    impute_values: pd.Series
    center: pd.Series
    scale: pd.Series
    columns: list[str] = field(default_factory=list)

    @classmethod
    def fit(
        cls,
        real_train: CohortLike,
        variables: pd.DataFrame | Sequence[str] | None = None,
        top_k_codes: int = DEFAULT_TOP_K_CODES,
        window_hours: float = DEFAULT_WINDOW_HOURS,
    ) -> FeatureSpace:
        prep = prepare_cohort(real_train, "real_train")
        table = resolve_variables(variables)
        if prep.n_visits == 0:
            raise MetricInputError(f"{prep.origin}: table 'visits' is empty; cannot fit a feature space")
        visits = prep.cohort.visits
        categories = {c: sorted(set(visits[c].dropna().astype(str))) for c in COVARIATE_COLUMNS}
        counts = pd.Series(prep.code_key, dtype=object).value_counts()
        # Ties broken by the code string so the selection is deterministic.
        ranked = pd.DataFrame({"key": counts.index.astype(str), "n": counts.to_numpy()})
        ranked = ranked.sort_values(["n", "key"], ascending=[False, True])
        codes = ranked["key"].head(top_k_codes).tolist()
        names = table["variable"].tolist()
        raw = _raw_visit_features(prep, names, categories, codes, window_hours)
        # Train medians of observed values; a variable never observed in train imputes 0 (its
        # missing indicator carries the information).
        impute = raw.median(skipna=True).fillna(0.0)
        filled = raw.fillna(impute)
        scale = filled.std(ddof=0)
        scale = scale.where(scale > 1e-12, 1.0)  # constant in train: keep raw offsets visible
        return cls(table, categories, codes, float(window_hours), impute, filled.mean(), scale, list(raw.columns))

    @property
    def variable_names(self) -> list[str]:
        return self.variables["variable"].tolist()

    def transform(self, cohort: CohortLike, standardize: bool = False, origin: str = "cohort") -> pd.DataFrame:
        """One row per visit (index `icustay_id`, `visits` order), imputed with train medians."""
        prep = prepare_cohort(cohort, origin)
        raw = _raw_visit_features(prep, self.variable_names, self.categories, self.codes, self.window_hours)
        features = raw.fillna(self.impute_values)
        return self.standardize(features) if standardize else features

    def standardize(self, features: pd.DataFrame) -> pd.DataFrame:
        """z-score with REAL TRAIN mean/std (never the frame's own statistics)."""
        if list(features.columns) != self.columns:
            raise MetricInputError("features do not have this FeatureSpace's columns; transform them with it")
        return (features - self.center) / self.scale


def visit_features(
    cohort: CohortLike,
    variables: pd.DataFrame | Sequence[str] | None = None,
    space: FeatureSpace | None = None,
    standardize: bool = False,
    origin: str = "cohort",
) -> pd.DataFrame:
    """Visit features of `cohort` in `space` (fitted on `cohort` itself when no space is given).

    Pass `FeatureSpace.fit(real_train)` to compare cohorts: only then do columns, imputation and
    standardization agree across real and synthetic data.
    """
    prep = prepare_cohort(cohort, origin)
    if space is None:
        space = FeatureSpace.fit(prep, variables)
    return space.transform(prep, standardize=standardize)
