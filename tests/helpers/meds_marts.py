"""A small hand-built warehouse for the MEDS export tests: four patients whose visits, codes,
phenotypes and measurements cover the export's cases, written as the four marts, the split and
one ICD dictionary."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb

T0 = datetime(2150, 3, 1, 8, 0, 0)

# Patients: 1 train (two admissions, the first with two ICU stays), 2 val (age capped, in-hospital
# death, GCS categories), 3 test (no codes, a measurement before intime), 4 train (many rows).
VISITS = [
    # subject, hadm, icustay, visit_index, intime, los_h, age, capped, gender, eth, ins, adm_type, unit, death
    (1, 100, 1000, 0, T0, 30.0, 64.25, False, "M", "WHITE", "Medicare", "EMERGENCY", "MICU", 0),
    (1, 100, 1001, 1, T0 + timedelta(hours=50), 20.0, 64.26, False, "M", "WHITE", "Medicare", "EMERGENCY", "SICU", 0),
    (1, 101, 1002, 2, T0 + timedelta(days=200), 48.5, 64.8, False, "M", "BLACK", "Private", "ELECTIVE", "CSRU", 0),
    (2, 200, 2000, 0, T0 + timedelta(days=3), 72.0, 90.0, True, "F", "UNKNOWN", "Medicare", "EMERGENCY", "MICU", 1),
    (3, 300, 3000, 0, T0 + timedelta(days=5), 12.0, 18.5, False, "F", "HISPANIC", "Medicaid", "URGENT", "CCU", 0),
    (4, 400, 4000, 0, T0 + timedelta(days=9), 100.0, 45.0, False, "M", "ASIAN", "Private", "EMERGENCY", "TSICU", 0),
]
CODES = [
    # (icustay, code_type, icd9_code, seq_num): admission 100's codes repeated on both of its stays
    *[(stay, t, c, s) for stay in (1000, 1001)
      for (t, c, s) in [("diagnosis", "4019", 1), ("diagnosis", "0066", 2), ("procedure", "0066", 1),
                        ("procedure", "3893", 2)]],
    (1002, "diagnosis", "E8790", 1),
    (1002, "diagnosis", "V4581", 2),
    (2000, "diagnosis", "0389", 1),
    (2000, "procedure", "9604", 1),
]
PHENOTYPES = [(1000, "Essential hypertension"), (1001, "Essential hypertension"), (2000, "Septicemia (except in labor)")]
MEASUREMENTS = [
    # (icustay, hours, variable, value, value_text)
    (1000, 0.5, "heart_rate", 88.0, None),
    (1000, 0.5, "temperature", 36.6, None),
    (1000, 2.25, "glucose", 143.0, None),
    (1001, 1.0, "heart_rate", 91.0, None),
    (1002, 10.0, "ph", 7.41, None),
    (2000, 0.0, "gcs_eye_opening", 4.0, "Spontaneously"),
    (2000, 0.0, "gcs_verbal_response", 1.0, "No Response-ETT"),
    (2000, 71.5, "fraction_inspired_oxygen", 0.35, None),
    (3000, -0.5, "heart_rate", 110.0, None),
    *[(4000, h * 0.25, "oxygen_saturation", 90.0 + (h % 10), None) for h in range(40)],
]
SPLITS = [(1, "train"), (2, "val"), (3, "test"), (4, "train")]
ALL_TABLES = ("main.visits", "main.visit_codes", "main.visit_phenotypes", "main.measurements", "synehrgy.patient_split")


def build_marts(path: Path) -> Path:
    """A DuckDB file with the four marts (docs/architecture.md types), the split, and one ICD dictionary."""
    con = duckdb.connect(str(path))
    con.execute(
        """create table main.visits (subject_id bigint, hadm_id bigint, icustay_id bigint, visit_index integer,
             intime timestamp, outtime timestamp, los_hours double, hours_since_previous_visit double,
             age_years double, age_is_capped boolean, gender varchar, ethnicity_group varchar, insurance varchar,
             admission_type varchar, first_careunit varchar, mortality_inhospital integer)"""
    )
    prev_out: dict[int, datetime] = {}
    for (s, h, i, k, intime, los, age, capped, g, e, ins, adm, unit, death) in VISITS:
        outtime = intime + timedelta(hours=los)
        since = None if s not in prev_out else (intime - prev_out[s]).total_seconds() / 3600
        prev_out[s] = outtime
        con.execute("insert into main.visits values (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [s, h, i, k, intime, outtime, los, since, age, capped, g, e, ins, adm, unit, death])
    subject_of = {v[2]: v[0] for v in VISITS}
    con.execute("create table main.visit_codes (subject_id bigint, icustay_id bigint, code_type varchar, "
                "icd9_code varchar, seq_num integer)")
    con.executemany("insert into main.visit_codes values (?,?,?,?,?)",
                    [[subject_of[i], i, t, c, n] for (i, t, c, n) in CODES])
    con.execute("create table main.visit_phenotypes (subject_id bigint, icustay_id bigint, phenotype varchar)")
    con.executemany("insert into main.visit_phenotypes values (?,?,?)", [[subject_of[i], i, p] for (i, p) in PHENOTYPES])
    con.execute("create table main.measurements (subject_id bigint, icustay_id bigint, hours double, "
                "variable varchar, value double, value_text varchar)")
    con.executemany("insert into main.measurements values (?,?,?,?,?,?)",
                    [[subject_of[i], i, h, v, x, t] for (i, h, v, x, t) in MEASUREMENTS])
    con.execute("create schema synehrgy")
    con.execute("create table synehrgy.patient_split (subject_id bigint, split varchar)")
    con.executemany("insert into synehrgy.patient_split values (?,?)", [list(r) for r in SPLITS])
    # A diagnoses dictionary (as the staging view would give); no procedures dictionary.
    con.execute("create table main.stg_mimic__d_icd_diagnoses (icd9_code varchar, short_title varchar, long_title varchar)")
    con.execute("insert into main.stg_mimic__d_icd_diagnoses values ('4019', 'Hypertension NOS', "
                "'Unspecified essential hypertension')")
    con.close()
    return path
