"""Conditions on patients (`generate --where`): a small grammar, the patients of a cohort that
satisfy a condition, and conditional shares to compare real and synthetic patients with.

Grammar (case-insensitive field names; values compared case-insensitively)::

    where   := clause (("," | ";" | " and ") clause)*     several --where flags are ANDed too
    clause  := field op value ("|" value)*                 "|" = any of these values
    op      := "=" | "!=" | ">=" | "<=" | ">" | "<"        the order ops only for numbers (age)

Fields (FIELDS): the header of an ICU stay (`age`, `gender`, `ethnicity`, `insurance`,
`admission_type`, `first_careunit`, `died`) and codes (`code`, `diagnosis`, `procedure`: an ICD-9
code, or a prefix ending in `*`). A patient satisfies a clause when at least one of the patient's
ICU stays does (for `!=`: a stay whose value differs; for a code: `code!=038*` = no such code),
except `gender`, a patient's attribute, which every stay must satisfy (a generated patient whose
stays disagree satisfies neither `gender=F` nor `gender=M`); and a condition when it satisfies
every clause; so `age>=65, died=1` = patients with a stay at 65 or over and an in-hospital death.

The same functions judge real and synthetic cohorts (both are `StagedCohort`s), so the shares
compared in docs/consumers.md come from one definition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

NUMBER_OPS = ("=", "!=", ">=", "<=", ">", "<")
EQUALITY_OPS = ("=", "!=")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # number | category | flag | code
    column: str  # visits column, or the code_type for codes ("" = either type)
    help: str
    every_stay: bool = False  # a patient's attribute: every stay must satisfy the clause, not one

    @property
    def ops(self) -> tuple[str, ...]:
        return NUMBER_OPS if self.kind == "number" else EQUALITY_OPS


FIELDS: dict[str, FieldSpec] = {f.name: f for f in (
    FieldSpec("age", "number", "age_years", "age in years at an ICU stay (>89 is written 90)"),
    FieldSpec("gender", "category", "gender", "F or M", every_stay=True),
    FieldSpec("ethnicity", "category", "ethnicity_group", "WHITE, BLACK, HISPANIC, ASIAN, OTHER, UNKNOWN"),
    FieldSpec("insurance", "category", "insurance", "Medicare, Private, ..."),
    FieldSpec("admission_type", "category", "admission_type", "EMERGENCY, ELECTIVE, URGENT, NEWBORN"),
    FieldSpec("first_careunit", "category", "first_careunit", "MICU, SICU, CCU, CSRU, TSICU, ..."),
    FieldSpec("died", "flag", "mortality_inhospital", "1 = died in hospital during a stay, 0 = survived one"),
    FieldSpec("code", "code", "", "an ICD-9 diagnosis or procedure code; 038* = any code starting 038"),
    FieldSpec("diagnosis", "code", "diagnosis", "an ICD-9 diagnosis code or prefix*"),
    FieldSpec("procedure", "code", "procedure", "an ICD-9 procedure code or prefix*"),
)}
ALIASES = {"mortality": "died", "mortality_inhospital": "died", "age_years": "age", "sex": "gender",
           "ethnicity_group": "ethnicity", "careunit": "first_careunit", "icd9_code": "code", "dx": "diagnosis",
           "px": "procedure"}

_CLAUSE = re.compile(r"^\s*([A-Za-z_]+)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")
_SPLIT = re.compile(r"\s*[,;]\s*|\s+and\s+", re.IGNORECASE)


class WhereError(ValueError):
    """A condition that cannot be parsed or cannot be met; the message names the clause and field."""


def valid_fields() -> str:
    return ", ".join(list(FIELDS) + [f"{a} (= {f})" for a, f in ALIASES.items()])


@dataclass(frozen=True)
class Clause:
    field: FieldSpec
    op: str
    values: tuple  # floats for numbers, upper-case strings otherwise

    def __str__(self) -> str:
        shown = [f"{v:g}" if isinstance(v, float) else v for v in self.values]
        return f"{self.field.name}{self.op}{'|'.join(shown)}"


@dataclass(frozen=True)
class Where:
    clauses: tuple[Clause, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.clauses)

    def __str__(self) -> str:
        return " AND ".join(str(c) for c in self.clauses) or "(none)"


def parse_clause(text: str) -> Clause:
    match = _CLAUSE.match(text)
    if not match:
        raise WhereError(f"--where {text!r}: expected <field><op><value> with op one of {' '.join(NUMBER_OPS)}, "
                         f"e.g. age>=65 or code=038*; fields: {valid_fields()}")
    name, op, raw = match.group(1).lower(), match.group(2), match.group(3)
    spec = FIELDS.get(ALIASES.get(name, name))
    if spec is None:
        raise WhereError(f"--where {text!r}: unknown field {name!r}; valid fields: {valid_fields()}")
    if op not in spec.ops:
        raise WhereError(f"--where {text!r}: {spec.name} takes {' or '.join(spec.ops)}, not {op}")
    parts = [p.strip() for p in raw.split("|")]
    if not raw or any(not p for p in parts):
        raise WhereError(f"--where {text!r}: {spec.name} needs a value ({spec.help})")
    if spec.kind == "number":
        if op not in EQUALITY_OPS and len(parts) > 1:
            raise WhereError(f"--where {text!r}: {op} takes one number")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise WhereError(f"--where {text!r}: {spec.name} is a number, got {raw!r}") from None
    elif spec.kind == "flag":
        if any(p not in ("0", "1") for p in parts):
            raise WhereError(f"--where {text!r}: {spec.name} is 0 or 1, got {raw!r}")
        values = tuple(float(p) for p in parts)
    else:
        values = tuple(p.upper() for p in parts)
        if spec.kind == "code" and any("*" in v[:-1] for v in values):
            raise WhereError(f"--where {text!r}: a code prefix has one '*', at its end (e.g. 038*)")
    return Clause(spec, op, values)


def parse_where(where: str | Iterable[str] | None) -> Where:
    """`Where` from a string or from several (each possibly holding several clauses), ANDed."""
    if where is None:
        return Where()
    texts = [where] if isinstance(where, str) else list(where)
    clauses = [parse_clause(part) for text in texts for part in _SPLIT.split(str(text)) if part.strip()]
    return Where(tuple(clauses))


def _code_values(vocabulary, spec: FieldSpec) -> list[str]:
    types = [spec.column] if spec.column else ["diagnosis", "procedure"]
    return [str(code).upper() for t in types for code in vocabulary.codes[t]]


def _matches(code: str, pattern: str) -> bool:
    return code.startswith(pattern[:-1]) if pattern.endswith("*") else code == pattern


def check_against_vocabulary(where: Where, vocabulary) -> None:
    """Refuse values the generator cannot write (a category it has no token for, a code or prefix that
    matches none of its codes): such a condition is never met, whatever the budget."""
    for clause in where.clauses:
        spec = clause.field
        if spec.kind == "category":
            known = sorted({str(v).upper() for v in vocabulary._covariate_ids[spec.column]})
            missing = [v for v in clause.values if v not in known]
            if missing:
                raise WhereError(f"--where {clause}: the generator knows no {spec.name} {', '.join(missing)}; "
                                 f"known: {', '.join(known)}")
        elif spec.kind == "code":
            codes = _code_values(vocabulary, spec)
            missing = [v for v in clause.values if not any(_matches(c, v) for c in codes)]
            if missing and clause.op == "=":
                kind = f"{spec.column} code" if spec.column else "code"
                raise WhereError(f"--where {clause}: no {kind} of the generator's vocabulary matches "
                                 f"{', '.join(missing)} ({len(codes)} codes known; a prefix ends with *)")


def _stay_mask(clause: Clause, visits: pd.DataFrame) -> np.ndarray:
    spec = clause.field
    column = visits[spec.column]
    if spec.kind in ("number", "flag"):
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        if clause.op in EQUALITY_OPS:
            hit = np.isin(values, np.asarray(clause.values))
        else:
            bound = clause.values[0]
            hit = {">=": values >= bound, "<=": values <= bound, ">": values > bound, "<": values < bound}[clause.op]
        hit &= ~np.isnan(values)
    else:
        text = column.astype("object").where(column.notna(), None)
        hit = np.array([v is not None and str(v).upper() in clause.values for v in text], dtype=bool)
        if clause.op == "!=":
            hit = np.array([v is not None for v in text], dtype=bool) & ~hit
    return hit


def _code_patients(clause: Clause, codes: pd.DataFrame) -> set:
    spec = clause.field
    rows = codes if not spec.column else codes[codes["code_type"] == spec.column]
    text = rows["icd9_code"].astype("str").str.upper()
    hit = np.zeros(len(rows), dtype=bool)
    for pattern in clause.values:
        hit |= (text.str.startswith(pattern[:-1]) if pattern.endswith("*") else text == pattern).to_numpy()
    return set(rows.loc[hit, "subject_id"].tolist())


def satisfying_patients(where: Where, cohort) -> np.ndarray:
    """Subject ids of `cohort` (a StagedCohort) that satisfy every clause, in order of first appearance."""
    subjects = pd.unique(cohort.visits["subject_id"])
    keep = np.ones(len(subjects), dtype=bool)
    for clause in where.clauses:
        if clause.field.kind == "code":
            with_code = _code_patients(Clause(clause.field, "=", clause.values), cohort.visit_codes)
            hit = np.isin(subjects, list(with_code))
            keep &= ~hit if clause.op == "!=" else hit
        else:
            hit = _stay_mask(clause, cohort.visits)
            stay_subjects = cohort.visits["subject_id"].to_numpy()
            if clause.field.every_stay:
                keep &= ~np.isin(subjects, stay_subjects[~hit])
            else:
                keep &= np.isin(subjects, stay_subjects[hit])
    return subjects[keep]


def conditional_shares(cohort, where: Where, others: Iterable[str]) -> dict[str, float | int]:
    """Among the patients of `cohort` that satisfy `where`: their number, and the share of them that
    also satisfy each condition of `others` (strings in the --where grammar)."""
    base = satisfying_patients(where, cohort)
    out: dict[str, float | int] = {"patients": int(len(base))}
    for other in others:
        both = satisfying_patients(Where(where.clauses + parse_where(other).clauses), cohort)
        out[other] = float(len(both) / len(base)) if len(base) else float("nan")
    return out
