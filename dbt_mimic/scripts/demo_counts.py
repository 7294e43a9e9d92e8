"""Print the count tables of docs/staging.md from a built warehouse (aggregates only).

    python dbt_mimic/scripts/demo_counts.py path/to/warehouse.duckdb

Paste the output between the demo-counts / demo-measurements markers of docs/staging.md;
tests/test_dbt_mimic.py re-derives the figures from the raw demo files and the build.
"""

from __future__ import annotations

import sys

import duckdb

HEADLINE = [
    ("patients.raw", "patients", "", "raw", "PATIENTS rows"),
    ("patients.with_visit", "patients", "", "with_kept_visit", "patients with at least one visit (`cohort`)"),
    ("admissions.raw", "admissions", "", "raw", "ADMISSIONS rows"),
    ("admissions.with_visit", "admissions", "", "with_kept_visit", "admissions with at least one visit"),
    ("icustays.raw", "icustays", "", "raw", "ICUSTAYS rows"),
    ("icustays.kept", "icustays", "", "kept", "visits (adult ICU stays)"),
    ("icustays.dropped_age_under_18", "icustays", "", "dropped_age_under_18", "dropped: age < 18 at intime"),
    ("icustays.age_capped", "icustays", "", "kept_age_capped", "visits with a shifted DOB, age set to 90"),
    ("icustays.kept_without_measurements", "icustays", "", "kept_without_measurements", "visits with no kept measurement"),
    ("codes.diagnosis_raw", "codes", "diagnosis", "raw", "DIAGNOSES_ICD rows"),
    ("codes.diagnosis_attached", "codes", "diagnosis", "attached_to_visits", "diagnosis rows in `visit_codes` (one per visit of the admission)"),
    ("codes.procedure_raw", "codes", "procedure", "raw", "PROCEDURES_ICD rows"),
    ("codes.procedure_attached", "codes", "procedure", "attached_to_visits", "procedure rows in `visit_codes`"),
    ("codes.phenotype_labels", "codes", "phenotype", "visit_labels", "rows of `visit_phenotypes`"),
]
METRICS = ["kept", "dropped_out_of_range", "dropped_unparseable", "dropped_error_flag",
           "dropped_outside_stay_window", "dropped_stay_not_kept"]


def main(db_path: str) -> None:
    with duckdb.connect(db_path, read_only=True) as con:
        audit = {(s, i, m): n for s, i, m, n in con.sql("select section, item, metric, n from staging_audit").fetchall()}
        n_measurements = con.sql("select count(*) from measurements").fetchall()[0][0]
        n_deaths = con.sql("select sum(mortality_inhospital) from visits").fetchall()[0][0]
    print("| figure | demo | meaning |\n|---|---:|---|")
    for key, section, item, metric, meaning in HEADLINE:
        print(f"| `{key}` | {audit.get((section, item, metric), 0):,} | {meaning} |")
    print(f"| `visits.mortality_inhospital` | {n_deaths:,} | visits whose admission ended in death |")
    print(f"| `measurements.kept` | {n_measurements:,} | rows of `measurements` |")
    print()
    print("| variable | " + " | ".join(METRICS) + " |\n|---|" + "---:|" * len(METRICS))
    for variable in sorted({i for s, i, _ in audit if s == "measurements" and i}):  # "" = totals
        cells = " | ".join(f"{audit[('measurements', variable, m)]:,}" for m in METRICS)
        print(f"| `{variable}` | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1])
