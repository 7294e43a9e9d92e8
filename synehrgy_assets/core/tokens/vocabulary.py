"""The token vocabulary: token ids, what each token decodes to, and the model's clocks.

Fitted on the train split only (docs/tokens.md section 2; the fit is in `vocab_fit.py`). Holds
aggregates, never patient rows. The fixed scales and the configuration (`vocab_config.py`) and
the numeric bins (`bins.py`) are re-exported here, so `tokens.vocabulary` stays the one import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.output_dirs import write_text_atomic
from synehrgy_assets.core.tokens.bins import NumericBins, VariableSpec, _BinGrid, clipped_quantiles
from synehrgy_assets.core.tokens.grammar import TokenType
from synehrgy_assets.core.tokens.vocab_config import (
    _FORMAT_BEFORE_MIN_PATIENTS,
    AGE_CAP,
    AGE_EDGES,
    CODE_CLOCK_EDGES,
    CODE_TYPES,
    CONDITION_NONE,
    CONTEXT_MARKERS,
    COVARIATES,
    DT_EDGES,
    ELAPSED_EDGES,
    FORMAT,
    GAP_VISIT_EDGES,
    MIN_ROW_GAP_HOURS,
    SPECIAL_TOKENS,
    STAY_OFFSETS,
    UNK,
    T,
    VocabularyConfig,
    _check_variables_table,  # noqa: F401  (re-exported: the seed loader's checks are tested here)
    _parse_edges,  # noqa: F401
    load_variables,
)
from synehrgy_assets.core.tokens.vocab_fit import fit_parts

__all__ = [
    "AGE_CAP", "AGE_EDGES", "CODE_CLOCK_EDGES", "CODE_TYPES", "CONDITION_NONE", "CONTEXT_MARKERS",
    "COVARIATES", "DT_EDGES", "ELAPSED_EDGES", "FORMAT", "GAP_VISIT_EDGES", "MIN_ROW_GAP_HOURS",
    "SPECIAL_TOKENS", "STAY_OFFSETS", "UNK", "NumericBins", "TokenVocabulary", "VariableSpec",
    "VocabularyConfig", "clipped_quantiles", "load_variables",
]


def _canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)


class _IdSpace:
    """The token list while it is built: each token's type, and the quantile row, bounds,
    variable, decoded text and categorical score of the tokens that have them."""

    def __init__(self, k: int):
        self.k = k
        self.tokens: list[str] = []
        self.types: list[int] = []
        self.qrows: list[tuple[int, np.ndarray]] = []  # (token id, quantile row)
        self.bounds: list[tuple[int, float, float]] = []
        self.value_var: dict[int, int] = {}
        self.text: dict[int, str | None] = {}
        self.number: dict[int, float] = {}

    def add(self, name: str, kind: TokenType) -> int:
        self.tokens.append(name)
        self.types.append(int(kind))
        return len(self.tokens) - 1

    def add_scale(self, prefix: str, bins: NumericBins, kind: TokenType) -> int:
        """One token per bin, `prefix//i`; returns the first one's id."""
        table = bins.quantile_table(self.k)
        low, high = bins.bounds()
        base = len(self.tokens)
        for i in range(bins.n_bins):
            tid = self.add(f"{prefix}//{i}", kind)
            self.qrows.append((tid, table[i]))
            self.bounds.append((tid, low[i], high[i]))
        return base


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
        ids = _IdSpace(self.config.within_bin_quantiles)
        for name, kind in zip(SPECIAL_TOKENS, (T.PAD, T.BOS, T.EOS, T.END_COVAR, T.END_LABEL,
                                               T.END_CODE, T.END_TS, T.END_ADM)):
            ids.add(name, kind)
        (self.pad_id, self.bos_id, self.eos_id, self.end_covar_id, self.end_label_id,
         self.end_code_id, self.end_ts_id, self.end_adm_id) = range(len(SPECIAL_TOKENS))
        self.gap_visit_base = ids.add_scale("GAP_VISIT", self.scales["GAP_VISIT"], T.GAP_VISIT)
        self.age_base = ids.add_scale("AGE", self.scales["AGE"], T.AGE)
        self._add_covariates(ids)
        self.mortality_base = ids.add("MORTALITY//0", T.MORTALITY)
        ids.add("MORTALITY//1", T.MORTALITY)
        self.phenotype_base = len(ids.tokens)
        for name in self.phenotypes:
            ids.text[ids.add(f"PHENO//{name}", T.PHENOTYPE)] = name
        self._code_base: dict[str, int] = {}
        for code_type, prefix, kind in CODE_TYPES:
            self._code_base[code_type] = len(ids.tokens)
            ids.text[ids.add(f"{prefix}//{UNK}", kind)] = UNK
            for code in self.codes[code_type]:
                ids.text[ids.add(f"{prefix}//{code}", kind)] = code
        self._add_values(ids)
        self.dt_base = ids.add_scale("DT", self.scales["DT"], T.DT)
        self.skip_visits_id = ids.add(CONTEXT_MARKERS[0], T.SKIP_VISITS)
        self.skip_rows_id = ids.add(CONTEXT_MARKERS[1], T.SKIP_ROWS)
        self.elapsed_base = len(ids.tokens)
        for i in range(len(ELAPSED_EDGES) - 1):
            ids.add(f"ELAPSED//{i}", T.ELAPSED)
        self._index_tokens(ids)
        self._index_variables()

    def _add_covariates(self, ids: _IdSpace) -> None:
        self._covariate_ids: dict[str, dict[str, int]] = {}
        self._covariate_unk: dict[str, int] = {}
        for col, kind in COVARIATES:
            unk = ids.add(f"{col.upper()}//{UNK}", kind)
            ids.text[unk] = None
            col_ids = {}
            for cat in self.covariates[col]:
                col_ids[cat] = ids.add(f"{col.upper()}//{cat}", kind)
                ids.text[col_ids[cat]] = cat
            self._covariate_ids[col] = col_ids
            self._covariate_unk[col] = unk

    def _add_values(self, ids: _IdSpace) -> None:
        """The VALUE tokens: a continuous variable's bins, a categorical one's categories."""
        self.value_base = np.zeros(len(self.variables), dtype=np.int64)
        for j, var in enumerate(self.variables):
            self.value_base[j] = len(ids.tokens)
            if var.kind == "continuous":
                base = ids.add_scale(var.name, var.bins, T.VALUE)
                for tid in range(base, len(ids.tokens)):
                    ids.value_var[tid] = j
            else:
                for cat, score in zip(var.categories, var.category_values):
                    tid = ids.add(f"{var.name}//{cat}", T.VALUE)
                    ids.value_var[tid] = j
                    ids.text[tid] = cat
                    ids.number[tid] = np.nan if score is None else float(score)

    def _index_tokens(self, ids: _IdSpace) -> None:
        """Per-token arrays: type, value rank and variable, bin bounds, quantile row, text, score."""
        tokens = ids.tokens
        if len(set(tokens)) != len(tokens):
            dupes = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"vocabulary: duplicate token strings {dupes[:5]}")
        self.tokens = tokens
        self.size = len(tokens)
        self._ids = {t: i for i, t in enumerate(tokens)}
        self.token_types = np.asarray(ids.types, dtype=np.int8)
        # Values inside a measurement row are ordered by variable *name*: the order the marts
        # loader returns rows in, so encoding needs no sort (and independent of the seed's order).
        names = [v.name for v in self.variables]
        self._rank_of_var = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"),
                                       kind="stable").astype(np.int16)
        self.value_rank = np.full(self.size, -1, dtype=np.int64)
        self.value_var = np.full(self.size, -1, dtype=np.int64)
        for tid, j in ids.value_var.items():
            self.value_rank[tid] = self._rank_of_var[j]
            self.value_var[tid] = j
        self.bin_low = np.full(self.size, np.nan)
        self.bin_high = np.full(self.size, np.nan)
        for tid, lo, hi in ids.bounds:
            self.bin_low[tid], self.bin_high[tid] = lo, hi
        self._qrow = np.full(self.size, -1, dtype=np.int64)
        self._qtable = np.zeros((max(len(ids.qrows), 1), ids.k))
        for r, (tid, row) in enumerate(ids.qrows):
            self._qrow[tid] = r
            self._qtable[r] = row
        self._text = np.full(self.size, None, dtype=object)  # decoded text per token
        self._number = np.full(self.size, np.nan)             # decoded categorical score
        for tid, text in ids.text.items():
            self._text[tid] = text
        for tid, score in ids.number.items():
            self._number[tid] = score

    def _index_variables(self) -> None:
        """Per-variable arrays the encoder's kernels and the decoder read."""
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
        return cls(**fit_parts(train_cohort, config or VocabularyConfig(), variables))

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
        """Write the vocabulary (whole: a reader never sees half a file)."""
        content = {**self.to_dict(), "version": self.version}
        return write_text_atomic(path, json.dumps(content, indent=1, sort_keys=True, allow_nan=False))

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
