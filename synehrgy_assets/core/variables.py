"""The variables seed (`dbt_mimic/seeds/variables.csv`): the one loader for the tokenizer and the metrics.

Holds the seed path, the column contract (required: `variable`, `kind`, `valid_low`, `valid_high`,
`clinical_edges`; optional, with defaults: `label` → the variable name, `unit` → ""), `load_variables`
(read the CSV and check it), `check_variables` (the same checks on a table built in code) and
`parse_edges` (space-separated `clinical_edges` text → sorted floats). A checked table has exactly
the columns of `VARIABLE_COLUMNS`, one row per variable, float bounds with `valid_low < valid_high`
and `clinical_edges` as lists of floats; rows keep their order unless `sort_by_name` (the tokenizer's
order: its token ids follow it). Every error is a `VariablesTableError` (a ValueError) naming the
file or table, the column, the offending variables and what was expected.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from synehrgy_assets.core.cohort import SEEDS_DIR

VARIABLES_CSV = SEEDS_DIR / "variables.csv"
REQUIRED_COLUMNS = ("variable", "kind", "valid_low", "valid_high", "clinical_edges")
OPTIONAL_COLUMNS = ("label", "unit")
VARIABLE_COLUMNS = ["variable", "label", "kind", "unit", "valid_low", "valid_high", "clinical_edges"]
KINDS = ("continuous", "categorical")
_TEXT_COLUMNS = {"variable": str, "label": str, "kind": str, "unit": str, "clinical_edges": str}


class VariablesTableError(ValueError):
    """The variables table breaks its column contract."""


def load_variables(path: str | Path | None = None, *, sort_by_name: bool = False) -> pd.DataFrame:
    """The variables table at `path` (default: the dbt seed), checked by `check_variables`."""
    path = Path(path) if path is not None else VARIABLES_CSV
    table = pd.read_csv(path, dtype=_TEXT_COLUMNS)
    return check_variables(table, origin=str(path), sort_by_name=sort_by_name)


def check_variables(
    table: pd.DataFrame, origin: str = "variables table", *, sort_by_name: bool = False
) -> pd.DataFrame:
    """A checked copy of `table` with the `VARIABLE_COLUMNS` (see the module docstring)."""
    if not isinstance(table, pd.DataFrame):
        raise VariablesTableError(f"{origin}: expected a DataFrame, got {type(table).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise VariablesTableError(
            f"{origin}: variables table lacks column(s) {missing}; expected {list(REQUIRED_COLUMNS)} "
            f"(optional: {list(OPTIONAL_COLUMNS)})"
        )
    table = table.reset_index(drop=True)
    out = pd.DataFrame(index=table.index)
    name = table["variable"]
    empty = name.isna() | (name.astype(str).str.strip() == "")
    if empty.any():
        raise VariablesTableError(
            f"{origin}: variables table column 'variable' is null or empty in {int(empty.sum())} row(s); "
            "expected a name on every row"
        )
    out["variable"] = name.astype(str)
    duplicated = out["variable"].duplicated()
    if duplicated.any():
        dup = sorted(set(out.loc[duplicated, "variable"]))
        raise VariablesTableError(
            f"{origin}: variables table column 'variable' has duplicated name(s) {dup}; expected one row per variable"
        )
    out["label"] = (table["label"].fillna(out["variable"]).astype(str) if "label" in table.columns
                    else out["variable"])
    kind = table["kind"].astype("object")
    bad_kind = ~kind.isin(KINDS)
    if bad_kind.any():
        raise VariablesTableError(
            f"{origin}: variables table column 'kind' has value(s) {sorted(set(kind[bad_kind].astype(str)))} "
            f"(variable(s) {_names(out, bad_kind)}); expected 'continuous' or 'categorical'"
        )
    out["kind"] = kind.astype(str)
    out["unit"] = table["unit"].fillna("").astype(str) if "unit" in table.columns else ""
    for column in ("valid_low", "valid_high"):
        values = pd.to_numeric(table[column], errors="coerce").astype(float)
        bad = values.isna() | ~np.isfinite(values)
        if bad.any():
            raise VariablesTableError(
                f"{origin}: variables table column '{column}' is not a finite number for variable(s) "
                f"{_names(out, bad)}; expected numbers with valid_low < valid_high"
            )
        out[column] = values
    inverted = out["valid_low"] >= out["valid_high"]
    if inverted.any():
        raise VariablesTableError(
            f"{origin}: variables table columns 'valid_low'/'valid_high' have valid_low >= valid_high for "
            f"variable(s) {_names(out, inverted)}; expected valid_low < valid_high"
        )
    out["clinical_edges"] = [parse_edges(v, n, origin) for v, n in zip(table["clinical_edges"], out["variable"])]
    if sort_by_name:
        out = out.sort_values("variable", kind="stable")
    return out[VARIABLE_COLUMNS].reset_index(drop=True)


def parse_edges(value, variable: str | None = None, origin: str = "variables table") -> list[float]:
    """`clinical_edges` of one variable → sorted floats: empty (NULL, "", NaN) → [], space-separated
    numbers or a list of numbers → those numbers, anything else → `VariablesTableError`."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return []
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else str(value).split()
    try:
        edges = sorted(float(v) for v in items)
    except (TypeError, ValueError):
        edges = None
    if edges is None or not all(math.isfinite(e) for e in edges):
        raise VariablesTableError(
            f"{origin}: column 'clinical_edges' of '{variable}' is not space-separated finite numbers: {value!r}"
        )
    return edges


def _names(table: pd.DataFrame, mask: pd.Series) -> list[str]:
    return sorted(table.loc[mask.to_numpy(), "variable"].astype(str))


# ----------------------------------------------------------------------------------------------
# Relations between measurements charted together (`dbt_mimic/seeds/variable_relations.csv`)

RELATIONS_CSV = SEEDS_DIR / "variable_relations.csv"
RELATION_KINDS = ("less_than", "sum_of")


def load_relations(path: str | Path | None = None, variables: list[str] | None = None) -> list[dict]:
    """The relations seed as plain dicts, checked; relations naming a variable outside `variables`
    (when given) are left out, so a custom variable set needs no matching relations file.

    `less_than`: {"kind", "lower", "upper", "margin"}; `sum_of`: {"kind", "total", "parts"}.
    """
    path = Path(path) if path is not None else RELATIONS_CSV
    table = pd.read_csv(path, dtype=str)
    missing = [c for c in ("relation", "variable", "other") if c not in table.columns]
    if missing:
        raise VariablesTableError(f"{path}: relations table lacks column(s) {missing}; expected "
                                  "relation, variable, other[, margin]")
    known = None if variables is None else set(variables)
    out = []
    for i, row in table.iterrows():
        kind = str(row["relation"]).strip()
        if kind not in RELATION_KINDS:
            raise VariablesTableError(f"{path}: line {i + 2}: column 'relation' is {kind!r}; "
                                      f"expected one of {list(RELATION_KINDS)}")
        names = [str(row["variable"]).strip(), *str(row["other"]).split()]
        if known is not None and not set(names) <= known:
            continue
        margin = pd.to_numeric(row.get("margin"), errors="coerce")
        margin = 0.0 if pd.isna(margin) else float(margin)
        if margin < 0:
            raise VariablesTableError(f"{path}: line {i + 2}: column 'margin' must be >= 0, got {margin}")
        if kind == "less_than":
            if len(names) != 2:
                raise VariablesTableError(f"{path}: line {i + 2}: a less_than relation names exactly one "
                                          f"'other' variable, got {names[1:]}")
            out.append({"kind": kind, "lower": names[0], "upper": names[1], "margin": margin})
        else:
            if len(names) < 3:
                raise VariablesTableError(f"{path}: line {i + 2}: a sum_of relation needs at least two "
                                          f"parts in 'other', got {names[1:]}")
            out.append({"kind": kind, "total": names[0], "parts": names[1:]})
    return out
