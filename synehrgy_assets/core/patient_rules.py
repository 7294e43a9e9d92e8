"""Patient rules: is each patient one person, with times on everything, and physiology that holds?

Aggregate fidelity cannot see a patient whose gender changes between visits or whose systolic
pressure is below the diastolic. These rules read MIMIC-III-shaped tables (PATIENTS, ADMISSIONS,
ICUSTAYS, CHARTEVENTS, LABEVENTS; lowercase columns, as `decoder.cohort_to_mimic_tables` writes
them and as the dbt staging views `stg_mimic__*` read the raw files) and count, per rule, the
patients with at least one violation. The same rules run on the synthetic cohort and on the real
test patients' raw tables, and the gate compares the two:

- *hard* rules describe what real data cannot do by construction (one gender and ethnicity per
  person, ages that only grow, nothing after an in-hospital death, events inside their stay,
  admissions and stays with times): the synthetic share must be 0;
- every other rule passes when the synthetic share <= max(ratio x real share, real share + slack)
  (1.5 and 0.5 percentage points by default, fields of `GateThresholds`).

Pure: frames in, counts out; DuckDB runs the SQL over the pandas frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synehrgy_assets.core.cohort import SEEDS_DIR
from synehrgy_assets.core.release_gates import GateThresholds, GateVerdict

REQUIRED_COLUMNS = {
    "PATIENTS": ("subject_id", "gender", "dob"),
    "ADMISSIONS": ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "ethnicity",
                   "hospital_expire_flag"),
    "ICUSTAYS": ("subject_id", "hadm_id", "icustay_id", "dbsource", "intime", "outtime"),
    "CHARTEVENTS": ("subject_id", "icustay_id", "itemid", "charttime", "valuenum"),
    "LABEVENTS": ("subject_id", "hadm_id", "itemid", "charttime", "valuenum"),
}
# Events may be charted a little outside [intime, outtime] (the staging's window tolerance).
STAY_WINDOW_HOURS = 1.0
MIN_STAY_HOURS = 4.0
HEART_RATE_ITEMS = (211, 220045)
HEART_RATE_RANGE = (20.0, 250.0)
METAVISION_FIRST_ITEMID = 220000
# GCS: the CareVue total (198) against the parts of either database, charted at the same time.
GCS_TOTAL_ITEMS = (198,)
GCS_PARTS = {"eye": (184, 220739), "verbal": (723, 223900), "motor": (454, 223901)}
# Blood pressure items by family: a cuff reading and an arterial line at the same minute are two
# measurements, so systolic/diastolic/mean are compared only within one family. Items of seed
# variables named `arterial_*` are arterial whatever this list says.
NON_INVASIVE_BP = {
    "systolic": (455, 442, 3313, 3315, 3317, 3321, 3323, 220179, 224167, 227243),
    "diastolic": (8441, 8502, 224643, 220180),
    "mean": (456, 3312, 3314, 3316, 3320, 3322, 220181),
}
ARTERIAL_BP = {
    "systolic": (51, 6701, 220050, 225309),
    "diastolic": (8368, 8555, 220051, 225310),
    "mean": (52, 224, 6702, 220052, 224322, 225312),
}


@dataclass(frozen=True)
class PatientRule:
    name: str
    hard: bool
    description: str


RULES = (
    PatientRule("gender_changes", True, "more than one gender for one patient"),
    PatientRule("ethnicity_changes", True, "more than one known ethnicity group across a patient's admissions"),
    PatientRule("age_decreases", True, "more than one date of birth, an admission before birth, or an age that "
                "decreases from one admission to the next"),
    PatientRule("admission_after_death", True, "an admission or ICU stay that starts after an in-hospital death"),
    PatientRule("event_outside_stay", True, f"a chart event without time, of an unknown stay, or outside "
                f"[intime - {STAY_WINDOW_HOURS:g} h, outtime + {STAY_WINDOW_HOURS:g} h]; a lab event without time"),
    PatientRule("missing_times", True, "an admission without admit or discharge time, or an ICU stay without "
                "intime or outtime"),
    PatientRule("icu_database_mismatch", False, "a stay whose chart items mix CareVue (< 220000) and MetaVision "
                "(>= 220000) item ids (unless ICUSTAYS.dbsource is 'both'), or disagree with its dbsource"),
    PatientRule("blood_pressure_inconsistent", False, "systolic <= diastolic, or mean outside [diastolic, systolic], "
                "at one charttime of one stay, within one family (cuff or arterial)"),
    PatientRule("gcs_total_mismatch", False, "GCS total (198) != eye + verbal + motor where all three parts are "
                "charted at the same time"),
    PatientRule("heart_rate_implausible", False, f"heart rate (211, 220045) < {HEART_RATE_RANGE[0]:g} or > "
                f"{HEART_RATE_RANGE[1]:g} bpm"),
    PatientRule("stay_without_events", False, "an ICU stay with no chart event and no lab event in its window"),
    PatientRule("short_icu_stay", False, f"an ICU stay shorter than {MIN_STAY_HOURS:g} h"),
    PatientRule("value_out_of_range", False, "a value outside the valid range of its variable (the mimic3-benchmarks "
                "valid ranges, as in dbt_mimic/seeds/variables.csv)"),
)
RULE_NAMES = tuple(r.name for r in RULES)
COUNT_COLUMNS = ["rule", "hard", "description", "n_patients", "n_violating", "share"]


class PatientTablesError(ValueError):
    """A table or column the rules need is missing."""


def bp_families(item_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """itemid, family (`non_invasive` | `arterial`), component (`systolic` | `diastolic` | `mean`).

    The hard-coded MIMIC-III items, with seed items of variables named `arterial_<component>_blood_pressure`
    put in the arterial family (the seed may split invasive pressure into its own variables)."""
    rows = {}
    for family, parts in (("non_invasive", NON_INVASIVE_BP), ("arterial", ARTERIAL_BP)):
        for component, items in parts.items():
            rows.update({int(i): (family, component) for i in items})
    if item_table is not None:
        for itemid, variable in zip(item_table["itemid"], item_table["variable"]):
            for component in ("systolic", "diastolic", "mean"):
                if variable == f"arterial_{component}_blood_pressure":
                    rows[int(itemid)] = ("arterial", component)
                elif variable == f"{component}_blood_pressure" and int(itemid) not in rows:
                    rows[int(itemid)] = ("non_invasive", component)
    return pd.DataFrame([(i, f, c) for i, (f, c) in sorted(rows.items())], columns=["itemid", "family", "component"])


def item_ranges(seeds_dir: Path = SEEDS_DIR) -> pd.DataFrame:
    """itemid, source_table, variable, conversion, valid_low, valid_high: each seed item with its variable's valid
    range (the mimic3-benchmarks ranges, copied into variables.csv; tests compare the two)."""
    items = pd.read_csv(seeds_dir / "variable_itemids.csv")
    variables = pd.read_csv(seeds_dir / "variables.csv")[["variable", "valid_low", "valid_high"]]
    return items.merge(variables, on="variable", how="left")[
        ["itemid", "source_table", "variable", "conversion", "valid_low", "valid_high"]]


def ethnicity_groups(seeds_dir: Path = SEEDS_DIR) -> pd.DataFrame:
    return pd.read_csv(seeds_dir / "ethnicity_groups.csv", dtype=str)


def check_tables(tables: dict[str, pd.DataFrame], origin: str) -> None:
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in tables:
            raise PatientTablesError(f"{origin}: table {table} is missing (the patient rules need "
                                     f"{', '.join(REQUIRED_COLUMNS)})")
        missing = [c for c in columns if c not in tables[table].columns]
        if missing:
            raise PatientTablesError(f"{origin}: {table} lacks column(s) {missing}; expected lowercase MIMIC-III "
                                     f"columns {list(columns)}")


# One statement per rule: `select distinct subject_id` of the patients that break it. The views
# p, a, s, c, l are the typed tables (see _typed_views); items, bp, eth come from the seeds.
_WINDOW = f"interval {int(STAY_WINDOW_HOURS * 60)} minute"
_RULE_SQL = {
    "gender_changes": "select subject_id from p group by subject_id having count(distinct gender) > 1",
    "ethnicity_changes": """
        select subject_id from a left join eth on upper(trim(a.ethnicity)) = eth.ethnicity
        where a.ethnicity is not null and coalesce(eth.ethnicity_group, 'OTHER') <> 'UNKNOWN'
        group by subject_id having count(distinct coalesce(eth.ethnicity_group,
            case when upper(a.ethnicity) like 'WHITE%' then 'WHITE' when upper(a.ethnicity) like 'BLACK%' then 'BLACK'
                 when upper(a.ethnicity) like 'HISPANIC%' then 'HISPANIC' when upper(a.ethnicity) like 'ASIAN%'
                 then 'ASIAN' else 'OTHER' end)) > 1""",
    "age_decreases": """
        select subject_id from p group by subject_id having count(distinct dob) > 1
        union select a.subject_id from a join p using (subject_id) where a.admittime < p.dob
        union select subject_id from (
            select a.subject_id, date_diff('second', p.dob, a.admittime) as age_s,
                   lag(date_diff('second', p.dob, a.admittime)) over (
                       partition by a.subject_id order by a.admittime, a.hadm_id) as previous_age_s
            from a join p using (subject_id) where a.admittime is not null and p.dob is not null)
        where age_s < previous_age_s""",
    "admission_after_death": """
        with death as (
            select subject_id, hadm_id, admittime, coalesce(deathtime, dischtime) as died_at from a
            where hospital_expire_flag = 1 or deathtime is not null)
        select d.subject_id from death d join a on a.subject_id = d.subject_id and a.hadm_id <> d.hadm_id
        where a.admittime > d.admittime or (d.died_at is not null and a.admittime >= d.died_at)
        union select d.subject_id from death d join s on s.subject_id = d.subject_id
        where d.died_at is not null and s.intime > d.died_at""",
    "event_outside_stay": f"""
        select c.subject_id from c left join s using (icustay_id)
        where c.charttime is null or s.icustay_id is null
           or c.charttime < s.intime - {_WINDOW} or c.charttime > s.outtime + {_WINDOW}
        union select subject_id from l where charttime is null""",
    "missing_times": """
        select subject_id from a where admittime is null or dischtime is null
        union select subject_id from s where intime is null or outtime is null""",
    "icu_database_mismatch": f"""
        with per_stay as (
            select c.icustay_id, any_value(c.subject_id) as subject_id,
                   count(*) filter (where c.itemid < {METAVISION_FIRST_ITEMID}) as n_carevue,
                   count(*) filter (where c.itemid >= {METAVISION_FIRST_ITEMID}) as n_metavision
            from c where c.icustay_id is not null group by c.icustay_id)
        select per_stay.subject_id from per_stay left join s using (icustay_id)
        where (n_carevue > 0 and n_metavision > 0 and lower(s.dbsource) is distinct from 'both')
           or (lower(s.dbsource) = 'carevue' and n_metavision > 0)
           or (lower(s.dbsource) = 'metavision' and n_carevue > 0)""",
    "blood_pressure_inconsistent": """
        with v as (
            select c.subject_id, c.icustay_id, c.charttime, bp.family,
                   avg(c.valuenum) filter (where bp.component = 'systolic') as sys,
                   avg(c.valuenum) filter (where bp.component = 'diastolic') as dia,
                   avg(c.valuenum) filter (where bp.component = 'mean') as mbp
            from c join bp using (itemid)
            where c.valuenum is not null and not c.is_error
            group by c.subject_id, c.icustay_id, c.charttime, bp.family)
        select subject_id from v
        where sys <= dia or (mbp is not null and sys is not null and dia is not null and (mbp < dia or mbp > sys))""",
    "gcs_total_mismatch": f"""
        with g as (
            select c.subject_id, c.icustay_id, c.charttime,
                   avg(c.valuenum) filter (where c.itemid in {GCS_TOTAL_ITEMS + (-1,)}) as total,
                   avg(c.valuenum) filter (where c.itemid in {GCS_PARTS['eye']}) as eye,
                   avg(c.valuenum) filter (where c.itemid in {GCS_PARTS['verbal']}) as verbal,
                   avg(c.valuenum) filter (where c.itemid in {GCS_PARTS['motor']}) as motor
            from c where c.valuenum is not null and not c.is_error
            group by c.subject_id, c.icustay_id, c.charttime)
        select subject_id from g where total is not null and eye is not null and verbal is not null
            and motor is not null and abs(total - (eye + verbal + motor)) > 1e-6""",
    "heart_rate_implausible": f"""
        select subject_id from c where itemid in {HEART_RATE_ITEMS} and not is_error
            and (valuenum < {HEART_RATE_RANGE[0]} or valuenum > {HEART_RATE_RANGE[1]})""",
    "stay_without_events": f"""
        select s.subject_id from s
        where not exists (select 1 from c where c.icustay_id = s.icustay_id)
          and not exists (select 1 from l where l.hadm_id = s.hadm_id
                          and l.charttime between s.intime - {_WINDOW} and s.outtime + {_WINDOW})""",
    "short_icu_stay": f"""
        select subject_id from s where date_diff('second', intime, outtime) < {MIN_STAY_HOURS * 3600}""",
    "value_out_of_range": """
        with e as (select subject_id, itemid, valuenum, is_error from c
                   union all select subject_id, itemid, valuenum, false from l),
        converted as (
            select e.subject_id, r.valid_low, r.valid_high,
                   case when r.conversion = 'fahrenheit_to_celsius' and e.valuenum >= 50
                            then (e.valuenum - 32) * 5.0 / 9.0
                        when r.conversion = 'percent_to_fraction' and e.valuenum > 1 then e.valuenum / 100.0
                        when r.conversion = 'fraction_to_percent' and e.valuenum <= 1 then e.valuenum * 100.0
                        else e.valuenum end as value
            from e join items r using (itemid) where e.valuenum is not null and not e.is_error)
        select subject_id from converted where value < valid_low or value > valid_high""",
}


def _typed_views(con, tables: dict[str, pd.DataFrame]) -> None:
    """Register the frames and type them: ids as BIGINT, times as TIMESTAMP (raw text too),
    `error` = 1 on CHARTEVENTS as `is_error` (absent: no errors)."""
    for name, frame in tables.items():
        con.register(f"raw_{name.lower()}", frame)
    ts = "try_cast({0} as timestamp) as {0}"
    big = "try_cast({0} as bigint) as {0}"
    num = "try_cast({0} as double) as {0}"
    txt = "cast({0} as varchar) as {0}"

    def cols(spec: dict[str, str]) -> str:
        return ", ".join(kind.format(column) for column, kind in spec.items())

    chart = tables["CHARTEVENTS"]
    error = ("coalesce(try_cast(error as integer), 0) = 1" if "error" in chart.columns
             else "coalesce(try_cast(is_error as boolean), false)" if "is_error" in chart.columns else "false")
    con.execute(f"create view p as select {cols({'subject_id': big, 'gender': txt, 'dob': ts})} from raw_patients")
    con.execute(f"""create view a as select {cols({'subject_id': big, 'hadm_id': big, 'admittime': ts,
        'dischtime': ts, 'deathtime': ts, 'ethnicity': txt, 'hospital_expire_flag': 'try_cast({0} as integer) as {0}'})}
        from raw_admissions""")
    con.execute(f"""create view s as select {cols({'subject_id': big, 'hadm_id': big, 'icustay_id': big,
        'dbsource': txt, 'intime': ts, 'outtime': ts})} from raw_icustays""")
    con.execute(f"""create view c as select {cols({'subject_id': big, 'icustay_id': big, 'itemid': big,
        'charttime': ts, 'valuenum': num})}, {error} as is_error from raw_chartevents""")
    con.execute(f"""create view l as select {cols({'subject_id': big, 'hadm_id': big, 'itemid': big,
        'charttime': ts, 'valuenum': num})} from raw_labevents""")


def rule_violations(tables: dict[str, pd.DataFrame], origin: str = "cohort",
                    seeds_dir: Path = SEEDS_DIR) -> dict[str, set[int]]:
    """{rule: subject ids of the patients in PATIENTS that break it}."""
    import duckdb

    check_tables(tables, origin)
    items = item_ranges(seeds_dir)
    with duckdb.connect() as con:
        _typed_views(con, {t: tables[t] for t in REQUIRED_COLUMNS})
        con.register("items", items)
        con.register("bp", bp_families(items))
        groups = ethnicity_groups(seeds_dir)
        con.register("eth", groups.assign(ethnicity=groups["ethnicity"].str.upper().str.strip()))
        known = set(con.execute("select distinct subject_id from p where subject_id is not null").fetchnumpy()
                    ["subject_id"].tolist())
        out = {}
        for rule in RULES:
            ids = con.execute(f"select distinct subject_id from ({_RULE_SQL[rule.name]})").fetchnumpy()["subject_id"]
            out[rule.name] = {int(i) for i in ids.tolist() if i is not None} & known
    out["_patients"] = known
    return out


def rule_counts(tables: dict[str, pd.DataFrame], origin: str = "cohort", seeds_dir: Path = SEEDS_DIR) -> pd.DataFrame:
    """One row per rule: rule, hard, description, n_patients (in PATIENTS), n_violating, share."""
    violations = rule_violations(tables, origin, seeds_dir)
    n = len(violations["_patients"])
    rows = [{"rule": r.name, "hard": r.hard, "description": r.description, "n_patients": n,
             "n_violating": len(violations[r.name]),
             "share": len(violations[r.name]) / n if n else float("nan")} for r in RULES]
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def compare(synthetic: pd.DataFrame, real: pd.DataFrame, thresholds: GateThresholds | None = None,
            min_cell_count: int = 10) -> pd.DataFrame:
    """The rule table: rule, hard, synthetic_share, real_share, limit, ok, real_held_back.

    `synthetic` and `real` are `rule_counts` tables. The limit is `max_hard_patient_rule_share` for
    hard rules and max(ratio x real, real + slack) for the others; an unmeasured real share (no real
    test patients) leaves a soft rule unjudged (ok False). `real_held_back` marks real figures that
    rest on 1 to min_cell_count - 1 patients (breaking or keeping the rule): exact here, masked
    wherever the table leaves the workspace (`publishable_table`)."""
    t = thresholds or GateThresholds()
    both = synthetic[["rule", "hard", "share", "n_violating"]].merge(
        real[["rule", "share", "n_violating", "n_patients"]], on="rule", how="left", suffixes=("_synthetic", "_real"))
    rows = []
    for r in both.itertuples(index=False):
        syn, real_share = float(r.share_synthetic), float(r.share_real)
        if r.hard:
            limit = t.max_hard_patient_rule_share
        elif math.isnan(real_share):
            limit = float("nan")
        else:
            limit = max(t.patient_rule_share_ratio * real_share, real_share + t.patient_rule_share_slack)
        ok = not math.isnan(syn) and not math.isnan(limit) and syn <= limit + 1e-12
        n_real, k_real = r.n_patients, r.n_violating_real
        held = bool(not pd.isna(n_real) and (0 < k_real < min_cell_count or 0 < n_real - k_real < min_cell_count))
        rows.append({"rule": r.rule, "hard": bool(r.hard), "synthetic_share": syn, "real_share": real_share,
                     "limit": limit, "ok": bool(ok), "real_held_back": held})
    return pd.DataFrame(rows, columns=["rule", "hard", "synthetic_share", "real_share", "limit", "ok",
                                       "real_held_back"])


def publishable_table(table: pd.DataFrame) -> pd.DataFrame:
    """The rule table with held-back real figures (and the soft limits built on them) blanked."""
    out = table.copy()
    held = out["real_held_back"].astype(bool)
    out.loc[held, "real_share"] = float("nan")
    out.loc[held & ~out["hard"].astype(bool), "limit"] = float("nan")
    return out


def both_sides(synthetic: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    """The two `rule_counts` tables in one (column `side`: synthetic | real), as the evaluation keeps it."""
    return pd.concat([synthetic.assign(side="synthetic"), real.assign(side="real")], ignore_index=True)


def rule_table(counts: pd.DataFrame, thresholds: GateThresholds | None = None) -> pd.DataFrame:
    """`compare` on a `both_sides` table."""
    return compare(counts[counts["side"] == "synthetic"], counts[counts["side"] == "real"], thresholds)


def patient_rules_gate(m: dict, t: GateThresholds, counts: pd.DataFrame | None = None) -> GateVerdict:
    """The gate on the rule counts of both sides (`both_sides`): every rule within its limit under
    the thresholds `t`. `m`, the evaluation's metrics, is not read (the signature of the other
    gates). The verdict's rows carry publishable figures only (a held-back real share and the limit
    built on it are NaN; the decision used the exact ones)."""
    name = "patient_rules_gate"
    description = (f"Patient rules (one person across visits, times on every visit and event, physiology that "
                   f"holds together): hard rules <= {t.max_hard_patient_rule_share:g} of synthetic patients, every "
                   f"other rule <= max({t.patient_rule_share_ratio:g} x the real-test share, the real-test share + "
                   f"{t.patient_rule_share_slack:g}).")
    if counts is None or counts.empty:
        return GateVerdict(name, description, passed=False, reason="not measured: no patient rule counts "
                           "(see the evaluation's errors)")
    table = rule_table(counts, t)
    public = publishable_table(table)
    rows, failed, unmeasured = [], [], []
    for exact, shown in zip(table.itertuples(index=False), public.itertuples(index=False)):
        quantity = f"{exact.rule}{' (hard)' if exact.hard else ''}: share of patients"
        rows.append({"quantity": quantity, "measured": shown.synthetic_share, "real_test_baseline": shown.real_share,
                     "op": "<=", "threshold": shown.limit, "ok": bool(exact.ok)})
        if math.isnan(exact.synthetic_share) or math.isnan(exact.limit):
            unmeasured.append(exact.rule)
        elif not exact.ok:
            limit = "<= a limit held back: it rests on fewer than 10 real patients" if math.isnan(shown.limit) \
                else f"<= {shown.limit:.4g}"
            failed.append(f"{exact.rule} {exact.synthetic_share:.4g} (needs {limit})")
    parts = failed + ([f"not measured: {', '.join(unmeasured)}"] if unmeasured else [])
    return GateVerdict(name, description, passed=not parts, rows=rows,
                       reason="; ".join(parts) if parts else "all rules within thresholds")


def markdown_table(table: pd.DataFrame) -> str:
    """The rule table as Markdown (held-back figures shown as such; `|` escaped)."""
    public = publishable_table(table)

    def pct(value: float, held: bool = False) -> str:
        return "held back (< 10 patients)" if held else ("n/a" if math.isnan(value) else f"{100 * value:.1f} %")

    lines = ["| rule | synthetic | real test | limit | ok |", "|---|---:|---:|---:|---|"]
    for r in public.itertuples(index=False):
        lines.append(f"| {r.rule.replace('|', chr(92) + '|')}{' (hard)' if r.hard else ''} | {pct(r.synthetic_share)} | "
                     f"{pct(r.real_share, r.real_held_back)} | "
                     f"{pct(r.limit, r.real_held_back and not r.hard)} | {'yes' if r.ok else '**no**'} |")
    return "\n".join(lines)


# -- the real side: the raw tables of the staged warehouse --------------------------------------

STAGING_VIEWS = {"PATIENTS": "stg_mimic__patients", "ADMISSIONS": "stg_mimic__admissions",
                 "ICUSTAYS": "stg_mimic__icustays", "CHARTEVENTS": "stg_mimic__chartevents",
                 "LABEVENTS": "stg_mimic__labevents"}


def load_raw_tables(con, subject_ids, files: dict[str, Path] | None = None) -> dict[str, pd.DataFrame]:
    """The raw MIMIC-III tables of `subject_ids`, read through the dbt staging views (typed, lowercase;
    CHARTEVENTS and LABEVENTS hold the seed's items only, as the synthetic side does). A view that
    cannot read its file (the workspace was moved or copied after the staging) is replaced by the
    same read of `files` (lowercase table -> path, e.g. `MimicFiles.files`) when given."""
    import duckdb

    ids = pd.DataFrame({"subject_id": pd.Series(list(subject_ids), dtype="int64")})
    con.execute("set enable_progress_bar = false")  # a raw CHARTEVENTS scan would draw one into the run log
    con.register("_rule_subjects", ids)
    out = {}
    try:
        for table, view in STAGING_VIEWS.items():
            try:
                out[table] = con.execute(f"select * from main.{view} where subject_id in "
                                         f"(select subject_id from _rule_subjects)").df()
            except duckdb.Error as exc:
                if files and table.lower() in files:
                    out[table] = _read_raw_file(con, table, Path(files[table.lower()]))
                    continue
                raise PatientTablesError(
                    f"cannot read the raw {table} of the real test patients through main.{view} "
                    f"(the dbt staging view over the raw file; materialize the staging, and keep the raw files "
                    f"where it read them): {str(exc).splitlines()[0]}") from exc
    finally:
        con.unregister("_rule_subjects")
    return out


def _read_raw_file(con, table: str, path: Path) -> pd.DataFrame:
    """What the staging view reads, from the file itself: the table's columns (headers of either
    case), the patients of `_rule_subjects`, and for the event tables the seed's items."""
    import duckdb

    source = f"read_csv('{str(path).replace(chr(39), chr(39) * 2)}', header=true, all_varchar=true, " \
             "delim=',', quote='\"', escape='\"')"
    try:
        actual = {c.lower(): c for c in con.sql(f"select * from {source} limit 0").columns}
    except duckdb.Error as exc:
        raise PatientTablesError(f"cannot read the raw {table} file {path}: {str(exc).splitlines()[0]}") from exc
    wanted = list(REQUIRED_COLUMNS[table]) + (["error"] if table == "CHARTEVENTS" and "error" in actual else [])
    missing = [c for c in wanted if c not in actual]
    if missing:
        raise PatientTablesError(f"{path}: {table} lacks column(s) {missing}")
    where = f'try_cast("{actual["subject_id"]}" as bigint) in (select subject_id from _rule_subjects)'
    if table in ("CHARTEVENTS", "LABEVENTS"):
        items = item_ranges()
        seed = ", ".join(str(int(i)) for i in items.loc[items["source_table"] == table.lower(), "itemid"])
        where += f' and try_cast("{actual["itemid"]}" as integer) in ({seed})'
    columns = ", ".join(f'"{actual[c]}" as {c}' for c in wanted)
    return con.execute(f"select {columns} from {source} where {where}").df()
