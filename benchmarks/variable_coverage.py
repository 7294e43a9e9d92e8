"""How many raw measurement rows the variable set maps, before and after a change of the seeds.

    python benchmarks/variable_coverage.py --mimic-dir ../shared/data/mimic-iii-demo \
        --before 4d1ede5 [--benchmark-map PATH/itemid_to_variable_map.csv]

Reads CHARTEVENTS and LABEVENTS with DuckDB (ITEMID only) and the seed `variable_itemids.csv` of
this checkout ("after") and of a git revision ("before"), and prints markdown tables:

* the share of all CHARTEVENTS / LABEVENTS rows whose ITEMID the seed maps to a variable;
* per clinical concept of the mimic3-benchmarks item map (its LEVEL2 names, blood and charted
  items only, rows of items it marks `ignore` left out): the concept's rows, and the share whose
  ITEMID the seed maps ("the rows of the chosen items that the variable set keeps").

It counts raw rows, before staging's stay, window and range filters (the staging audit,
docs/staging.md, has what is kept after them). The demo is open data; run it on credentialed data
only inside the workspace.
"""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import duckdb
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SEED = "dbt_mimic/seeds/variable_itemids.csv"
CSV = "header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"'"
# benchmark concept (LEVEL2) -> the variable(s) of the default seed that hold it
CONCEPTS = {
    "Capillary refill rate": ["capillary_refill_rate"], "Diastolic blood pressure": ["diastolic_blood_pressure",
    "arterial_diastolic_blood_pressure"], "Fraction inspired oxygen": ["fraction_inspired_oxygen"],
    "Glascow coma scale eye opening": ["gcs_eye_opening"], "Glascow coma scale motor response": ["gcs_motor_response"],
    "Glascow coma scale total": ["gcs_total"], "Glascow coma scale verbal response": ["gcs_verbal_response"],
    "Glucose": ["glucose"], "Heart Rate": ["heart_rate"], "Height": ["height"],
    "Mean blood pressure": ["mean_blood_pressure", "arterial_mean_blood_pressure"],
    "Oxygen saturation": ["oxygen_saturation", "arterial_oxygen_saturation"], "Respiratory rate": ["respiratory_rate"],
    "Systolic blood pressure": ["systolic_blood_pressure", "arterial_systolic_blood_pressure"],
    "Temperature": ["temperature"], "Weight": ["weight"], "pH": ["ph"], "Sodium": ["sodium"],
    "Potassium": ["potassium"], "Creatinine": ["creatinine"], "Blood urea nitrogen": ["blood_urea_nitrogen"],
    "Bicarbonate": ["bicarbonate"], "Chloride": ["chloride"], "Hemoglobin": ["hemoglobin"], "Platelets": ["platelets"],
    "White blood cell count": ["white_blood_cell_count"], "Lactate": ["lactate"],
    "Partial pressure of oxygen": ["partial_pressure_o2"], "Partial pressure of carbon dioxide": ["partial_pressure_co2"],
    "Magnesium": ["magnesium"], "Troponin-I": ["troponin_i"], "Troponin-T": ["troponin_t"], "Bilirubin": ["bilirubin"],
}


def seed_at(revision: str | None) -> pd.DataFrame:
    """The ITEMID seed of this checkout (None) or of a git revision."""
    if revision is None:
        text = (REPO / SEED).read_text()
    else:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{SEED}"], check=True,
                              capture_output=True, text=True).stdout
    return pd.read_csv(io.StringIO(text))


def item_counts(con, mimic_dir: Path) -> pd.DataFrame:
    """Rows per (source_table, itemid) of the raw CHARTEVENTS and LABEVENTS."""
    frames = []
    for table in ("chartevents", "labevents"):
        path = next((p for p in mimic_dir.iterdir() if p.name.lower() in (f"{table}.csv.gz", f"{table}.csv")), None)
        if path is None:
            raise FileNotFoundError(f"{mimic_dir}: no {table.upper()}.csv(.gz)")
        frames.append(con.sql(f"select '{table}' as source_table, try_cast(itemid as integer) as itemid, "
                              f"count(*) as n from read_csv('{path}', {CSV}) group by all").df())
    return pd.concat(frames, ignore_index=True)


def _share(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.1f} %)" if total else "0"


def table_shares(counts: pd.DataFrame, seeds: dict[str, pd.DataFrame]) -> str:
    lines = ["| rows | " + " | ".join(f"mapped, {name}" for name in seeds) + " | all rows |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for table in ("chartevents", "labevents"):
        rows = counts[counts["source_table"] == table]
        cells = []
        for seed in seeds.values():
            mapped = set(seed.loc[seed["source_table"] == table, "itemid"])
            cells.append(_share(int(rows.loc[rows["itemid"].isin(mapped), "n"].sum()), int(rows["n"].sum())))
        lines.append(f"| {table.upper()} | " + " | ".join(cells) + f" | {int(rows['n'].sum()):,} |")
    return "\n".join(lines)


def concept_shares(counts: pd.DataFrame, seeds: dict[str, pd.DataFrame], benchmark_map: Path) -> str:
    ref = pd.read_csv(benchmark_map, dtype=str)
    ref = ref[ref["LEVEL2"].isin(CONCEPTS) & (ref["STATUS"] != "ignore")
              & ref["LINKSTO"].isin(["chartevents", "labevents"])
              & (ref["FLUID"].isna() | (ref["FLUID"].str.upper() == "BLOOD"))]
    ref = ref.assign(itemid=ref["ITEMID"].astype(int), source_table=ref["LINKSTO"])
    rows = ref.merge(counts, on=["source_table", "itemid"], how="left").fillna({"n": 0})
    lines = ["| concept (benchmark LEVEL2) | its rows | " + " | ".join(f"mapped, {name}" for name in seeds) + " |",
             "|---|---:|" + "---:|" * len(seeds)]
    totals = [0] * (len(seeds) + 1)
    for concept, names in CONCEPTS.items():
        part = rows[rows["LEVEL2"] == concept]
        total = int(part["n"].sum())
        cells = []
        for k, seed in enumerate(seeds.values()):
            keys = set(zip(seed["source_table"], seed["itemid"])) if not seed.empty else set()
            mapped = int(part.loc[[(t, i) in keys for t, i in zip(part["source_table"], part["itemid"])], "n"].sum())
            totals[k + 1] += mapped
            cells.append(_share(mapped, total))
        totals[0] += total
        lines.append(f"| {concept} | {total:,} | " + " | ".join(cells) + " |")
    lines.append(f"| **all** | **{totals[0]:,}** | "
                 + " | ".join(f"**{_share(t, totals[0])}**" for t in totals[1:]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mimic-dir", required=True, type=Path)
    parser.add_argument("--before", default=None, help="git revision of the 'before' seed (omit: this checkout only)")
    parser.add_argument("--benchmark-map", type=Path, default=None,
                        help="default: mimic3-benchmarks-resources/itemid_to_variable_map.csv beside --mimic-dir")
    args = parser.parse_args(argv)
    benchmark_map = args.benchmark_map or (
        args.mimic_dir.resolve().parent / "mimic3-benchmarks-resources" / "itemid_to_variable_map.csv")
    seeds = {}
    if args.before:
        seeds[f"before ({args.before})"] = seed_at(args.before)
    seeds["after (this checkout)"] = seed_at(None)
    with duckdb.connect() as con:
        counts = item_counts(con, args.mimic_dir)
    print(table_shares(counts, seeds))
    print()
    print(concept_shares(counts, seeds, benchmark_map))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
