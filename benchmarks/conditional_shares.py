"""Conditional shares, real beside synthetic: among the patients satisfying a --where condition, the
share that also satisfy each of a few other conditions.

Real = the train split of a workspace's warehouse (the patients the generator learned from);
synthetic = the Parquet folder of `python -m orchestration.cli generate --where ... --format parquet`.
Both are judged by the same functions (`core/conditions.py`). A group of fewer than 10 real patients
is shown as "<10", never as a share (no figure of fewer than 10 real patients leaves the workspace).

    .venv/bin/python benchmarks/conditional_shares.py --home .synehrgy --synthetic ./emergency \\
        --where admission_type=EMERGENCY
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import pandas as pd

from synehrgy_assets.core.cohort import StagedCohort, load_staged_cohort
from synehrgy_assets.core.conditions import Where, conditional_shares, parse_where
from synehrgy_assets.core.exports import MART_TABLES

OTHERS = ("died=1", "age>=65", "gender=F", "admission_type=EMERGENCY", "first_careunit=MICU", "code=038*")
MIN_PATIENTS = 10


def real_train_cohort(home: Path) -> StagedCohort:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        ids = [r[0] for r in con.execute(
            "select subject_id from synehrgy.patient_split where split = 'train' order by subject_id").fetchall()]
        return load_staged_cohort(con, ids)


def synthetic_cohort(folder: Path) -> StagedCohort:
    return StagedCohort(*(pd.read_parquet(folder / f"{t}.parquet") for t in MART_TABLES))


def _share(shares: dict, key: str) -> str:
    return f"{shares[key]:.1%}" if shares["patients"] >= MIN_PATIENTS else "<10 patients"


def table(real_all: dict, real: dict, synthetic: dict, others) -> str:
    lines = ["| share of patients with | real, all train patients | real, satisfying it | synthetic, generated with it |",
             "|---|---:|---:|---:|",
             f"| (patients) | {real_all['patients']:,} | {real['patients']:,} | {synthetic['patients']:,} |"]
    for other in others:
        lines.append(f"| `{other}` | {_share(real_all, other)} | {_share(real, other)} | {synthetic[other]:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, type=Path, help="the workspace (warehouse.duckdb)")
    parser.add_argument("--synthetic", required=True, type=Path, help="a `generate --format parquet` folder")
    parser.add_argument("--where", action="append", required=True)
    parser.add_argument("--others", nargs="*", default=list(OTHERS))
    args = parser.parse_args()
    where = parse_where(args.where)
    others = [o for o in args.others if parse_where(o).clauses[0].field.name not in
              {c.field.name for c in where.clauses}]
    cohort = real_train_cohort(args.home)
    real_all, real = conditional_shares(cohort, Where(), others), conditional_shares(cohort, where, others)
    synthetic = conditional_shares(synthetic_cohort(args.synthetic), where, others)
    print(f"--where {where}\n\n{table(real_all, real, synthetic, others)}")


if __name__ == "__main__":
    main()
