"""The staged cohort: the four dbt marts as pandas frames (see docs/architecture.md).

Real and synthetic cohorts share this shape, so the tokenizer, decoder and metrics all take and
return a `StagedCohort`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]
SEEDS_DIR = REPO_ROOT / "dbt_mimic" / "seeds"

VISIT_COLUMNS = [
    "subject_id", "hadm_id", "icustay_id", "visit_index", "intime", "outtime", "admittime",
    "dischtime", "los_hours", "hours_since_previous_visit", "age_years", "age_is_capped", "gender",
    "ethnicity_group", "insurance", "admission_type", "first_careunit", "icu_database",
    "mortality_inhospital",
]
# Columns a cohort may lack (a hand-built frame, a cohort written before they existed): readers
# treat them as NULL. The marts always have them.
OPTIONAL_VISIT_COLUMNS = ("admittime", "dischtime", "icu_database")
CODE_COLUMNS = ["subject_id", "icustay_id", "code_type", "icd9_code", "seq_num"]
PHENOTYPE_COLUMNS = ["subject_id", "icustay_id", "phenotype"]
MEASUREMENT_COLUMNS = ["subject_id", "icustay_id", "hours", "variable", "value", "value_text"]

MART_COLUMNS = {
    "visits": VISIT_COLUMNS,
    "visit_codes": CODE_COLUMNS,
    "visit_phenotypes": PHENOTYPE_COLUMNS,
    "measurements": MEASUREMENT_COLUMNS,
}


@dataclass
class StagedCohort:
    """Marts-shaped frames for one set of patients (real or synthetic)."""

    visits: pd.DataFrame
    visit_codes: pd.DataFrame
    visit_phenotypes: pd.DataFrame
    measurements: pd.DataFrame

    @property
    def n_patients(self) -> int:
        return int(self.visits["subject_id"].nunique())

    def subset(self, subject_ids) -> "StagedCohort":
        """The same cohort restricted to `subject_ids`."""
        keep = pd.Index(subject_ids)
        return StagedCohort(
            *(frame[frame["subject_id"].isin(keep)].reset_index(drop=True) for frame in self.frames())
        )

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return self.visits, self.visit_codes, self.visit_phenotypes, self.measurements

    def validate_columns(self, origin: str = "cohort") -> None:
        """Raise a ValueError naming the frame and the missing columns, if any."""
        for (name, expected), frame in zip(MART_COLUMNS.items(), self.frames()):
            optional = OPTIONAL_VISIT_COLUMNS if name == "visits" else ()
            missing = [c for c in expected if c not in frame.columns and c not in optional]
            if missing:
                raise ValueError(
                    f"{origin}: table '{name}' lacks column(s) {missing}; expected {expected}"
                )


MART_ORDER = {
    "visits": ["subject_id", "visit_index"],
    "visit_codes": ["subject_id", "icustay_id", "code_type", "seq_num"],
    "visit_phenotypes": ["subject_id", "icustay_id", "phenotype"],
    "measurements": ["subject_id", "icustay_id", "hours", "variable"],
}
# Measurements are ~10^7-10^8 rows: their text columns are read as category codes (computed by
# DuckDB) and become pandas Categoricals, ~10x faster than one Python string per row.
CATEGORICAL_TEXT = ("variable", "value_text")
# Below this share of the patients in a block's subject_id range, DuckDB filters (semi-join)
# and sorts the block's measurements; above it the range is scanned in stored order and
# filtered in numpy, with no sort at all.
_SQL_FILTER_SHARE = 0.25


def load_staged_cohort(con, subject_ids=None, schema: str = "main") -> StagedCohort:
    """Read the four marts from an open DuckDB connection, optionally for some patients only.

    Every frame comes back ordered by `MART_ORDER` (patient, visit, time, variable name), so
    encoding is reproducible and needs no sort. The dbt `measurements` mart is written in that
    order; it is read in its stored order and only sorted here if it turns out not to be.
    Measurement `variable` and `value_text` are Categoricals with sorted categories.
    """
    with MartReader(con, subject_ids, schema) as reader:
        return reader.load(reader.blocks(1)[0])


class MartReader:
    """Reads the marts for blocks of patients, from several threads at once if wanted.

    Each thread gets its own DuckDB cursor. A block is read with a subject_id range predicate,
    which keeps the stored order and lets DuckDB skip row groups outside the range (the marts
    are written in subject_id order). `blocks(n)` cuts the wanted patients into n blocks.
    """

    def __init__(self, con, subject_ids=None, schema: str = "main"):
        self.con, self.schema = con, schema
        self.all_subjects = con.sql(
            f"select distinct subject_id from {schema}.visits order by subject_id"
        ).fetchnumpy()["subject_id"].astype(np.int64)
        if subject_ids is not None and not isinstance(subject_ids, (np.ndarray, pd.Index, pd.Series)):
            subject_ids = list(subject_ids)  # sets, generators
        self.ids = None if subject_ids is None else np.unique(np.asarray(subject_ids, dtype=np.int64))
        self._select = self._measurement_select()
        self._local = threading.local()
        self._cursors: list = []
        self._lock = threading.Lock()

    def __enter__(self) -> "MartReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()

    def _cursor(self):
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self.con.cursor()
            with self._lock:
                self._cursors.append(cursor)
        return cursor

    def _measurement_select(self) -> str:
        """SELECT list of the measurements: text columns as int16 category codes (-1: NULL).

        A constant MAP lookup costs about a third of a cast to ENUM (and half of
        `list_position`) and far less than materializing the strings."""
        table = f"{self.schema}.measurements"
        aggregates = ", ".join(f"array_agg(distinct {c} order by {c}) filter (where {c} is not null)"
                               for c in CATEGORICAL_TEXT)
        distinct = dict(zip(CATEGORICAL_TEXT, self.con.sql(f"select {aggregates} from {table}").fetchall()[0]))
        select = []
        self._categories: dict[str, list[str]] = {}
        for col in MART_COLUMNS["measurements"]:
            if col in CATEGORICAL_TEXT:
                values = [str(v) for v in distinct[col] or []]
                if len(values) >= 2**15 - 1:
                    raise ValueError(f"table 'measurements': column '{col}' has {len(values)} "
                                     "distinct values; expected a short list of names/categories")
                self._categories[col] = values
                if not values:
                    select.append(f"cast(-1 as smallint) as {col}")
                    continue
                entries = ", ".join("'" + v.replace("'", "''") + f"': {i}" for i, v in enumerate(values))
                select.append(f"cast(coalesce((map {{{entries}}})[{col}], -1) as smallint) as {col}")
            else:
                select.append(col)
        return ", ".join(select)

    def blocks(self, n_blocks: int) -> list["PatientBlock"]:
        """The wanted patients in up to `n_blocks` contiguous subject_id ranges.

        For "every patient" the ranges tile the whole subject_id line, so rows of a subject
        without a visit are still read (and then reported by the encoder).
        """
        if self.ids is None:
            cuts = [int(b[0]) for b in np.array_split(self.all_subjects, max(n_blocks, 1))[1:] if len(b)]
            bounds = [None, *cuts, None]
            return [PatientBlock(None, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        return [PatientBlock(b, int(b[0]), int(b[-1]) + 1)
                for b in np.array_split(self.ids, max(n_blocks, 1)) if len(b)] or [
                    PatientBlock(self.ids, 0, 0)]

    def load(self, block: "PatientBlock", check_order: bool = True) -> StagedCohort:
        """The marts for one block of patients, ordered by `MART_ORDER`.

        With `check_order=False` the measurements come in the mart's stored order without the
        check (for readers, like the encoder, that verify the order they need themselves).
        """
        con = self._cursor()
        where, params = block.where()
        frames = []
        for name in ("visits", "visit_codes", "visit_phenotypes"):
            cols, order = ", ".join(MART_COLUMNS[name]), ", ".join(MART_ORDER[name])
            # Arrow then pandas: same dtypes as .df(), several times faster for text columns.
            frame = con.sql(f"select {cols} from {self.schema}.{name} where {where} "
                            f"order by {order}", params=params).to_arrow_table().to_pandas()
            frames.append(block.filter(frame))
        frames.append(self._load_measurements(con, block, where, params, check_order))
        return StagedCohort(*frames)

    def _n_in_range(self, block: "PatientBlock") -> int:
        lo = 0 if block.lo is None else np.searchsorted(self.all_subjects, block.lo)
        hi = len(self.all_subjects) if block.hi is None else np.searchsorted(self.all_subjects, block.hi)
        return int(hi - lo)

    def _load_measurements(self, con, block: "PatientBlock", where: str, params: list,
                           check_order: bool) -> pd.DataFrame:
        table = f"{self.schema}.measurements"
        order = ", ".join(MART_ORDER["measurements"])

        def sorted_by_duckdb() -> pd.DataFrame:
            wanted = ""
            if block.ids is not None:
                con.register("_wanted_subjects", pd.DataFrame({"subject_id": block.ids}))
                wanted = " and subject_id in (select subject_id from _wanted_subjects)"
            try:
                rel = con.sql(f"select {self._select} from {table} where {where}{wanted} "
                              f"order by {order}", params=params)
                return _arrow_frame(rel.to_arrow_table(), self._categories)
            finally:
                if block.ids is not None:
                    con.unregister("_wanted_subjects")

        if block.ids is not None and len(block.ids) < _SQL_FILTER_SHARE * max(self._n_in_range(block), 1):
            return sorted_by_duckdb()
        # No ORDER BY: DuckDB returns the table in its stored (insertion) order. Arrow, then
        # pandas, is several times faster than .df() for an order-preserving result.
        frame = _arrow_frame(con.sql(f"select {self._select} from {table} where {where}",
                                     params=params).to_arrow_table(), self._categories, block.ids)
        if check_order and not _is_sorted(frame, MART_ORDER["measurements"]):
            return sorted_by_duckdb()  # a mart not written in order (older warehouse, other writer)
        return frame


@dataclass
class PatientBlock:
    """Patients with lo <= subject_id < hi (None: open end); `ids`: only these (None: all)."""

    ids: np.ndarray | None
    lo: int | None
    hi: int | None

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        if self.lo is not None:
            clauses.append("subject_id >= ?")
            params.append(self.lo)
        if self.hi is not None:
            clauses.append("subject_id < ?")
            params.append(self.hi)
        return (" and ".join(clauses) or "true"), params

    def filter(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.ids is None:
            return frame
        keep = _rows_of_subjects(frame["subject_id"].to_numpy(), self.ids)
        return frame if keep.all() else frame[keep].reset_index(drop=True)


def _arrow_frame(table, categories: dict[str, list[str]], ids: np.ndarray | None = None
                 ) -> pd.DataFrame:
    """A DuckDB Arrow result as a pandas frame, keeping only rows of `ids` (None: all).

    Columns named in `categories` hold category codes and become Categoricals. Built column by
    column from numpy: filtering before the frame exists costs one compress per column instead
    of a pandas take over every column.
    """
    # ChunkedArray.to_numpy() concatenates the chunks; NULL becomes NaN, as in DuckDB's .df().
    keep = None
    if ids is not None:
        keep = _rows_of_subjects(table.column("subject_id").to_numpy(), ids)
        if keep.all():
            keep = None
    columns = {}
    for name in table.column_names:
        values = table.column(name).to_numpy()
        if keep is not None:
            values = values[keep]
        if name in categories:
            values = pd.Categorical.from_codes(values, dtype=pd.CategoricalDtype(categories[name]))
        columns[name] = values
    return pd.DataFrame(columns, copy=False)


def _rows_of_subjects(subject: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Boolean row mask of `subject` in `ids`; one isin per run of equal subject_id."""
    n = len(subject)
    if n == 0:
        return np.ones(0, dtype=bool)
    heads = np.concatenate([[0], np.flatnonzero(subject[1:] != subject[:-1]) + 1])
    return np.repeat(np.isin(subject[heads], ids), np.diff(np.append(heads, n)))


def _is_sorted(frame: pd.DataFrame, keys: list[str]) -> bool:
    """Lexicographic order of `keys` (Categoricals by their codes), vectorized; NULL: False."""
    if len(frame) < 2:
        return True
    tied = np.ones(len(frame) - 1, dtype=bool)
    for key in keys:
        col = frame[key]
        if isinstance(col.dtype, pd.CategoricalDtype):
            if not col.cat.categories.is_monotonic_increasing:
                return False
            values = col.cat.codes.to_numpy()
            if np.any(values < 0):
                return False
        else:
            try:
                values = col.to_numpy(dtype=np.float64 if col.dtype.kind == "f" else None)
            except (TypeError, ValueError):
                return False
            if values.dtype.kind not in "iuf" or (values.dtype.kind == "f" and np.isnan(values).any()):
                return False
        later, earlier = values[1:], values[:-1]
        if np.any(tied & (later < earlier)):
            return False
        tied &= later == earlier
        if not tied.any():
            return True
    return True
