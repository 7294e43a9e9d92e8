"""Regenerate seeds/phenotype_icd9_codes.csv from the HCUP CCS 2015 definitions yaml.

HCUP CCS is public AHRQ data; the yaml is the one of the MIMIC-III benchmark suite. Only the 25
groups with `use_in_benchmark: True` are written. Usage:

    python dbt_mimic/scripts/make_phenotype_seed.py /path/to/hcup_ccs_2015_definitions.yaml
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import yaml

SEED = Path(__file__).resolve().parents[1] / "seeds" / "phenotype_icd9_codes.csv"


def benchmark_rows(definitions: dict) -> list[tuple[str, str, str]]:
    """(icd9_code, phenotype, phenotype_type) for every code of every benchmark group."""
    rows = set()
    for phenotype, group in definitions.items():
        if group.get("use_in_benchmark") is True:
            for code in group["codes"]:
                # Codes are strings in the yaml; keep them as written (leading zeros matter).
                rows.add((str(code).strip(), phenotype, str(group["type"])))
    return sorted(rows, key=lambda r: (r[1], r[0]))


def main(yaml_path: str) -> None:
    with open(yaml_path, encoding="utf-8") as handle:
        rows = benchmark_rows(yaml.safe_load(handle))
    with open(SEED, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["icd9_code", "phenotype", "phenotype_type"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows for {len({r[1] for r in rows})} phenotypes to {SEED}")


if __name__ == "__main__":
    main(sys.argv[1])
