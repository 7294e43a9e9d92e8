"""The token vocabulary: configuration, numeric bins with within-bin quantiles, token ids.

Fitted on the train split only (docs/tokens.md section 2). Holds aggregates, never patient rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from synehrgy_assets.core import variables as _variables
from synehrgy_assets.core.privacy_aggregates import (
    k_anonymous_quantiles,
    k_anonymous_range,
    merge_bins_to_patients,
    patients_per_category,
    sort_order,
)
from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.tokens.columns import (
    _distinct_text,
    _float_column,
    _lookup,
    _one_sorted_run_per_visit,
    _prepare_visits,
    _rows_and_gaps,
    _int_column,
)
from synehrgy_assets.core.tokens.grammar import TokenType
from synehrgy_assets.core.tokens.stay_end import STAY_END, fit_stay_end


T = TokenType
FORMAT = "synehrgy-token-vocabulary/2"
# Format 1 stored quantiles that could be means of one patient's values, and had no ICU_DATABASE
# covariate: it is refused, not read.
_FORMAT_BEFORE_MIN_PATIENTS = "synehrgy-token-vocabulary/1"
UNK = "UNK"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "</covar>", "</label>", "</code>", "</ts>", "</adm>")
# The context markers of the long-patient format (docs/tokens.md section 6) close the id space.
CONTEXT_MARKERS = ("<skip-visits>", "<skip-rows>")
# Outcome conditioning (GPTConfig.condition_table): 0 = no outcome yet in this visit, then one value
# per MORTALITY token. A visit start (<s>, GAP_VISIT, AGE) resets it.
CONDITION_NONE = 0
COVARIATES = (
    ("gender", T.GENDER),
    ("ethnicity_group", T.ETHNICITY_GROUP),
    ("insurance", T.INSURANCE),
    ("admission_type", T.ADMISSION_TYPE),
    ("first_careunit", T.FIRST_CAREUNIT),
    ("icu_database", T.ICU_DATABASE),
)
# Learned hospital-stay offsets around the ICU stay (hours; docs/tokens.md section 4): the decoder
# samples them instead of inventing the admission and discharge times.
STAY_OFFSETS = ("admit_to_icu_hours", "icu_to_discharge_hours_survived", "icu_to_discharge_hours_died", *STAY_END)
CODE_TYPES = (("diagnosis", "DX", T.DX), ("procedure", "PX", T.PX))

# Age in years: [18,20), [20,25), ..., [85,90), then one bucket for MIMIC's capped >89 ages.
AGE_EDGES = (18.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0,
             85.0, 90.0)
AGE_CAP = 90.0
# Hours between measurement rows (first row: since ICU admission). Finer than the reference's
# 15 bins; the narrow bins around 0.25/0.5/1 h catch the common charting intervals exactly.
# The last edge is a cap: larger gaps are clipped to it (and counted).
DT_EDGES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.05, 1.5, 2.0, 2.5, 3.0, 3.5, 4.5, 6.0, 8.0, 10.0,
            12.0, 16.0, 20.0, 24.0, 36.0, 48.0, 72.0, 120.0, 240.0, 2400.0)
# Hours from the previous visit's outtime to this visit's intime; the last edge (20 y) is a cap.
GAP_VISIT_EDGES = (0.0, 6.0, 12.0, 24.0, 48.0, 72.0, 120.0, 168.0, 336.0, 720.0, 1440.0, 2160.0,
                   4320.0, 8760.0, 17520.0, 43800.0, 175200.0)
# Hours of a visit's rows left out of a window (context token ELAPSED//i after <skip-rows>): the
# model then knows how far into the stay a window starts. The last edge is a cap.
# 2-hour bins over the first three days (where most stays end), coarser after that: the stay-hours
# clock (GPTConfig.clocks) restarts from the bin's midpoint in a window that skips rows.
ELAPSED_EDGES = (tuple(float(h) for h in range(0, 72, 2)) + tuple(float(h) for h in range(72, 120, 4))
                 + tuple(float(h) for h in range(120, 168, 8))
                 + (168.0, 192.0, 240.0, 288.0, 336.0, 420.0, 504.0, 612.0, 720.0, 1080.0, 1440.0, 2400.0))
# The code clocks count a visit's diagnoses / procedures so far: one bucket per count up to 40.
CODE_CLOCK_EDGES = tuple(float(n) for n in range(1, 41))
MIN_ROW_GAP_HOURS = 1.0 / 3600.0



# ----------------------------------------------------------------------------------------------
# Configuration and variables


@dataclass(frozen=True)
class VocabularyConfig:
    """How the vocabulary is fitted (see docs/tokens.md)."""

    binning: str = "quantile"  # "quantile" | "uniform" | "clinical"
    n_bins: int = 10
    min_code_count: int = 5
    within_bin_quantiles: int = 11
    min_bin_count: int = 5
    # Privacy (core/privacy_aggregates.py): every stored number depends on >= `min_patients`
    # distinct train patients. A quantile (bin edge, within-bin, LOS) is the patient-weighted mean
    # of the `tail_count` order statistics around its rank, the window widened until it holds
    # values of `min_patients` patients, and lies inside the variable's k-anonymous range (>=
    # `min_patients` patients on each side). Quantile bins are merged until each holds values of
    # `min_patients` patients; a bin of fewer patients (or fewer than 2 x tail_count + 1 values)
    # stores no quantiles (decoding samples it uniformly). A code, phenotype, covariate or
    # measurement category needs `min_code_count` rows and `min_patients` patients for a token.
    tail_count: int = 10
    min_patients: int = 10
    # Quantile binning also cuts at these levels: the extreme 1 % of a variable's values get bins
    # of their own, so an extreme value is a token the model places (patient by patient, as real
    # extremes cluster in few patients) rather than the far end of an ordinary bin's within-bin
    # draw, which lands on random patients. Merged away like any bin of too few patients.
    tail_levels: tuple = (0.01, 0.99)

    def __post_init__(self):
        if self.binning not in ("quantile", "uniform", "clinical"):
            raise ValueError(
                f"VocabularyConfig.binning must be 'quantile', 'uniform' or 'clinical', "
                f"got {self.binning!r}"
            )
        if self.n_bins < 1:
            raise ValueError(f"VocabularyConfig.n_bins must be >= 1, got {self.n_bins}")
        if self.min_code_count < 1:
            raise ValueError(f"VocabularyConfig.min_code_count must be >= 1, got {self.min_code_count}")
        if self.within_bin_quantiles < 2:
            raise ValueError("VocabularyConfig.within_bin_quantiles must be >= 2, "
                             f"got {self.within_bin_quantiles}")
        if self.min_bin_count < 1:
            raise ValueError(f"VocabularyConfig.min_bin_count must be >= 1, got {self.min_bin_count}")
        if self.tail_count < 0:
            raise ValueError(f"VocabularyConfig.tail_count must be >= 0, got {self.tail_count}")
        object.__setattr__(self, "tail_levels", tuple(float(q) for q in self.tail_levels))
        if any(not 0 < q < 1 for q in self.tail_levels):
            raise ValueError(f"VocabularyConfig.tail_levels must lie in (0, 1), got {self.tail_levels}")
        if self.min_patients < 1:
            raise ValueError(f"VocabularyConfig.min_patients must be >= 1, got {self.min_patients}")


# The variables seed has one loader, shared with the metrics: core/variables.py (column contract,
# checks with errors naming the file and column, `clinical_edges` parsed to sorted floats). The
# tokenizer takes the variables in name order: their token ids follow it.
_parse_edges = _variables.parse_edges


def load_variables(path: str | Path | None = None) -> pd.DataFrame:
    """The variables seed table (`dbt_mimic/seeds/variables.csv`), checked, sorted by name."""
    return _variables.load_variables(path, sort_by_name=True)


def _check_variables_table(table: pd.DataFrame, origin: str = "variables table") -> pd.DataFrame:
    return _variables.check_variables(table, origin, sort_by_name=True)


# ----------------------------------------------------------------------------------------------
# Numeric bins with within-bin quantiles


@dataclass
class NumericBins:
    """Bins [edges[i], edges[i+1]) (the last one closed) with optional within-bin quantiles.

    `top_bucket` adds one more bin holding exactly the values >= top_bucket (age's capped >89).
    `quantiles[i]` is None when the bin had fewer than `min_bin_count` training values: decoding
    then samples uniformly inside the bin.
    """

    edges: np.ndarray
    quantiles: list
    top_bucket: float | None = None

    def __post_init__(self):
        self.edges = np.asarray(self.edges, dtype=np.float64)
        if self.edges.ndim != 1 or len(self.edges) < 2 or np.any(np.diff(self.edges) <= 0):
            raise ValueError(f"bin edges must be strictly increasing, got {self.edges.tolist()}")
        if len(self.quantiles) != self.n_bins:
            raise ValueError(f"{len(self.quantiles)} quantile lists for {self.n_bins} bins")

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1 + (self.top_bucket is not None)

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each (non-NaN) value; out-of-range values go to the end bins."""
        values = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges[1:-1], values, side="right")
        if self.top_bucket is not None:
            idx[values >= self.top_bucket] = len(self.edges) - 1
        return idx

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        low, high = self.edges[:-1], self.edges[1:]
        if self.top_bucket is not None:
            low = np.append(low, self.top_bucket)
            high = np.append(high, self.top_bucket)
        return low, high

    def quantile_table(self, k: int) -> np.ndarray:
        low, high = self.bounds()
        table = np.linspace(low, high, k, axis=1)
        for i, q in enumerate(self.quantiles):
            if q is not None:
                table[i] = q
        return table

    def to_dict(self) -> dict:
        return {
            "edges": [float(x) for x in self.edges],
            "quantiles": [None if q is None else [float(x) for x in q] for q in self.quantiles],
            "top_bucket": self.top_bucket,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NumericBins":
        return cls(np.asarray(d["edges"], dtype=np.float64), list(d["quantiles"]), d.get("top_bucket"))


def _fit_bins(
    values: np.ndarray,
    patients: np.ndarray,
    edges: Sequence[float],
    config: VocabularyConfig,
    merge: bool,
    top_bucket: float | None = None,
) -> NumericBins:
    """Bins with within-bin quantiles from training values (already inside the edges) and the
    patient of each value. With `merge`, inner edges are removed until every bin holds values of
    `min_patients` patients and `min_bin_count` values; fixed scales keep their (public) edges."""
    values, patients = np.asarray(values, dtype=np.float64), np.asarray(patients)
    order = sort_order(values, patients)
    values, patients = values[order], patients[order]
    edges = [float(e) for e in edges]
    inner = edges[1:-1]
    if merge:
        inner = merge_bins_to_patients(values, patients, inner, config.min_patients, config.min_bin_count)
    full_edges = [edges[0], *inner, edges[-1]]
    cut = np.concatenate([[0], np.searchsorted(values, inner, side="left"), [len(values)]])
    # The tails are guarded over the whole variable: no stored number lies beyond the values of all
    # but fewer than min_patients patients.
    guard = k_anonymous_range(values, patients, config.min_patients)
    levels = np.linspace(0.0, 1.0, config.within_bin_quantiles)
    quantiles = [clipped_quantiles(values[a:b], patients[a:b], levels, config, guard, (lo, hi))
                 for a, b, lo, hi in zip(cut[:-1], cut[1:], full_edges[:-1], full_edges[1:])]
    if top_bucket is not None:
        quantiles.append(None)  # a point bucket: low == high
    return NumericBins(np.asarray(full_edges), quantiles, top_bucket)


def clipped_quantiles(values: np.ndarray, patients: np.ndarray, levels: np.ndarray,
                      config: VocabularyConfig, guard: tuple[float, float] | None = None,
                      bounds: tuple[float, float] | None = None) -> list | None:
    """k-anonymous quantiles at `levels` (`privacy_aggregates.k_anonymous_quantiles`, window
    `tail_count`, k = `min_patients`), clipped to `guard` and `bounds`. None when the sample has
    fewer than max(min_bin_count, 2 x tail_count + 1) values, fewer than `min_patients` patients,
    or no k-anonymous range."""
    if len(values) < max(config.min_bin_count, 2 * config.tail_count + 1) or guard is None:
        return None
    return k_anonymous_quantiles(values, patients, levels, k=config.min_patients,
                                 window=max(config.tail_count, 1), guard=guard, bounds=bounds)


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


class _BinGrid:
    """Exact bin lookup for every continuous variable at once (used by `_kernels.value_tokens`).

    cell(v) = floor((v - low) * scale), clamped to [0, G), is monotone in v, so a value whose cell
    holds no edge is binned by the cell alone; a cell holding one edge needs one exact comparison.
    G grows until no cell holds two edges of the same variable.
    """

    def __init__(self, variables: list[VariableSpec]):
        n = len(variables)
        self.low = np.zeros(n)
        self.scale = np.zeros(n)  # 0 for categorical variables: every value lands in cell 0
        inner = [np.zeros(0)] * n
        for j, var in enumerate(variables):
            if var.bins is not None:
                self.low[j] = var.bins.edges[0]
                inner[j] = var.bins.edges[1:-1]
        for size in (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18):
            self.size = size
            for j, var in enumerate(variables):
                if var.bins is not None:
                    self.scale[j] = size / (var.bins.edges[-1] - var.bins.edges[0])
            cells = [self._cells(np.full(len(e), j), e) for j, e in enumerate(inner)]
            if all(len(np.unique(c)) == len(c) for c in cells):
                break
        else:
            raise ValueError("bin edges too close to index (closer than range / 2**18)")
        self.base = np.zeros(n * size, dtype=np.int32)   # bins whose edges lie in lower cells
        self.edge = np.full(n * size, np.inf)            # the edge inside a cell, if any
        for j, c in enumerate(cells):
            self.base[j * size:(j + 1) * size] = np.searchsorted(c, np.arange(size), side="right")
            self.base[j * size + c] -= 1  # in an edge's own cell the comparison adds it back
            self.edge[j * size + c] = inner[j]

    def _cells(self, var: np.ndarray, values: np.ndarray) -> np.ndarray:
        t = (values - self.low[var]) * self.scale[var]
        np.fmax(t, 0.0, out=t)  # fmax/fmin map NaN to the bound
        np.fmin(t, self.size - 1, out=t)
        return t.astype(np.int32)


@dataclass
class VariableSpec:
    """One measurement variable: continuous bins or categorical categories."""

    name: str
    kind: str
    valid_low: float
    valid_high: float
    bins: NumericBins | None = None
    categories: list = field(default_factory=list)
    category_values: list = field(default_factory=list)  # numeric score of each category

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "valid_low": float(self.valid_low),
            "valid_high": float(self.valid_high),
            "bins": None if self.bins is None else self.bins.to_dict(),
            "categories": list(self.categories),
            "category_values": [None if v is None else float(v) for v in self.category_values],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "VariableSpec":
        bins = None if d["bins"] is None else NumericBins.from_dict(d["bins"])
        return cls(d["name"], d["kind"], d["valid_low"], d["valid_high"], bins,
                   list(d["categories"]), list(d["category_values"]))


# ----------------------------------------------------------------------------------------------
# The vocabulary


def _canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)


class TokenVocabulary:
    """Token ids, bin edges and within-bin distributions, fitted on the train split only.

    Holds only aggregates (bin edges, within-bin quantiles of >= `min_bin_count` values, code
    and category names): no patient rows, so it may be logged to MLflow.
    """

    def __init__(
        self,
        *,
        config: VocabularyConfig,
        variables: list[VariableSpec],
        scales: dict[str, NumericBins],
        covariates: dict[str, list[str]],
        phenotypes: list[str],
        codes: dict[str, list[str]],
        los_quantiles: list[float] | None,
        fit_stats: dict,
        stay_offsets: dict[str, list[float] | None] | None = None,
        variable_databases: dict[str, list[str]] | None = None,
        relations: list[dict] | None = None,
    ):
        self.config = config
        self.variables = sorted(variables, key=lambda v: v.name)
        self.scales = scales
        self.covariates = {col: sorted(covariates[col]) for col, _ in COVARIATES}
        self.phenotypes = sorted(phenotypes)
        self.codes = {name: sorted(codes[name]) for name, _, _ in CODE_TYPES}
        self.los_quantiles = los_quantiles
        self.fit_stats = fit_stats
        # Quantiles of the hospital stay around the ICU stay (STAY_OFFSETS; None: too few values).
        self.stay_offsets = {name: (stay_offsets or {}).get(name) for name in STAY_OFFSETS}
        # variable -> the ICU databases (icu_database categories) whose stays chart it in train;
        # empty: no database information, nothing restricted.
        self.variable_databases = {k: sorted(v) for k, v in sorted((variable_databases or {}).items())}
        names = {v.name for v in variables}
        self.relations = [r for r in (relations or [])
                          if {r.get("lower"), r.get("upper"), r.get("total"), *r.get("parts", [])}
                          - {None} <= names]
        self._build()
        self.version = hashlib.sha256(_canonical_json(self.to_dict()).encode()).hexdigest()[:12]

    # ---- construction of the id space
    def _build(self) -> None:
        tokens: list[str] = []
        types: list[int] = []
        k = self.config.within_bin_quantiles

        def add(name: str, kind: TokenType) -> int:
            tokens.append(name)
            types.append(int(kind))
            return len(tokens) - 1

        for name, kind in zip(SPECIAL_TOKENS, (T.PAD, T.BOS, T.EOS, T.END_COVAR, T.END_LABEL,
                                               T.END_CODE, T.END_TS, T.END_ADM)):
            add(name, kind)
        (self.pad_id, self.bos_id, self.eos_id, self.end_covar_id, self.end_label_id,
         self.end_code_id, self.end_ts_id, self.end_adm_id) = range(len(SPECIAL_TOKENS))

        qrows: list[tuple[int, np.ndarray]] = []  # (token id, quantile row)
        bounds: list[tuple[int, float, float]] = []

        def add_scale(prefix: str, bins: NumericBins, kind: TokenType) -> int:
            table = bins.quantile_table(k)
            low, high = bins.bounds()
            base = len(tokens)
            for i in range(bins.n_bins):
                tid = add(f"{prefix}//{i}", kind)
                qrows.append((tid, table[i]))
                bounds.append((tid, low[i], high[i]))
            return base

        self.gap_visit_base = add_scale("GAP_VISIT", self.scales["GAP_VISIT"], T.GAP_VISIT)
        self.age_base = add_scale("AGE", self.scales["AGE"], T.AGE)
        self._covariate_ids: dict[str, dict[str, int]] = {}
        self._covariate_unk: dict[str, int] = {}
        covariate_value: dict[int, str | None] = {}
        for col, kind in COVARIATES:
            unk = add(f"{col.upper()}//{UNK}", kind)
            covariate_value[unk] = None
            ids = {}
            for cat in self.covariates[col]:
                ids[cat] = add(f"{col.upper()}//{cat}", kind)
                covariate_value[ids[cat]] = cat
            self._covariate_ids[col] = ids
            self._covariate_unk[col] = unk
        self.mortality_base = add("MORTALITY//0", T.MORTALITY)
        add("MORTALITY//1", T.MORTALITY)
        self.phenotype_base = len(tokens)
        for name in self.phenotypes:
            add(f"PHENO//{name}", T.PHENOTYPE)
        self._code_base: dict[str, int] = {}
        code_of: dict[int, tuple[str, str]] = {}
        for code_type, prefix, kind in CODE_TYPES:
            self._code_base[code_type] = len(tokens)
            code_of[add(f"{prefix}//{UNK}", kind)] = (code_type, UNK)
            for code in self.codes[code_type]:
                code_of[add(f"{prefix}//{code}", kind)] = (code_type, code)
        self.value_base = np.zeros(len(self.variables), dtype=np.int64)
        value_var: dict[int, int] = {}
        category_of: dict[int, tuple[str, float]] = {}
        for j, var in enumerate(self.variables):
            self.value_base[j] = len(tokens)
            if var.kind == "continuous":
                table = var.bins.quantile_table(k)
                low, high = var.bins.bounds()
                for i in range(var.bins.n_bins):
                    tid = add(f"{var.name}//{i}", T.VALUE)
                    value_var[tid] = j
                    qrows.append((tid, table[i]))
                    bounds.append((tid, low[i], high[i]))
            else:
                for cat, score in zip(var.categories, var.category_values):
                    tid = add(f"{var.name}//{cat}", T.VALUE)
                    value_var[tid] = j
                    category_of[tid] = (cat, np.nan if score is None else float(score))
        self.dt_base = add_scale("DT", self.scales["DT"], T.DT)
        self.skip_visits_id = add(CONTEXT_MARKERS[0], T.SKIP_VISITS)
        self.skip_rows_id = add(CONTEXT_MARKERS[1], T.SKIP_ROWS)
        self.elapsed_base = len(tokens)
        for i in range(len(ELAPSED_EDGES) - 1):
            add(f"ELAPSED//{i}", T.ELAPSED)

        if len(set(tokens)) != len(tokens):
            dupes = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"vocabulary: duplicate token strings {dupes[:5]}")
        self.tokens = tokens
        self.size = len(tokens)
        self._ids = {t: i for i, t in enumerate(tokens)}
        self.token_types = np.asarray(types, dtype=np.int8)
        # Values inside a measurement row are ordered by variable *name*: the order the marts
        # loader returns rows in, so encoding needs no sort (and independent of the seed's order).
        names = [v.name for v in self.variables]
        self._rank_of_var = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"),
                                       kind="stable").astype(np.int16)
        self.value_rank = np.full(self.size, -1, dtype=np.int64)
        self.value_var = np.full(self.size, -1, dtype=np.int64)
        for tid, j in value_var.items():
            self.value_rank[tid] = self._rank_of_var[j]
            self.value_var[tid] = j
        self.bin_low = np.full(self.size, np.nan)
        self.bin_high = np.full(self.size, np.nan)
        for tid, lo, hi in bounds:
            self.bin_low[tid], self.bin_high[tid] = lo, hi
        self._qrow = np.full(self.size, -1, dtype=np.int64)
        self._qtable = np.zeros((max(len(qrows), 1), k))
        for r, (tid, row) in enumerate(qrows):
            self._qrow[tid] = r
            self._qtable[r] = row
        self._text = np.full(self.size, None, dtype=object)  # decoded text per token
        self._number = np.full(self.size, np.nan)             # decoded categorical score
        for tid, value in covariate_value.items():
            self._text[tid] = value
        for tid, (code_type, code) in code_of.items():
            self._text[tid] = code
        for i, name in enumerate(self.phenotypes):
            self._text[self.phenotype_base + i] = name
        for tid, (cat, score) in category_of.items():
            self._text[tid] = cat
            self._number[tid] = score
        self._var_continuous = np.array([v.kind == "continuous" for v in self.variables], dtype=bool)
        self.variable_names = [v.name for v in self.variables]
        # Lookup for categorical values: [n_variables, n_union_categories] -> token id or -1.
        self._category_union = sorted({c for v in self.variables for c in v.categories})
        union_pos = {c: i for i, c in enumerate(self._category_union)}
        self._category_token = np.full((len(self.variables), max(len(union_pos), 1)), -1, np.int64)
        for j, var in enumerate(self.variables):
            for i, cat in enumerate(var.categories):
                self._category_token[j, union_pos[cat]] = self.value_base[j] + i
        self._grid = _BinGrid(self.variables)
        # What a DT token stands for when the context format sums left-out rows (ELAPSED) and in the
        # model's stay clock: its bin's midpoint on the fixed DT scale. Both use the same hours, so a
        # window's ELAPSED token restarts the clock where the rows it skips would have left it.
        self.dt_hours = np.zeros(self.size)
        low, high = self.scales["DT"].bounds()
        self.dt_hours[self.dt_base:self.dt_base + len(low)] = (np.asarray(low) + np.asarray(high)) / 2
        self._value_base32 = self.value_base.astype(np.int32)
        self._valid_low = np.array([v.valid_low for v in self.variables], dtype=np.float64)
        self._valid_high = np.array([v.valid_high for v in self.variables], dtype=np.float64)

    # ---- fitting
    @classmethod
    def fit(
        cls,
        train_cohort: StagedCohort,
        config: VocabularyConfig | None = None,
        variables: pd.DataFrame | None = None,
    ) -> "TokenVocabulary":
        """Fit on the train split: codes, categories, bin edges and within-bin quantiles."""
        config = config or VocabularyConfig()
        train_cohort.validate_columns("train_cohort")
        table = load_variables() if variables is None else _check_variables_table(variables)
        k_levels = np.linspace(0.0, 1.0, config.within_bin_quantiles)
        stats: dict = {}
        visits = train_cohort.visits
        vis = _prepare_visits(visits)
        stats["n_patients"] = int(len(vis.patient_subject))
        stats["n_visits"] = int(vis.n)
        subject = _int_column(visits, "visits", "subject_id")

        # Covariates and scales.
        covariates = {}
        stats["n_rare_categories_dropped"] = 0
        for col, _ in COVARIATES:
            kept, rare = _frequent(_visit_column(visits, col), subject, config)
            covariates[col] = [c for c in kept if c != UNK]
            stats["n_rare_categories_dropped"] += rare
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
        los = _float_column(visits, "visits", "los_hours", allow_null=True)
        known = ~np.isnan(los)
        los_guard = k_anonymous_range(los[known], subject[known], config.min_patients)
        los_quantiles = clipped_quantiles(los[known], subject[known], k_levels, config, los_guard)
        stay_offsets = _fit_stay_offsets(visits, k_levels, config)

        # Phenotypes and codes.
        ph = train_cohort.visit_phenotypes
        _distinct_text(ph["phenotype"], "visit_phenotypes", "phenotype")  # checks the column
        phenotypes, rare = _frequent(ph["phenotype"], _int_column(ph, "visit_phenotypes", "subject_id"), config)
        stats["n_rare_phenotypes_dropped"] = rare
        codes_frame = train_cohort.visit_codes
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

        # Measurements.
        meas = train_cohort.measurements
        var = _lookup(meas["variable"], table["variable"], "measurements", "variable")
        _raise_unknown_variables(meas, var)
        value = _float_column(meas, "measurements", "value", allow_null=True)
        hours = _float_column(meas, "measurements", "hours", allow_null=False)
        text = meas["value_text"]
        meas_subject = _int_column(meas, "measurements", "subject_id")
        stay_offsets.update(fit_stay_end(visits, meas, lambda v, p: clipped_quantiles(
            v, p, k_levels, config, k_anonymous_range(v, p, config.min_patients))))
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
                cat_text = _category_text(text.iloc[rows], value[rows])
                ok = cat_text.notna().to_numpy()
                present[rows[ok]] = True
                frame = pd.DataFrame({"c": cat_text[ok].astype(str).to_numpy(),
                                      "v": value[rows][ok], "p": meas_subject[rows[ok]]})
                scored = frame[frame["v"].notna()]
                cats, rare = _frequent(frame["c"], frame["p"].to_numpy(), config)
                stats["n_rare_categories_dropped"] += rare
                vals = [_category_score(frame[frame["c"] == cat], scored, config) for cat in cats]
                var_specs.append(VariableSpec(row.variable, "categorical", low, high, None, cats, vals))
                n_values += int(ok.sum())
        stats["n_measurement_values"] = n_values
        stats["measurement_values_clipped"] = float(n_clipped / n_values) if n_values else 0.0
        # Gaps between measurement rows (over present values, in stay/time order).
        meas_visit = vis.position_of(_int_column(meas, "measurements", "icustay_id"), "measurements")
        gv = meas_visit[present]
        h = hours[present]
        if not _one_sorted_run_per_visit(gv, h):
            o = np.lexsort((h, gv))
            gv, h = gv[o], h[o]
        _, row_gv, dt = _rows_and_gaps(gv, h)
        dt = np.clip(dt, DT_EDGES[0], DT_EDGES[-1])
        scales["DT"] = _fit_bins(dt, vis.subject[row_gv], DT_EDGES, config, merge=False)
        stats["n_measurement_rows"] = int(len(dt))
        variable_databases = _fit_variable_databases(
            meas_visit[present], var[present], list(table["variable"]), visits, vis,
            covariates["icu_database"], config.min_patients)
        relations = _variables.load_relations(variables=list(table["variable"]))
        return cls(config=config, variables=var_specs, scales=scales, covariates=covariates,
                   phenotypes=phenotypes, codes=codes, los_quantiles=los_quantiles, fit_stats=stats,
                   stay_offsets=stay_offsets, variable_databases=variable_databases, relations=relations)

    # ---- serialization
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "config": asdict(self.config),
            "variables": [v.to_dict() for v in self.variables],
            "scales": {name: bins.to_dict() for name, bins in sorted(self.scales.items())},
            "covariates": self.covariates,
            "phenotypes": self.phenotypes,
            "codes": self.codes,
            "los_quantiles": self.los_quantiles,
            "stay_offsets": self.stay_offsets,
            "variable_databases": self.variable_databases,
            "relations": self.relations,
            "fit_stats": self.fit_stats,
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, d: dict, origin: str = "vocabulary") -> "TokenVocabulary":
        if d.get("format") == _FORMAT_BEFORE_MIN_PATIENTS:
            raise ValueError(
                f"{origin}: format {d['format']!r} was fitted before every stored number had to "
                f"depend on >= min_patients patients; refit it (materialize token_vocabulary) to "
                f"get {FORMAT!r}")
        if d.get("format") != FORMAT:
            raise ValueError(f"{origin}: format {d.get('format')!r}, expected {FORMAT!r}")
        vocab = cls(
            config=VocabularyConfig(**d["config"]),
            variables=[VariableSpec.from_dict(v) for v in d["variables"]],
            scales={k: NumericBins.from_dict(v) for k, v in d["scales"].items()},
            covariates=d["covariates"],
            phenotypes=d["phenotypes"],
            codes=d["codes"],
            los_quantiles=d["los_quantiles"],
            fit_stats=d["fit_stats"],
            stay_offsets=d.get("stay_offsets"),
            variable_databases=d.get("variable_databases"),
            relations=d.get("relations"),
        )
        if d.get("tokens") is not None and d["tokens"] != vocab.tokens:
            raise ValueError(f"{origin}: stored token list does not match the rebuilt one")
        if d.get("version") is not None and d["version"] != vocab.version:
            raise ValueError(f"{origin}: stored version {d['version']} != content hash {vocab.version}")
        return vocab

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {**self.to_dict(), "version": self.version}
        path.write_text(json.dumps(content, indent=1, sort_keys=True, allow_nan=False))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "TokenVocabulary":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(d, origin=str(path))

    # ---- lookups
    def id_of(self, token: str) -> int:
        try:
            return self._ids[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in vocabulary {self.version}") from None

    def token_of(self, token_id: int) -> str:
        if not 0 <= int(token_id) < self.size:
            raise KeyError(f"token id {token_id} outside [0, {self.size})")
        return self.tokens[int(token_id)]

    def ids_of_type(self, kind: TokenType) -> np.ndarray:
        return np.flatnonzero(self.token_types == kind)

    def variable(self, name: str) -> VariableSpec:
        for var in self.variables:
            if var.name == name:
                return var
        raise KeyError(f"variable {name!r} is not in vocabulary {self.version}")

    def elapsed_token(self, hours: float) -> int:
        """The ELAPSED//i context token of `hours` (clipped to the scale)."""
        inner = np.asarray(ELAPSED_EDGES[1:-1])
        return int(self.elapsed_base + np.searchsorted(inner, max(float(hours), 0.0), side="right"))

    def condition_table(self) -> list[int]:
        """Per token: -1 (keeps the running outcome condition) or the condition it sets: a visit
        start resets it to CONDITION_NONE, MORTALITY//m sets 1 + m (see GPTConfig.condition_table)."""
        table = np.full(self.size, -1, dtype=np.int64)
        table[self.bos_id] = CONDITION_NONE
        table[self.token_types == T.GAP_VISIT] = CONDITION_NONE
        table[self.token_types == T.AGE] = CONDITION_NONE
        table[self.mortality_base] = 1
        table[self.mortality_base + 1] = 2
        return table.tolist()

    def clocks(self) -> list[dict]:
        """The model's clocks (GPTConfig.clocks): hours since ICU admission in this visit, and the
        visit's diagnoses and procedures so far while its codes are written. A visit start (<s>,
        GAP_VISIT, AGE) sets each to 0, and so does </code> for the two code counts.
        A DT token adds its bin's midpoint (the fixed DT scale, no data); an ELAPSED context token
        sets the stay clock to its bin's midpoint. All three are functions of the prefix alone, so
        training and sampling compute them the same way."""
        types = self.token_types
        starts = np.zeros(self.size, dtype=bool)
        starts[self.bos_id] = True
        starts |= (types == T.GAP_VISIT) | (types == T.AGE)

        def clock(name, add, set_values, edges):
            sets = np.where(starts, 0.0, -1.0)
            for tid, value in set_values:
                sets[tid] = value
            return {"name": name, "add": add.tolist(), "set": sets.tolist(), "edges": list(edges)}

        elapsed = [(self.elapsed_base + i, (ELAPSED_EDGES[i] + ELAPSED_EDGES[i + 1]) / 2)
                   for i in range(len(ELAPSED_EDGES) - 1)]
        out = [clock("stay_hours", self.dt_hours, elapsed, ELAPSED_EDGES[1:-1])]
        # The code counts matter only while codes are written: </code> sets them back to 0, so that
        # in the measurements they are no per-visit fingerprint (measured: kept on, they let the
        # model tell train visits apart and the validation loss rose).
        end_codes = [(self.id_of("</code>"), 0.0)]
        for name, kind in (("diagnoses", T.DX), ("procedures", T.PX)):
            out.append(clock(name, (types == kind).astype(np.float64), end_codes, CODE_CLOCK_EDGES))
        return out

    def covariate_id(self, column: str, value: str | None) -> int:
        ids = self._covariate_ids[column]
        if value is None or value not in ids:
            return self._covariate_unk[column]
        return ids[value]

    def code_id(self, code_type: str, code: str | None) -> int:
        base = self._code_base[code_type]
        codes = self.codes[code_type]
        i = int(np.searchsorted(codes, code)) if code is not None else len(codes)
        return base + 1 + i if i < len(codes) and codes[i] == code else base

    def summary(self) -> dict:
        """Sizes by token type, bins per variable, coverage of the train data."""
        names, counts = np.unique(self.token_types, return_counts=True)
        return {
            "version": self.version,
            "size": self.size,
            "binning": self.config.binning,
            "size_by_type": {TokenType(int(n)).name: int(c) for n, c in zip(names, counts)},
            "bins_per_variable": {
                v.name: (v.bins.n_bins if v.bins is not None else len(v.categories))
                for v in self.variables
            },
            "bins_with_quantiles": int(sum(
                q is not None for v in self.variables if v.bins is not None for q in v.bins.quantiles
            )),
            "coverage": {
                "diagnosis_occurrences": self.fit_stats.get("diagnosis_coverage"),
                "procedure_occurrences": self.fit_stats.get("procedure_coverage"),
                # every train value gets a token (categories are fitted on train, numbers binned)
                "measurement_values": 1.0,
                "measurement_values_clipped": self.fit_stats.get("measurement_values_clipped"),
            },
            "fit": dict(self.fit_stats),
        }

    def __repr__(self) -> str:
        return f"TokenVocabulary(version={self.version!r}, size={self.size})"


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


