"""Synthetic cohort -> MIMIC-III-shaped tables, so synthetic patients can be re-staged by our own
dbt project and compared like real data.

Each visit becomes one hospital admission with one ICU stay (fresh synthetic ids). The times are
the cohort's (`intime`, `outtime`, `admittime`, `dischtime`, which decoding fills); a hand-built
cohort without them gets dates shifted like MIMIC's (years 2100-2200), the intime of visit k+1
being the outtime of visit k plus `hours_since_previous_visit`. DOB follows from the age at the
first visit (ages > 89 are shifted ~300 years, as MIMIC does). ICUSTAYS.DBSOURCE is the visit's
`icu_database`, and every measurement is written with an ITEMID of that database
(`mimic_dictionaries.item_for`; labs are the hospital's) in that item's unit; categorical values as
the MIMIC text strings. The tables are written by `mimic_tables.write_mimic_tables` (re-exported
here).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.mimic_dictionaries import (
    CANONICAL_ITEMS,
    GCS_VERBAL_ETT,
    LAB_REFERENCE_RANGES,
    dictionary_tables,
    event_value_columns,
    item_for,
    round_values,
    text_codes,
    text_to_score,
)
from synehrgy_assets.core.mimic_tables import table_columns, write_mimic_tables

DECODED_TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "DIAGNOSES_ICD", "PROCEDURES_ICD",
                  "CHARTEVENTS", "LABEVENTS")
DICTIONARY_TABLES = ("D_ICD_DIAGNOSES", "D_ICD_PROCEDURES", "D_ITEMS", "D_LABITEMS")

_SECONDS_PER_YEAR = 365.2425 * 86400.0
_START = np.datetime64("2100-01-01T00:00:00", "s").astype(np.int64)
_END = np.datetime64("2180-01-01T00:00:00", "s").astype(np.int64)
_DEFAULT_GAP_HOURS = 720.0  # used when a later visit lacks hours_since_previous_visit
_DEFAULT_LOS_HOURS = 48.0
_ETHNICITY = {"WHITE": "WHITE", "BLACK": "BLACK/AFRICAN AMERICAN", "HISPANIC": "HISPANIC OR LATINO",
              "ASIAN": "ASIAN", "OTHER": "OTHER", "UNKNOWN": "UNKNOWN/NOT SPECIFIED"}
_ADMISSION_LOCATION = {"EMERGENCY": "EMERGENCY ROOM ADMIT", "URGENT": "TRANSFER FROM HOSP/EXTRAM",
                       "ELECTIVE": "PHYS REFERRAL/NORMAL DELI", "NEWBORN": "PHYS REFERRAL/NORMAL DELI"}
_WARD = {"MICU": 50, "SICU": 33, "CSRU": 15, "CCU": 7, "TSICU": 14, "NICU": 56}
# categorical variable -> text map of its canonical ITEMID (None: written as a number)
_TEXT_MAP = {variable: item.text_map for variable, item in CANONICAL_ITEMS.items()}
_CATEGORICAL = {"gcs_eye_opening": (1, 4), "gcs_motor_response": (1, 6), "gcs_verbal_response": (1, 5),
                "gcs_total": (3, 15), "capillary_refill_rate": (0, 1)}
_ETT_TEXT = re.compile(r"\bET\b|ETT|TRACH|INTUB", re.IGNORECASE)


def _as_datetime(seconds: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    values = np.asarray(seconds, dtype=np.int64).astype("datetime64[s]")
    series = pd.Series(values, dtype="datetime64[s]")
    if missing is not None:
        series = series.mask(pd.Series(missing))
    return series


def _float(frame: pd.DataFrame, column: str, table: str) -> np.ndarray:
    try:
        return pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"synthetic cohort: {table}.{column} must be numeric ({exc})") from exc


def _categorical_scores(variable: str, values: np.ndarray, texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(score, text-map key) per row; the verbal ETT category has key GCS_VERBAL_ETT."""
    lo, hi = _CATEGORICAL[variable]
    score = np.round(values)
    parse = np.isnan(score)
    if parse.any():
        # fall back to the category text: a MIMIC string or a number
        lookup = {text.lower(): s for (var, text), s in text_to_score().items() if var == variable}
        raw = texts[parse].astype("string").str.strip()
        parsed = raw.str.lower().map(lookup)
        numeric = pd.to_numeric(raw.str.extract(r"^(\d+(?:\.\d+)?)", expand=False), errors="coerce")
        score[parse] = parsed.fillna(numeric).to_numpy(dtype=float, na_value=np.nan)
    key = score.copy()
    if variable == "gcs_verbal_response":
        ett = texts.astype("string").str.contains(_ETT_TEXT, na=False).to_numpy()
        key[ett] = GCS_VERBAL_ETT
        score[ett] = 1
    bad = np.isnan(score) | (score < lo) | (score > hi) | (score != np.round(score))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"synthetic cohort: measurements of '{variable}' need a score in [{lo}, {hi}] in `value` "
            f"or a known category in `value_text`; got value={values[first]!r}, "
            f"value_text={texts.iloc[first]!r} ({int(bad.sum())} such rows)"
        )
    return score, key


def _given_times(visits: pd.DataFrame) -> dict[str, np.ndarray] | None:
    """The cohort's own times as epoch seconds, when every visit has all four."""
    columns = ("intime", "outtime", "admittime", "dischtime")
    if not set(columns) <= set(visits.columns) or len(visits) == 0:
        return None
    out = {}
    for column in columns:
        values = pd.to_datetime(visits[column], errors="coerce")
        if values.isna().any():
            return None
        out[column] = values.to_numpy(dtype="datetime64[s]").astype(np.int64)
    return out


def _visit_times(visits: pd.DataFrame, rng: np.random.Generator, max_hours: np.ndarray) -> dict[str, np.ndarray]:
    """Absolute times (epoch seconds) for each visit; `visits` sorted by patient then visit."""
    n = len(visits)
    subject = visits["subject_id"].to_numpy()
    first = np.r_[True, subject[1:] != subject[:-1]]
    last = np.r_[subject[1:] != subject[:-1], True]
    group = np.cumsum(first) - 1
    died = _float(visits, "mortality_inhospital", "visits") == 1
    given = _given_times(visits)
    if given is not None:
        los = (given["outtime"] - given["intime"]) / 3600.0
        return {**given, "died": died, "first": first, "group": group, "los": los}
    los = _float(visits, "los_hours", "visits")
    los = np.where(np.isnan(los) | (los <= 0), np.maximum(max_hours, _DEFAULT_LOS_HOURS), los)
    gap = _float(visits, "hours_since_previous_visit", "visits")
    gap = np.where(first, 0.0, np.where(np.isnan(gap), _DEFAULT_GAP_HOURS, np.maximum(gap, 0.0)))
    # intime_k = intime_{k-1} + los_{k-1} + gap_k, in hours from the patient's first intime
    step = np.where(first, 0.0, np.r_[0.0, los[:-1]] + gap)
    total = np.cumsum(step)
    offset_h = total - (total - step)[first][group]
    base = rng.integers(_START // 60, _END // 60, int(first.sum())) * 60
    intime = base[group] + np.round(offset_h * 3600).astype(np.int64)
    outtime = intime + np.round(los * 3600).astype(np.int64)
    # the admission wraps the stay without overlapping the neighbouring visits' admissions
    # (each side takes at most half the gap, less a minute for the rounding to whole minutes)
    gap_next = np.r_[gap[1:], 0.0]
    pre_h = np.minimum(rng.uniform(1, 12, n), np.where(first, np.inf, np.maximum(gap / 2 - 1 / 60, 0)))
    post_h = np.where(died, rng.uniform(0, 12, n) * (rng.random(n) < .3), rng.uniform(12, 96, n))
    post_h = np.minimum(post_h, np.where(last, np.inf, np.maximum(gap_next / 2 - 1 / 60, 0)))
    admittime = intime - np.floor(pre_h * 60).astype(np.int64) * 60
    dischtime = outtime + np.floor(post_h * 60).astype(np.int64) * 60
    return {"intime": intime, "outtime": outtime, "admittime": admittime, "dischtime": dischtime,
            "died": died, "first": first, "group": group, "los": los}


def _events(cohort: StagedCohort, visit_row: pd.Series, ids: dict[str, np.ndarray], intime: np.ndarray,
            database: np.ndarray, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CHARTEVENTS and LABEVENTS rows, one per measurement."""
    m = cohort.measurements
    if len(m) == 0:
        return (pd.DataFrame({c: [] for c in table_columns("CHARTEVENTS")}),
                pd.DataFrame({c: [] for c in table_columns("LABEVENTS")}))
    unknown = sorted(set(m["variable"].dropna().unique()) - set(CANONICAL_ITEMS))
    if unknown or m["variable"].isna().any():
        raise ValueError(
            f"synthetic cohort: measurements.variable has unknown name(s) {unknown or ['<null>']}; "
            f"expected names from dbt_mimic/seeds/variables.csv"
        )
    pos = visit_row.reindex(m["icustay_id"].to_numpy()).to_numpy()
    if np.isnan(pos.astype(float)).any():
        missing = m.loc[np.isnan(pos.astype(float)), "icustay_id"].iloc[0]
        raise ValueError(f"synthetic cohort: measurements.icustay_id {missing!r} is not in visits")
    pos = pos.astype(np.int64)
    hours = _float(m, "hours", "measurements")
    if np.isnan(hours).any():
        raise ValueError("synthetic cohort: measurements.hours has missing values")
    itemid, valuenum, text, is_lab = _items_and_values(m, database[pos])
    numeric = ~np.isnan(valuenum)
    valuenum[numeric] = round_values(valuenum[numeric], itemid[numeric])
    charttime = intime[pos] + np.round(hours * 3600).astype(np.int64)
    value, num, uom = event_value_columns(itemid, valuenum, text)
    n = len(m)
    chart_rows = np.flatnonzero(~is_lab)
    chart_rows = chart_rows[np.lexsort((itemid[chart_rows], charttime[chart_rows], pos[chart_rows]))]
    lab_rows = np.flatnonzero(is_lab)
    lab_rows = lab_rows[np.lexsort((itemid[lab_rows], charttime[lab_rows], ids["subject"][pos[lab_rows]]))]
    common = {"value": value, "valuenum": num, "valueuom": uom}
    chart = _event_frame(chart_rows, {
        "subject_id": ids["subject"][pos], "hadm_id": ids["hadm"][pos], "icustay_id": ids["icustay"][pos],
        "itemid": itemid, "charttime": charttime,
        "storetime": charttime + rng.integers(5, 60, n) * 60, "cgid": np.full(n, 90_000), **common,
    })
    chart.insert(0, "row_id", np.arange(1, len(chart) + 1))
    for column in ("charttime", "storetime"):
        chart[column] = _as_datetime(chart[column].to_numpy())
    chart["warning"] = 0
    chart["error"] = 0
    chart["resultstatus"] = pd.Series([None] * len(chart), dtype="str")
    chart["stopped"] = pd.Series([None] * len(chart), dtype="str")
    lab = _event_frame(lab_rows, {
        "subject_id": ids["subject"][pos], "hadm_id": ids["hadm"][pos], "itemid": itemid,
        "charttime": charttime, **common,
    })
    lab.insert(0, "row_id", np.arange(1, len(lab) + 1))
    lab["charttime"] = _as_datetime(lab["charttime"].to_numpy())
    lab["flag"] = _lab_flags(lab["itemid"].to_numpy(), lab["valuenum"].to_numpy(dtype=float, na_value=np.nan))
    return chart[table_columns("CHARTEVENTS")], lab[table_columns("LABEVENTS")]


def _items_and_values(m: pd.DataFrame, row_db: np.ndarray):
    """Per measurement: the ITEMID of its variable in its stay's database, the value in that item's
    unit (a categorical score where MIMIC keeps one), the text code of a categorical item, and
    whether the item is a lab."""
    values = _float(m, "value", "measurements")
    texts = m["value_text"].reset_index(drop=True)
    variables = m["variable"].to_numpy()
    n = len(m)
    itemid = np.empty(n, dtype=np.int64)
    valuenum = np.full(n, np.nan)
    text = np.full(n, -1, dtype=np.int64)
    is_lab = np.zeros(n, dtype=bool)
    groups = pd.DataFrame({"variable": variables, "db": row_db}).groupby(["variable", "db"], dropna=False).indices
    for (variable, db), rows in groups.items():
        item = item_for(variable, None if pd.isna(db) else db)
        itemid[rows] = item.itemid
        is_lab[rows] = item.table == "labevents"
        if variable in _CATEGORICAL:
            score, key = _categorical_scores(variable, values[rows], texts.iloc[rows].reset_index(drop=True))
            if item.text_map:
                text[rows] = text_codes(item.text_map, key.astype(np.int64))
                # MIMIC stores GCS scores in valuenum; capillary refill has text only
                valuenum[rows] = np.nan if variable == "capillary_refill_rate" else score
            else:
                valuenum[rows] = score
        else:
            if np.isnan(values[rows]).any():
                raise ValueError(f"synthetic cohort: measurements.value is missing for '{variable}'")
            valuenum[rows] = values[rows] * item.scale + item.offset
    return itemid, valuenum, text, is_lab


def _event_frame(rows: np.ndarray, columns: dict) -> pd.DataFrame:
    """The `rows` of every column (numpy or arrow; arrow text as pandas str)."""
    out = {}
    for name, col in columns.items():
        if isinstance(col, (pa.Array, pa.ChunkedArray)):
            col = pc.take(col, pa.array(rows))
            if pa.types.is_floating(col.type):
                col = col.to_pandas()
            else:
                col = pc.cast(col, pa.string()).to_pandas().astype("str")
        else:
            col = np.asarray(col)[rows]
        out[name] = pd.Series(col).reset_index(drop=True)
    return pd.DataFrame(out)


def _lab_flags(itemid: np.ndarray, valuenum: np.ndarray) -> pd.Series:
    """'abnormal' outside the reference range (shared with the synthetic hospital), else null."""
    items = np.unique(itemid)
    lo = np.array([LAB_REFERENCE_RANGES.get(int(i), (-np.inf, np.inf))[0] for i in items])
    hi = np.array([LAB_REFERENCE_RANGES.get(int(i), (-np.inf, np.inf))[1] for i in items])
    idx = np.searchsorted(items, itemid)
    abnormal = (valuenum < lo[idx]) | (valuenum > hi[idx]) if len(itemid) else np.zeros(0, bool)
    return pd.Series(np.where(abnormal, "abnormal", None), dtype="str")


def cohort_to_mimic_tables(cohort: StagedCohort, *, seed: int = 0, start_subject_id: int = 1_000_000,
                           include_dictionaries: bool = True) -> dict[str, pd.DataFrame]:
    """MIMIC-III-shaped tables (lowercase columns, official order) for a marts-shaped cohort.

    Returns PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD, PROCEDURES_ICD, CHARTEVENTS and
    LABEVENTS, plus the dictionary tables (D_ICD_*, D_ITEMS, D_LABITEMS) unless
    `include_dictionaries` is False, so the output is a complete source for staging.
    """
    cohort.validate_columns("synthetic cohort")
    rng = np.random.default_rng(seed)
    visits = cohort.visits.sort_values(["subject_id", "visit_index"], kind="stable").reset_index(drop=True)
    if visits["icustay_id"].duplicated().any():
        dup = visits.loc[visits["icustay_id"].duplicated(), "icustay_id"].iloc[0]
        raise ValueError(f"synthetic cohort: visits.icustay_id must be unique; {dup!r} repeats")
    n = len(visits)
    visit_row = pd.Series(np.arange(n), index=visits["icustay_id"].to_numpy())
    max_hours = np.zeros(n)
    if len(cohort.measurements):
        mh = cohort.measurements.groupby("icustay_id")["hours"].max()
        max_hours = mh.reindex(visits["icustay_id"]).fillna(0).to_numpy(dtype=float)
    t = _visit_times(visits, rng, max_hours)
    ids = {
        "subject": start_subject_id + t["group"],
        "hadm": start_subject_id + 10_000_000 + np.arange(n),
        "icustay": start_subject_id + 20_000_000 + np.arange(n),
    }

    patients = _patients(visits, t, ids, rng)
    careunit = _text(visits, "first_careunit", "MICU")
    database = (visits["icu_database"].astype(object).where(visits["icu_database"].notna(), None)
                .reset_index(drop=True) if "icu_database" in visits.columns
                else pd.Series([None] * n, dtype=object))
    admissions = _admissions(visits, t, ids)
    icustays = _icustays(t, ids, careunit, database)

    # codes -----------------------------------------------------------------------------------
    codes = cohort.visit_codes
    code_tables = {}
    for code_type, table in (("diagnosis", "DIAGNOSES_ICD"), ("procedure", "PROCEDURES_ICD")):
        part = codes[codes["code_type"] == code_type]
        code_tables[table] = _code_rows(part, visit_row, ids, table)
    bad_types = sorted(set(codes["code_type"].dropna()) - {"diagnosis", "procedure"})
    if bad_types:
        raise ValueError(f"synthetic cohort: visit_codes.code_type must be 'diagnosis' or "
                         f"'procedure', got {bad_types}")

    chart, lab = _events(cohort, visit_row, ids, t["intime"], database.to_numpy(dtype=object), rng)
    # MIMIC's flag says whether the admission has CHARTEVENTS rows; readers trust it to find events.
    admissions["has_chartevents_data"] = np.isin(ids["hadm"], chart["hadm_id"].to_numpy()).astype(np.int64)
    tables = {"PATIENTS": patients, "ADMISSIONS": admissions, "ICUSTAYS": icustays, **code_tables,
              "CHARTEVENTS": chart, "LABEVENTS": lab}
    if include_dictionaries:
        tables.update(_dictionaries(code_tables))
    return tables


def _text(visits: pd.DataFrame, column: str, default: str) -> pd.Series:
    return visits[column].astype("str").where(visits[column].notna(), default).reset_index(drop=True)


def _patients(visits: pd.DataFrame, t: dict, ids: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """PATIENTS: DOB from the first visit's age (> 89 shifted ~300 years, as MIMIC does), DOD from
    the last in-hospital death."""
    first = t["first"]
    n_pat = int(first.sum())
    age = _float(visits, "age_years", "visits")
    capped = visits["age_is_capped"].fillna(False).to_numpy(dtype=bool) | (age >= 90)
    age0 = np.where(np.isnan(age), 65.0, age)[first]
    shifted = np.where(capped[first], 300 + rng.uniform(0, .9, n_pat), age0)
    intime0 = t["intime"][first]
    dob = (intime0 - (shifted * _SECONDS_PER_YEAR).astype(np.int64)) // 86400 * 86400
    death_at = np.where(t["died"], t["dischtime"], np.iinfo(np.int64).min)
    last_death = np.maximum.reduceat(death_at, np.flatnonzero(first)) if len(visits) else death_at
    has_death = last_death > np.iinfo(np.int64).min
    dod = np.where(has_death, last_death // 86400 * 86400, 0)
    gender = visits["gender"].to_numpy()[first]
    if not set(pd.Series(gender).dropna()) <= {"M", "F"}:
        raise ValueError(f"synthetic cohort: visits.gender must be 'M' or 'F', got {sorted(set(gender))}")
    return pd.DataFrame({
        "row_id": np.arange(1, n_pat + 1),
        "subject_id": ids["subject"][first],
        "gender": pd.Series(gender, dtype="str"),
        "dob": _as_datetime(dob),
        "dod": _as_datetime(dod, ~has_death),
        "dod_hosp": _as_datetime(dod, ~has_death),
        "dod_ssn": _as_datetime(dod, ~has_death),
        "expire_flag": has_death.astype(np.int64),
    })


def _admissions(visits: pd.DataFrame, t: dict, ids: dict[str, np.ndarray]) -> pd.DataFrame:
    """ADMISSIONS: one per visit; `has_chartevents_data` is set once the events are written."""
    n, died = len(visits), t["died"]
    adm_type = _text(visits, "admission_type", "EMERGENCY")
    ethnicity = _text(visits, "ethnicity_group", "UNKNOWN").map(lambda g: _ETHNICITY.get(g, g))
    return pd.DataFrame({
        "row_id": np.arange(1, n + 1),
        "subject_id": ids["subject"],
        "hadm_id": ids["hadm"],
        "admittime": _as_datetime(t["admittime"]),
        "dischtime": _as_datetime(t["dischtime"]),
        "deathtime": _as_datetime(t["dischtime"], ~died),
        "admission_type": adm_type,
        "admission_location": adm_type.map(lambda a: _ADMISSION_LOCATION.get(a, "EMERGENCY ROOM ADMIT")),
        "discharge_location": pd.Series(np.where(died, "DEAD/EXPIRED", "HOME"), dtype="str"),
        "insurance": _text(visits, "insurance", "Medicare"),
        "language": pd.Series([None] * n, dtype="str"),
        "religion": pd.Series([None] * n, dtype="str"),
        "marital_status": pd.Series([None] * n, dtype="str"),
        "ethnicity": ethnicity,
        "edregtime": _as_datetime(np.zeros(n, np.int64), np.ones(n, bool)),
        "edouttime": _as_datetime(np.zeros(n, np.int64), np.ones(n, bool)),
        "diagnosis": pd.Series([None] * n, dtype="str"),
        "hospital_expire_flag": died.astype(np.int64),
        "has_chartevents_data": np.ones(n, dtype=np.int64),
    })


def _icustays(t: dict, ids: dict[str, np.ndarray], careunit: pd.Series, database: pd.Series) -> pd.DataFrame:
    """ICUSTAYS: one per visit, DBSOURCE the visit's ICU database (metavision when unknown)."""
    n = len(careunit)
    ward = careunit.map(lambda c: _WARD.get(c, 23)).to_numpy(dtype=np.int64)
    return pd.DataFrame({
        "row_id": np.arange(1, n + 1),
        "subject_id": ids["subject"],
        "hadm_id": ids["hadm"],
        "icustay_id": ids["icustay"],
        "dbsource": database.fillna("metavision").astype("str"),
        "first_careunit": careunit,
        "last_careunit": careunit,
        "first_wardid": ward,
        "last_wardid": ward,
        "intime": _as_datetime(t["intime"]),
        "outtime": _as_datetime(t["outtime"]),
        "los": np.round((t["outtime"] - t["intime"]) / 86400.0, 4),
    })


def _code_rows(part: pd.DataFrame, visit_row: pd.Series, ids: dict[str, np.ndarray], table: str) -> pd.DataFrame:
    codes = part["icd9_code"]
    non_null = codes.dropna()
    if len(non_null) and not all(isinstance(c, str) for c in non_null):
        example = next(c for c in non_null if not isinstance(c, str))
        raise ValueError(
            f"synthetic cohort: visit_codes.icd9_code must be strings (leading zeros matter), "
            f"got {example!r} for a {table} row"
        )
    pos = visit_row.reindex(part["icustay_id"].to_numpy()).to_numpy(dtype=float)
    if np.isnan(pos).any():
        missing = part["icustay_id"].to_numpy()[np.isnan(pos)][0]
        raise ValueError(f"synthetic cohort: visit_codes.icustay_id {missing!r} is not in visits")
    pos = pos.astype(np.int64)
    seq = pd.to_numeric(part["seq_num"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    order = np.lexsort((np.arange(len(pos)), np.nan_to_num(seq, nan=np.inf), pos)) if len(pos) else pos
    pos, seq = pos[order], seq[order]
    # seq_num restarts at 1 per admission, in the cohort's order
    start = np.r_[True, pos[1:] != pos[:-1]] if len(pos) else np.zeros(0, bool)
    run = np.arange(len(pos)) - np.maximum.accumulate(np.where(start, np.arange(len(pos)), 0))
    frame = pd.DataFrame({
        "row_id": np.arange(1, len(pos) + 1),
        "subject_id": ids["subject"][pos],
        "hadm_id": ids["hadm"][pos],
        "seq_num": run + 1,
        "icd9_code": pd.Series(codes.to_numpy()[order], dtype="str"),
    })
    return frame


def _dictionaries(code_tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Built-in dictionaries, extended with any cohort code they lack (title unknown)."""
    out = dictionary_tables()
    for d_table, table in (("D_ICD_DIAGNOSES", "DIAGNOSES_ICD"), ("D_ICD_PROCEDURES", "PROCEDURES_ICD")):
        known = out[d_table]
        used = code_tables[table]["icd9_code"].dropna().unique()
        extra = sorted(set(used) - set(known["icd9_code"]))
        if extra:
            add = pd.DataFrame({"row_id": np.arange(len(known) + 1, len(known) + len(extra) + 1),
                                "icd9_code": extra, "short_title": "Unknown code",
                                "long_title": "Code outside the built-in dictionary"})
            out[d_table] = pd.concat([known, add], ignore_index=True)
    return out


__all__ = ["cohort_to_mimic_tables", "write_mimic_tables", "DECODED_TABLES", "DICTIONARY_TABLES"]
