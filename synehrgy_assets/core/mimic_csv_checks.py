"""Checks of a MIMIC-III CSV folder as the full release ships it and as MIMIC-III pipelines read it
(mimic3-benchmarks opens PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD, D_ICD_DIAGNOSES and the events of
CHARTEVENTS, LABEVENTS and OUTPUTEVENTS by their UPPERCASE column names, and trusts the flags):

* every one of the 26 tables is there, as `TABLE.csv.gz` or `TABLE.csv`, with the official columns in the
  official order, in UPPERCASE (`header_case="upper"`) or lowercase (the demo's style);
* `ADMISSIONS.HAS_CHARTEVENTS_DATA` is 1 exactly for the admissions with CHARTEVENTS rows;
* `PATIENTS.EXPIRE_FLAG` is 1 exactly for the patients with a `DOD`;
* `ADMISSIONS.DEATHTIME` is set exactly where `HOSPITAL_EXPIRE_FLAG` is 1, lies in the admission, and the
  patient's `DOD` is the day of their last in-hospital death.

Only counts are reported, never ids or values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synehrgy_assets.core.mimic_tables import MIMIC_TABLES, table_columns


@dataclass
class MimicCsvCheck:
    folder: Path
    rows: dict[str, int] = field(default_factory=dict)
    icu_stays_without_events: int = 0  # informative: pipelines skip such stays (mimic3-benchmarks needs events)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _file(folder: Path, table: str) -> Path | None:
    for name in (f"{table}.csv.gz", f"{table}.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def check_mimic_csv(folder: str | Path, *, header_case: str = "upper") -> MimicCsvCheck:
    import gzip

    import duckdb

    folder = Path(folder)
    out = MimicCsvCheck(folder=folder)
    files = {}
    for table in MIMIC_TABLES:
        path = _file(folder, table)
        if path is None:
            out.problems.append(f"{table}: no {table}.csv.gz or {table}.csv in {folder}")
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as fh:
            header = [c.strip().strip('"') for c in fh.readline().rstrip("\n").split(",")]
        want = [c.upper() if header_case == "upper" else c for c in table_columns(table)]
        if header != want:
            out.problems.append(f"{path.name}: header {header} is not the official {want}")
            continue
        files[table] = path
    if out.problems:
        return out

    con = duckdb.connect()
    try:
        for table, path in files.items():
            quoted = str(path).replace("'", "''")
            con.execute(f'create view "{table}" as select * from read_csv(\'{quoted}\', header = true, '
                        "all_varchar = true, quote = '\"', escape = '\"')")
            out.rows[table] = con.execute(f'select count(*) from "{table}"').fetchone()[0]

        def count(sql: str) -> int:
            return int(con.execute(sql).fetchone()[0])

        adm = '"ADMISSIONS"'
        wrong = count(f"""select count(*) from {adm} a
            where cast(a.has_chartevents_data as int) <> (case when exists (
                select 1 from "CHARTEVENTS" c where c.hadm_id = a.hadm_id) then 1 else 0 end)""")
        if wrong:
            out.problems.append(f"ADMISSIONS: {wrong} admissions have HAS_CHARTEVENTS_DATA that disagrees with "
                                "CHARTEVENTS (1 exactly where the admission has chart events)")
        wrong = count("""select count(*) from "PATIENTS"
            where cast(expire_flag as int) <> (case when nullif(dod, '') is null then 0 else 1 end)""")
        if wrong:
            out.problems.append(f"PATIENTS: {wrong} patients have EXPIRE_FLAG that disagrees with DOD "
                                "(1 exactly where DOD is set)")
        wrong = count(f"""select count(*) from {adm}
            where (cast(hospital_expire_flag as int) = 1) <> (nullif(deathtime, '') is not null)
               or cast(nullif(deathtime, '') as timestamp) not between cast(admittime as timestamp)
                                                                 and cast(dischtime as timestamp)""")
        if wrong:
            out.problems.append(f"ADMISSIONS: {wrong} admissions have a DEATHTIME that disagrees with "
                                "HOSPITAL_EXPIRE_FLAG or lies outside ADMITTIME..DISCHTIME")
        wrong = count(f"""select count(*) from "PATIENTS" p join (
                select subject_id, max(cast(nullif(deathtime, '') as timestamp)) as last_death
                from {adm} group by subject_id) d using (subject_id)
            where (d.last_death is not null) and (nullif(p.dod, '') is null
                   or cast(cast(p.dod as timestamp) as date) <> cast(d.last_death as date))""")
        if wrong:
            out.problems.append(f"PATIENTS: {wrong} patients who died in hospital have no DOD or a DOD other "
                                "than the day of their last DEATHTIME")
        out.icu_stays_without_events = count("""select count(*) from "ICUSTAYS" s where not exists (
                select 1 from "CHARTEVENTS" c where c.icustay_id = s.icustay_id)
            and not exists (select 1 from "LABEVENTS" l where l.hadm_id = s.hadm_id)
            and not exists (select 1 from "OUTPUTEVENTS" o where o.icustay_id = s.icustay_id)""")
    finally:
        con.close()
    return out
