"""Evaluation of a synthetic cohort against real data: fidelity, utility and privacy.

Every function takes `StagedCohort` objects (marts-shaped frames, see docs/architecture.md):
the real training cohort, the real held-out test cohort and the synthetic cohort, or the same
cohorts parsed once with `prepare_cohort` (what `evaluate` does; treat the frames as read-only
afterwards). Formulas, directions and the reference flaws each metric fixes are in
docs/evaluation.md.

Conventions:
* Features are fitted on REAL TRAIN only (`FeatureSpace.fit`): categories, top-K codes,
  imputation medians and standardization statistics. Real test and synthetic data are mapped
  through the same space, so a shift in location or scale stays visible.
* A metric that cannot be computed is an explicit `MetricError` value in the result dict (or a
  non-empty `error` cell in a table); a contract violation in the input raises
  `MetricInputError` naming the cohort, table and column. No metric returns a silent NaN.
* Every random choice takes `seed`. Tables in `EvaluationReport.tables` hold aggregates only,
  with small real cells (< `min_cell_count`) suppressed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics.pairwise import euclidean_distances
from threadpoolctl import threadpool_limits

from synehrgy_assets.core.cohort import SEEDS_DIR, StagedCohort

VARIABLES_CSV = SEEDS_DIR / "variables.csv"
VARIABLE_COLUMNS = ["variable", "label", "kind", "unit", "valid_low", "valid_high", "clinical_edges"]
COVARIATE_COLUMNS = ("ethnicity_group", "admission_type", "first_careunit", "insurance")
OTHER_CATEGORY = "__other__"
SUMMARY_STATS = ("mean", "min", "max", "last")
CODE_PREFIX = {"diagnosis": "D:", "procedure": "P:"}

DEFAULT_WINDOW_HOURS = 48.0
DEFAULT_TOP_K_CODES = 200
DEFAULT_MIN_CELL_COUNT = 10
DEFAULT_MAX_VALUES = 200_000
DEFAULT_MAX_RECORDS = 5_000


class MetricInputError(ValueError):
    """The input breaks the marts contract or a metric's precondition."""


@dataclass(frozen=True)
class MetricError:
    """An explicit 'could not compute' entry standing in for a metric value."""

    metric: str
    message: str

    def __str__(self) -> str:
        return f"{self.metric}: {self.message}"


MetricValue = float | MetricError


# --------------------------------------------------------------------------------------------
# Variables and small helpers
# --------------------------------------------------------------------------------------------


def load_variables(path: str | Path | None = None) -> pd.DataFrame:
    """The variables table (dbt seed) with `clinical_edges` parsed to lists of floats."""
    path = Path(path) if path is not None else VARIABLES_CSV
    table = pd.read_csv(path, dtype={"clinical_edges": "string"})
    return _validate_variables(table, str(path))


def _validate_variables(table: pd.DataFrame, origin: str) -> pd.DataFrame:
    missing = [c for c in VARIABLE_COLUMNS if c not in table.columns]
    if missing:
        raise MetricInputError(f"{origin}: variables table lacks column(s) {missing}; expected {VARIABLE_COLUMNS}")
    table = table[VARIABLE_COLUMNS].copy()
    if table["variable"].duplicated().any():
        dup = sorted(table.loc[table["variable"].duplicated(), "variable"].astype(str))
        raise MetricInputError(f"{origin}: variables table has duplicated variable name(s) {dup}")
    bad_kind = sorted(set(table["kind"].astype(str)) - {"continuous", "categorical"})
    if bad_kind:
        raise MetricInputError(
            f"{origin}: variables table column 'kind' has value(s) {bad_kind}; expected 'continuous' or 'categorical'"
        )
    table["variable"] = table["variable"].astype(str)
    table["unit"] = table["unit"].fillna("").astype(str)
    table["label"] = table["label"].fillna(table["variable"]).astype(str)
    table["clinical_edges"] = [_parse_edges(v) for v in table["clinical_edges"]]
    return table.reset_index(drop=True)


def _parse_edges(value) -> list[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return sorted(float(v) for v in value)
    return sorted(float(v) for v in str(value).split())


def resolve_variables(variables: pd.DataFrame | Sequence[str] | None) -> pd.DataFrame:
    """None → the seed table; a list of names → those rows of the seed table; a frame → validated."""
    if variables is None:
        return load_variables()
    if isinstance(variables, pd.DataFrame):
        return _validate_variables(variables, "variables argument")
    table = load_variables()
    names = [str(v) for v in variables]
    unknown = sorted(set(names) - set(table["variable"]))
    if unknown:
        raise MetricInputError(f"unknown variable name(s) {unknown}; known names are in {VARIABLES_CSV}")
    return table.set_index("variable").loc[names].reset_index()


def _require_columns(cohort: StagedCohort, origin: str) -> None:
    try:
        cohort.validate_columns(origin)
    except ValueError as exc:
        raise MetricInputError(str(exc)) from exc


def _visit_index(cohort: StagedCohort, origin: str) -> pd.Index:
    ids = cohort.visits["icustay_id"]
    if ids.isna().any():
        raise MetricInputError(
            f"{origin}: table 'visits' column 'icustay_id' has {int(ids.isna().sum())} null value(s)"
        )
    if ids.duplicated().any():
        raise MetricInputError(
            f"{origin}: table 'visits' column 'icustay_id' has {int(ids.duplicated().sum())} duplicated value(s); "
            "expected one row per ICU stay"
        )
    return pd.Index(ids.to_numpy())


def _positions(index: pd.Index, frame: pd.DataFrame, table: str, origin: str) -> np.ndarray:
    """Row position in `visits` of each row of `frame`; orphan rows are a contract violation."""
    pos = index.get_indexer(frame["icustay_id"].to_numpy())
    orphans = int((pos < 0).sum())
    if orphans:
        raise MetricInputError(
            f"{origin}: table '{table}' has {orphans} row(s) whose icustay_id is not in table 'visits'"
        )
    return pos


def _numeric(frame: pd.DataFrame, column: str, table: str, origin: str, allow_null: bool) -> np.ndarray:
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{origin}: table '{table}' column '{column}' is not numeric ({exc})") from exc
    if not allow_null and np.isnan(values).any():
        raise MetricInputError(
            f"{origin}: table '{table}' column '{column}' has {int(np.isnan(values).sum())} null value(s)"
        )
    return values


def _code_keys(codes: pd.DataFrame, origin: str) -> np.ndarray:
    """`D:<icd9>` / `P:<icd9>`: diagnosis and procedure ICD-9 codes are separate namespaces."""
    prefix = codes["code_type"].astype("object").map(CODE_PREFIX)
    if prefix.isna().any():
        bad = sorted(set(codes.loc[prefix.isna(), "code_type"].astype(str)))
        raise MetricInputError(
            f"{origin}: table 'visit_codes' column 'code_type' has value(s) {bad}; expected 'diagnosis' or 'procedure'"
        )
    if codes["icd9_code"].isna().any():
        raise MetricInputError(f"{origin}: table 'visit_codes' column 'icd9_code' has null value(s)")
    return (prefix.astype(str) + codes["icd9_code"].astype(str)).to_numpy(dtype=object)


def mortality_labels(cohort: StagedCohort, origin: str = "cohort") -> np.ndarray:
    """In-hospital mortality per visit (0/1), in `visits` row order. Never part of the features."""
    y = _numeric(cohort.visits, "mortality_inhospital", "visits", origin, allow_null=False)
    if not np.isin(y, (0.0, 1.0)).all():
        raise MetricInputError(f"{origin}: table 'visits' column 'mortality_inhospital' has values other than 0/1")
    return y.astype(np.int64)


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


def _binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    # float32 holds code counts exactly and halves the memory traffic of the set distances.
    matrix = sp.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape).tocsr()
    matrix.data[:] = 1.0  # duplicates were summed; presence is what counts
    return matrix


def _distinct_times(pos: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Mask of the first row of each distinct (visit, time) in (visit, hours)-sorted arrays."""
    if len(pos) == 0:
        return np.zeros(0, bool)
    return np.r_[True, (pos[1:] != pos[:-1]) | (hours[1:] != hours[:-1])]


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


# --------------------------------------------------------------------------------------------
# Fidelity
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
    """Per code over the UNION of codes: visit counts and per-visit prevalence (absent = 0)."""
    real, synthetic = _nonempty(prepare_cohort(real, "real")), _nonempty(prepare_cohort(synthetic, "synthetic"))
    counts = [pd.Series(p.code_key, dtype=object).value_counts().rename(n)
              for p, n in ((real, "n_real"), (synthetic, "n_synthetic"))]
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


def _structure_samples(prep: PreparedCohort) -> dict[str, np.ndarray]:
    n, visits, origin = prep.n_visits, prep.cohort.visits, prep.origin
    is_diag = prep.is_diagnosis
    distinct = _distinct_times(prep.m_pos, prep.m_hours)
    same_visit = prep.m_pos[1:] == prep.m_pos[:-1]
    gaps = np.diff(prep.m_hours)[same_visit & distinct[1:]] if len(distinct) > 1 else np.empty(0)
    prev = _numeric(visits, "hours_since_previous_visit", "visits", origin, allow_null=True)
    return {
        "visits_per_patient": visits.groupby("subject_id").size().to_numpy(dtype=float),
        "codes_per_visit": np.bincount(prep.code_pos, minlength=n).astype(float),
        "diagnoses_per_visit": np.bincount(prep.code_pos[is_diag], minlength=n).astype(float),
        "procedures_per_visit": np.bincount(prep.code_pos[~is_diag], minlength=n).astype(float),
        "phenotypes_per_visit": np.bincount(prep.ph_pos, minlength=n).astype(float),
        "measurement_rows_per_visit": np.bincount(prep.m_pos, minlength=n).astype(float),
        "measurement_times_per_visit": np.bincount(prep.m_pos[distinct], minlength=n).astype(float),
        "los_hours": _numeric(visits, "los_hours", "visits", origin, allow_null=False),
        "hours_between_visits": prev[~np.isnan(prev)],
        "measurement_gap_hours": gaps,
    }


STRUCTURE_COLUMNS = [
    "quantity", "n_real", "n_synthetic", "mean_real", "mean_synthetic", "median_real", "median_synthetic",
    "ks_statistic", "wasserstein_normalized", "error",
]


def structure_stats(
    real: CohortLike, synthetic: CohortLike, max_values: int = DEFAULT_MAX_VALUES, seed: int = 0
) -> pd.DataFrame:
    """Record-structure distributions (visits/patient, codes/visit, rows/visit, stay length, gaps):
    KS and normalized Wasserstein-1 per quantity; failures in the `error` column."""
    rng = np.random.default_rng(seed)
    real_s = _structure_samples(_nonempty(prepare_cohort(real, "real")))
    syn_s = _structure_samples(_nonempty(prepare_cohort(synthetic, "synthetic")))
    rows = []
    for quantity in real_s:
        r, s = _sample(real_s[quantity], max_values, rng), _sample(syn_s[quantity], max_values, rng)
        rec = {"quantity": quantity, "n_real": len(real_s[quantity]), "n_synthetic": len(syn_s[quantity]),
               "mean_real": np.nan, "mean_synthetic": np.nan, "median_real": np.nan, "median_synthetic": np.nan,
               "ks_statistic": np.nan, "wasserstein_normalized": np.nan, "error": ""}
        if len(r) == 0 or len(s) == 0:
            rec["error"] = f"no '{quantity}' values in the {'real' if len(r) == 0 else 'synthetic'} cohort"
            rows.append(rec)
            continue
        ks, w1 = _ks_and_wasserstein(r, s)
        rec.update(mean_real=float(r.mean()), mean_synthetic=float(s.mean()), median_real=float(np.median(r)),
                   median_synthetic=float(np.median(s)), ks_statistic=ks)
        scale, _ = _robust_scale(r)
        if scale > 0:
            rec["wasserstein_normalized"] = w1 / scale
        else:
            rec["error"] = f"real '{quantity}' is constant; Wasserstein cannot be normalized"
        rows.append(rec)
    return pd.DataFrame(rows, columns=STRUCTURE_COLUMNS)


# --------------------------------------------------------------------------------------------
# Utility
# --------------------------------------------------------------------------------------------

CLASSIFIERS = ("hist_gradient_boosting", "logistic_regression")
DEFAULT_MAX_FIT_RECORDS = 20_000


def _make_classifier(classifier: str, seed: int):
    if classifier == "hist_gradient_boosting":
        # Fixed iterations, no early stopping: identical treatment of real and synthetic training
        # sets and no hidden random validation split.
        return HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20, max_bins=64,
            l2_regularization=1.0, early_stopping=False, random_state=seed,
        )
    if classifier == "logistic_regression":
        return LogisticRegression(C=0.1, max_iter=2000)
    raise MetricInputError(f"unknown classifier '{classifier}'; expected one of {CLASSIFIERS}")


def _train_and_score(
    x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    classifier: str, seed: int, prefix: str, source: str,
) -> dict[str, MetricValue]:
    keys = (f"{prefix}_auroc", f"{prefix}_auprc")
    classes = np.unique(y_fit)
    if len(classes) < 2:
        only = int(classes[0]) if len(classes) else "none"
        msg = f"the {source} cohort has a single mortality class ({only}, n={len(y_fit)}); cannot train a classifier"
        return {k: MetricError(k, msg) for k in keys}
    model = _make_classifier(classifier, seed).fit(x_fit, y_fit)
    p = model.predict_proba(x_test)[:, 1]
    return {keys[0]: float(roc_auc_score(y_test, p)), keys[1]: float(average_precision_score(y_test, p))}


def _utility_from_features(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    x_syn: np.ndarray, y_syn: np.ndarray, seed: int, classifier: str, max_fit_records: int,
) -> dict[str, MetricValue]:
    if len(y_test) == 0 or len(np.unique(y_test)) < 2:
        raise MetricInputError("real_test: 'mortality_inhospital' needs both classes; AUROC/AUPRC are undefined")
    if len(y_train) == 0 or len(y_syn) == 0:
        raise MetricInputError("utility needs visits in real_train and synthetic")
    # Equal training-set sizes so TSTR vs TRTR compares data quality, not data quantity.
    rng = np.random.default_rng(seed)
    n_fit = min(len(y_train), len(y_syn), max_fit_records)
    fit_train = np.sort(rng.choice(len(y_train), n_fit, replace=False))
    fit_syn = np.sort(rng.choice(len(y_syn), n_fit, replace=False))
    out: dict[str, MetricValue] = {
        "n_fit": float(n_fit), "n_test": float(len(y_test)),
        "train_positive_rate": float(y_train.mean()), "test_positive_rate": float(y_test.mean()),
        "synthetic_positive_rate": float(y_syn.mean()),
    }
    out.update(_train_and_score(x_train[fit_train], y_train[fit_train], x_test, y_test, classifier, seed,
                                "trtr", "real_train"))
    out.update(_train_and_score(x_syn[fit_syn], y_syn[fit_syn], x_test, y_test, classifier, seed,
                                "tstr", "synthetic"))
    for m in ("auroc", "auprc"):
        key, tstr, trtr = f"{m}_ratio", out[f"tstr_{m}"], out[f"trtr_{m}"]
        if isinstance(tstr, MetricError) or isinstance(trtr, MetricError):
            out[key] = MetricError(key, f"needs both TSTR and TRTR {m.upper()}")
        else:
            out[key] = tstr / trtr  # AUROC/AUPRC of a fitted model on two classes is > 0
    return out


def mortality_utility(
    real_train: CohortLike,
    real_test: CohortLike,
    synthetic: CohortLike,
    seed: int = 0,
    variables: pd.DataFrame | Sequence[str] | None = None,
    classifier: str = "hist_gradient_boosting",
    space: FeatureSpace | None = None,
    max_fit_records: int = DEFAULT_MAX_FIT_RECORDS,
    n_threads: int | None = 1,
) -> dict[str, MetricValue]:
    """In-hospital mortality: TRTR vs TSTR AUROC/AUPRC on real test, and TSTR/TRTR ratios."""
    preps = _prepare_three(real_train, real_test, synthetic)
    space = space or FeatureSpace.fit(preps["real_train"], variables)
    x = {n: space.transform(p, standardize=True).to_numpy() for n, p in preps.items()}
    y = {n: mortality_labels(p.cohort, n) for n, p in preps.items()}
    with threadpool_limits(limits=n_threads):
        return _utility_from_features(x["real_train"], y["real_train"], x["real_test"], y["real_test"],
                                      x["synthetic"], y["synthetic"], seed, classifier, max_fit_records)


def _prepare_three(real_train: CohortLike, real_test: CohortLike, synthetic: CohortLike) -> dict[str, PreparedCohort]:
    return {n: prepare_cohort(c, n)
            for n, c in (("real_train", real_train), ("real_test", real_test), ("synthetic", synthetic))}


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Aggregate tables for plots (small real cells suppressed)
# --------------------------------------------------------------------------------------------


def _suppress(counts: np.ndarray, min_cell_count: int) -> tuple[np.ndarray, np.ndarray]:
    small = (counts > 0) & (counts < min_cell_count)
    return np.where(small, 0, counts), small


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

    Continuous bins span the real 0.5–99.5th percentiles (values outside fall in the edge bins,
    so no individual extreme appears on an axis); real bins with fewer than `min_cell_count`
    values are blanked (`real_suppressed`).
    """
    real, synthetic = prepare_cohort(real, "real"), prepare_cohort(synthetic, "synthetic")
    table = resolve_variables(variables)
    names = table["variable"].tolist()
    real_vals, _ = _values_by_variable(real, names)
    syn_vals, _ = _values_by_variable(synthetic, names)
    parts = []
    for i, row in table.iterrows():
        r, s = real_vals[i], syn_vals[i]
        if len(r) == 0 and len(s) == 0:
            continue
        if row["kind"] == "categorical":
            cats = np.unique(np.round(np.concatenate([r, s]), 6))
            rc = np.bincount(np.searchsorted(cats, np.round(r, 6)), minlength=len(cats))
            sc = np.bincount(np.searchsorted(cats, np.round(s, 6)), minlength=len(cats))
            left = right = cats
            labels = [f"{c:g}" for c in cats]
        else:
            lo, hi = np.quantile(r if len(r) else s, [0.005, 0.995])
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            edges = np.linspace(lo, hi, bins + 1)
            rc = np.histogram(np.clip(r, lo, hi), edges)[0]
            sc = np.histogram(np.clip(s, lo, hi), edges)[0]
            left, right = edges[:-1], edges[1:]
            labels = [f"[{a:.4g}, {b:.4g})" for a, b in zip(left, right)]
        rc_kept, small = _suppress(rc, min_cell_count)
        parts.append(pd.DataFrame({
            "variable": row["variable"], "label": row["label"], "kind": row["kind"], "unit": row["unit"],
            "bin": np.arange(len(left)), "bin_label": labels, "left": left, "right": right,
            "real_fraction": rc_kept / max(len(r), 1), "synthetic_fraction": sc / max(len(s), 1),
            "real_suppressed": small,
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=HISTOGRAM_COLUMNS)


def suppressed_prevalence_table(table: pd.DataFrame, min_cell_count: int = DEFAULT_MIN_CELL_COUNT) -> pd.DataFrame:
    """Code prevalence table without codes seen in fewer than `min_cell_count` real visits (but > 0)."""
    rare = (table["n_real"] > 0) & (table["n_real"] < min_cell_count)
    return table.loc[~rare, ["code", "code_type", "prevalence_real", "prevalence_synthetic"]].reset_index(drop=True)


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


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    """`metrics`: flat finite floats for MLflow; `tables`: aggregate frames; `errors`: name → reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)

    def add(self, prefix: str, values: dict[str, MetricValue]) -> None:
        for key, value in values.items():
            name = f"{prefix}/{key}"
            if isinstance(value, MetricError):
                self.errors[name] = value.message
            elif value is None or not math.isfinite(float(value)):
                self.errors[name] = f"non-finite value {value!r}"
            else:
                self.metrics[name] = float(value)

    def add_table_errors(self, prefix: str, table: pd.DataFrame, key: str) -> None:
        for name, message in zip(table[key], table["error"]):
            if message:
                self.errors[f"{prefix}/{name}"] = message

    def plots(self) -> dict[str, bytes]:
        """PNG bytes of every plot the tables allow (see `plots.report_plots`)."""
        from synehrgy_assets.core.plots import report_plots  # plots imports this module

        return report_plots(self)


def _guarded(report: EvaluationReport, block: str, strict: bool, fn, *args, **kwargs):
    """Run one metric block; a failure becomes an explicit error entry (or raises when strict)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - recorded explicitly in report.errors, never silent
        if strict:
            raise
        report.errors[block] = f"{type(exc).__name__}: {exc}"
        return None


def evaluate(
    real_train: CohortLike,
    real_test: CohortLike,
    synthetic: CohortLike,
    variables: pd.DataFrame | Sequence[str] | None = None,
    seed: int = 0,
    max_records: int = DEFAULT_MAX_RECORDS,
    top_k_codes: int = DEFAULT_TOP_K_CODES,
    window_hours: float = DEFAULT_WINDOW_HOURS,
    classifier: str = "hist_gradient_boosting",
    max_fit_records: int = DEFAULT_MAX_FIT_RECORDS,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    n_threads: int | None = 1,
    strict: bool = False,
) -> EvaluationReport:
    """Fidelity (synthetic vs real train, plus real test vs real train as the baseline), utility
    and privacy. Input contract violations raise `MetricInputError`; a metric block that fails
    otherwise is recorded in `report.errors` (or raises when `strict`)."""
    preps = _prepare_three(real_train, real_test, synthetic)
    table = resolve_variables(variables)
    report = EvaluationReport(params={
        "seed": seed, "max_records": max_records, "top_k_codes": top_k_codes, "window_hours": window_hours,
        "classifier": classifier, "max_fit_records": max_fit_records, "min_cell_count": min_cell_count,
        "n_variables": len(table), **{f"n_visits_{n}": p.n_visits for n, p in preps.items()},
    })
    train, test, syn = preps["real_train"], preps["real_test"], preps["synthetic"]

    for prefix, other in (("fidelity", syn), ("fidelity_baseline", test)):
        values = _guarded(report, f"{prefix}/codes", strict, code_prevalence_correlation, train, other)
        if values is not None:
            report.add(prefix, values)
        marg = _guarded(report, f"{prefix}/marginals", strict, marginal_distances, train, other, table, seed=seed)
        if marg is not None:
            report.tables[f"{prefix}_marginals"] = marg
            report.add(prefix, summarize_marginals(marg))
            report.add_table_errors(f"{prefix}/marginal", marg, "variable")
        struct = _guarded(report, f"{prefix}/structure", strict, structure_stats, train, other, seed=seed)
        if struct is not None:
            report.tables[f"{prefix}_structure"] = struct
            ok = struct[struct["error"] == ""]
            report.add(f"{prefix}/structure", {f"{q}_ks": v for q, v in zip(ok["quantity"], ok["ks_statistic"])})
            report.add_table_errors(f"{prefix}/structure", struct, "quantity")

    prevalence = _guarded(report, "tables/code_prevalence", strict, code_prevalence_table, train, syn)
    if prevalence is not None:
        report.tables["code_prevalence"] = suppressed_prevalence_table(prevalence, min_cell_count)
    hist = _guarded(report, "tables/marginal_histograms", strict, marginal_histograms, train, syn, table,
                    min_cell_count=min_cell_count)
    if hist is not None:
        report.tables["marginal_histograms"] = hist

    space = _guarded(report, "features", strict, FeatureSpace.fit, train, table, top_k_codes, window_hours)
    if space is None:
        return report
    raw = {n: _guarded(report, f"features/{n}", strict, space.transform, p) for n, p in preps.items()}
    if any(v is None for v in raw.values()):
        return report
    x = {n: space.standardize(f).to_numpy() for n, f in raw.items()}
    report.params["n_features"] = len(space.columns)

    with threadpool_limits(limits=n_threads):
        labels = {n: _guarded(report, f"labels/{n}", strict, mortality_labels, p.cohort, n) for n, p in preps.items()}
        if all(v is not None for v in labels.values()):
            utility = _guarded(report, "utility", strict, _utility_from_features,
                               x["real_train"], labels["real_train"], x["real_test"], labels["real_test"],
                               x["synthetic"], labels["synthetic"], seed, classifier, max_fit_records)
            if utility is not None:
                report.add("utility", utility)

        codes = _guarded(report, "privacy/code_sets", strict, _code_set_matrices, preps)
        if codes is not None:
            privacy = _guarded(report, "privacy", strict, _privacy_from_features, x, raw, codes, seed, max_records)
            if privacy is not None:
                values, distances = privacy
                report.add("privacy", values)
                report.tables["privacy_distance_histograms"] = distance_histograms(
                    distances, min_cell_count=min_cell_count)
    return report
