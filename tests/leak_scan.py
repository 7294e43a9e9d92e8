"""Scan everything that leaves a workspace for real values, not only real ids.

What leaves: the MLflow artifacts (`mlartifacts/`: vocabulary, model config, evaluation tables and
plots' data, the release's tables and card), the MLflow database (params, metrics, tags) and the
Dagster instance (event log with every materialization's and check's metadata, run logs). What
stays: the warehouse, `artifacts/` and `private/` of the workspace.

Needles, from the real warehouse and raw files:
- real DOBs and admission times (as text);
- real per-patient extremes: each patient's minimum and maximum of each variable, when fewer
  than 10 records hold that value and it has enough digits not to collide by chance with a
  legitimate number;
- real (itemid, charttime, valuenum) triples, in the released CHARTEVENTS / LABEVENTS.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

BINARY_SUFFIXES = {".safetensors", ".png", ".pkl", ".db"}


def _sqlite_text(path: Path) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        parts = []
        for (table,) in con.execute("select name from sqlite_master where type = 'table'"):
            for row in con.execute(f'select * from "{table}"'):
                parts.append(" ".join(str(x) for x in row))
        return "\n".join(parts)
    finally:
        con.close()


def what_leaves(home: Path) -> tuple[str, list[pd.DataFrame]]:
    """All text that leaves the workspace, and the released/logged Parquet tables."""
    texts, tables = [], []
    for path in sorted((home / "mlartifacts").rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            tables.append(pd.read_parquet(path))
        elif path.suffix not in BINARY_SUFFIXES:
            texts.append(path.read_text(errors="ignore"))
    for db in [home / "mlflow.db", *sorted((home / "dagster_home").rglob("*.db"))]:
        if db.exists():
            texts.append(_sqlite_text(db))
    for log in sorted((home / "dagster_home").rglob("*")):
        if log.is_file() and log.suffix in {".log", ".out", ".err", ".txt"}:
            texts.append(log.read_text(errors="ignore"))
    return "\n".join(texts), tables


def _long_numbers(values: np.ndarray) -> set[str]:
    """repr of values with at least 5 significant digits (a '120' or '98.6' collides by chance)."""
    out = set()
    for v in np.unique(values[np.isfinite(values)]):
        text = repr(float(v))
        if len(text.replace("-", "").replace(".", "").lstrip("0")) >= 5:
            out.add(text)
    return out


def real_needles(warehouse: Path) -> dict[str, set[str]]:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        dob = con.sql("select distinct strftime(dob, '%Y-%m-%d') as d from main.stg_mimic__patients "
                      "where dob is not null").df()["d"]
        admit = con.sql("select distinct strftime(admittime, '%Y-%m-%d %H:%M') as t from main.stg_mimic__admissions "
                        "where admittime is not null").df()["t"]
        # A patient's extreme identifies when fewer than 10 records hold the value (96 F = 35.5556 C
        # is everywhere), the vocabulary's own rule (each stored number is a mean of 10 values);
        # integers are left out because counts and ids collide with them.
        extremes = con.sql(
            "with ext as (select min(value) as v from main.measurements where value is not null "
            "group by subject_id, variable union select max(value) from main.measurements "
            "where value is not null group by subject_id, variable), "
            "holders as (select value as v, count(*) as n from main.measurements "
            "where value in (select v from ext) group by value) "
            "select v from holders where n < 10 and v <> round(v)").df()["v"]
    return {
        "dob": set(dob),
        "admittime": set(admit),
        "per_patient_extreme": _long_numbers(extremes.to_numpy(float)),
    }


def find_leaks(home: Path, warehouse: Path) -> list[str]:
    """Human-readable leaks found (empty = clean)."""
    import duckdb

    text, tables = what_leaves(home)
    needles = real_needles(warehouse)
    leaks = []
    for kind in ("dob", "admittime", "per_patient_extreme"):
        found = sorted(n for n in needles[kind] if n in text)
        if found:
            leaks.append(f"{len(found)} real {kind} value(s) in logged text, e.g. {found[:3]}")
    table_numbers = set()
    for frame in tables:
        for col in frame.columns:
            if pd.api.types.is_float_dtype(frame[col]):
                table_numbers |= {repr(float(v)) for v in frame[col].dropna().unique()}
    found = sorted(needles["per_patient_extreme"] & table_numbers)
    if found:
        leaks.append(f"{len(found)} real per-patient extreme(s) in logged tables, e.g. {found[:3]}")
    # Real (itemid, charttime, valuenum) triples in released event tables.
    events = [f for f in tables if {"itemid", "charttime", "valuenum"} <= set(f.columns)]
    if events:
        synthetic = pd.concat([f[["itemid", "charttime", "valuenum"]] for f in events], ignore_index=True)
        with duckdb.connect(str(warehouse), read_only=True) as con:
            con.register("synthetic", synthetic)
            n = con.execute(
                "select count(*) from synthetic s join (select itemid, charttime, valuenum from main.stg_mimic__chartevents "
                "union all select itemid, charttime, valuenum from main.stg_mimic__labevents) r "
                "on s.itemid = r.itemid and s.charttime = r.charttime and s.valuenum = r.valuenum").fetchone()[0]
        if n:
            leaks.append(f"{n} released event row(s) equal a real (itemid, charttime, valuenum) triple")
    return leaks
