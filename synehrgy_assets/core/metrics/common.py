"""Shared pieces of the metrics: the defaults and column groups, the two error types
(`MetricInputError` for input contract violations, `MetricError` for a metric that could not be
computed) and `MetricValue`, `resolve_variables` (the `variables` argument of every metric, through
the one variables loader in `core/variables.py`), the checked column accessors that name the
cohort, table and column of a violation, and two small array helpers used by several metric
modules (binary visit × item matrices, small-cell suppression).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.variables import VARIABLES_CSV, VariablesTableError, check_variables, load_variables


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
# Variables and checked columns
# --------------------------------------------------------------------------------------------


def resolve_variables(variables: pd.DataFrame | Sequence[str] | None) -> pd.DataFrame:
    """None → the seed table; a list of names → those rows of the seed table; a frame → checked.

    The table comes from `core/variables.py` (the loader the tokenizer uses too); its errors are
    re-raised as `MetricInputError`, like every other input contract violation of the metrics.
    """
    try:
        if isinstance(variables, pd.DataFrame):
            return check_variables(variables, "variables argument")
        table = load_variables()
    except VariablesTableError as exc:
        raise MetricInputError(str(exc)) from exc
    if variables is None:
        return table
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


# --------------------------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------------------------


def _binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    # float32 holds code counts exactly and halves the memory traffic of the set distances.
    matrix = sp.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape).tocsr()
    matrix.data[:] = 1.0  # duplicates were summed; presence is what counts
    return matrix


def _suppress(counts: np.ndarray, min_cell_count: int) -> tuple[np.ndarray, np.ndarray]:
    small = (counts > 0) & (counts < min_cell_count)
    return np.where(small, 0, counts), small
