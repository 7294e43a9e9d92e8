"""A built-in synthetic hospital that writes raw MIMIC-III v1.4 tables.

It is the project's default data source (no real data needed) and its scale generator: every
step is vectorized numpy, patients are generated in chunks and each table is streamed to its
CSV (optionally gzip) file, so memory stays bounded whatever the size.

What it shares with the decoder lives in modules of their own: the table schemas and the CSV
writer in `mimic_tables.py`, the item catalogue, the built-in ICD-9 codes and the dictionary
tables in `mimic_dictionaries.py`.

Nothing here is real patient data: every row comes from the random model below.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synehrgy_assets.core.mimic_dictionaries import (
    GCS_VERBAL_ETT,
    ITEM_DECIMALS,
    ITEM_OFFSET,
    ITEM_SCALE,
    ITEM_UOM,
    LAB_REFERENCE_RANGES,
    MAX_ITEMID,
    UOM_VALUES,
    CodeUniverse,
    code_universe,
    dictionary_tables,
    event_value_columns,
    fixed_decimals_text,
    round_values,
    text_codes,
)
from synehrgy_assets.core.mimic_tables import (
    HOSPITAL_TABLES,
    MimicTableWriter,
    atomic_table_dir,
    dict_array,
    table_filename,
)

# Clinical clusters: co-occurring codes, procedures and admission diagnosis text. The first
# code of a cluster is its principal diagnosis when the cluster is the admission's primary.
_CLUSTERS: dict[str, dict] = {
    "sepsis": dict(
        dx={"0389": .75, "99591": .4, "99592": .45, "5990": .3, "486": .25, "03842": .08,
            "03811": .05, "03812": .05, "03849": .06, "0380": .04, "7907": .05, "0414": .15,
            "04111": .06, "04104": .05, "0413": .05, "00845": .08, "6826": .05, "99662": .04,
            "1120": .05, "1125": .02, "2762": .25, "2875": .15, "2866": .03, "V090": .04},
        px={"3893": .6, "0014": .06, "0017": .15, "9904": .2},
        text=["SEPSIS", "FEVER", "PNEUMONIA", "UROSEPSIS", "FEVER, HYPOTENSION"]),
    "resp_failure": dict(
        dx={"51881": .85, "486": .4, "5070": .25, "5119": .25, "5180": .2, "51884": .1,
            "51882": .08, "79902": .1, "4821": .04, "48241": .04, "41519": .04},
        px={"9604": .7, "9390": .15, "3324": .08, "3322": .1, "3491": .1, "966": .35, "3893": .3},
        text=["RESPIRATORY FAILURE", "PNEUMONIA", "HYPOXIA", "SHORTNESS OF BREATH"]),
    "aki": dict(
        dx={"5849": .85, "5845": .15, "2762": .3, "2767": .25, "2761": .15, "27651": .1, "27669": .08},
        px={"3995": .2, "3895": .15},
        text=["ACUTE RENAL FAILURE", "RENAL FAILURE"]),
    "acs": dict(
        dx={"41071": .5, "41401": .8, "4111": .1, "41011": .12, "41041": .1, "4139": .05,
            "2724": .4, "V4582": .15, "412": .1, "4271": .06, "42741": .03},
        px={"3722": .5, "8856": .55, "0066": .55, "3607": .4, "3606": .08, "0045": .35,
            "0046": .1, "0040": .4, "0041": .1, "8853": .3, "3761": .05, "8872": .2},
        text=["STEMI", "CHEST PAIN", "CORONARY ARTERY DISEASE", "NON-ST ELEVATION MYOCARDIAL INFARCTION"]),
    "cardiac_surgery": dict(
        dx={"41401": .85, "4241": .3, "4240": .15, "99811": .08, "E8788": .3, "E8782": .1,
            "9971": .2, "2851": .3, "42731": .25, "V433": .03, "4412": .05, "4233": .03,
            "45829": .2, "2724": .4},
        px={"3961": .9, "3615": .75, "3612": .35, "3613": .3, "3521": .25, "3723": .3,
            "8872": .35, "3891": .4, "9904": .35, "9672": .0},
        text=["CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA",
              "AORTIC STENOSIS\\AORTIC VALVE REPLACEMENT /SDA", "MITRAL REGURGITATION;CORONARY ARTERY DISEASE"]),
    "chf": dict(
        dx={"4280": .85, "42731": .45, "42823": .15, "42833": .15, "42832": .1, "42822": .1,
            "4254": .08, "4240": .12, "4168": .06, "V5861": .3, "V4501": .08, "7823": .05, "42732": .06},
        px={"8872": .25},
        text=["CONGESTIVE HEART FAILURE", "ATRIAL FIBRILLATION", "SHORTNESS OF BREATH"]),
    "copd": dict(
        dx={"496": .6, "49121": .35, "3051": .25, "V1582": .3, "32723": .1, "49390": .1, "51883": .08},
        px={"9390": .1},
        text=["COPD EXACERBATION", "SHORTNESS OF BREATH"]),
    "diabetes": dict(
        dx={"25000": .75, "25060": .15, "25040": .1, "25001": .08, "3572": .1, "V5867": .3, "2724": .3},
        px={},
        text=["HYPERGLYCEMIA"]),
    "dka": dict(
        dx={"25013": .9, "2762": .6, "2761": .2, "27651": .3},
        px={},
        text=["DIABETIC KETOACIDOSIS"]),
    "ckd": dict(
        dx={"5859": .45, "40390": .35, "5853": .15, "5854": .1, "5856": .15, "40391": .15,
            "28521": .2, "V4511": .1, "2767": .1},
        px={"3995": .1},
        text=["RENAL FAILURE"]),
    "liver": dict(
        dx={"5715": .5, "5712": .3, "5723": .35, "5722": .25, "5724": .08, "07054": .2,
            "07070": .1, "30390": .2, "78959": .2, "4560": .1, "2875": .3, "2869": .2, "570": .05, "5733": .05},
        px={"5491": .35, "4443": .1, "4516": .1},
        text=["LIVER FAILURE", "CIRRHOSIS", "HEPATIC ENCEPHALOPATHY"]),
    "gi_bleed": dict(
        dx={"5789": .6, "5781": .3, "5780": .2, "2851": .5, "2800": .15, "53081": .15, "4560": .05},
        px={"9904": .7, "4513": .5, "4443": .2, "4523": .2, "4516": .15, "9907": .15},
        text=["GASTROINTESTINAL BLEED", "UPPER GI BLEED", "LOWER GI BLEED"]),
    "neuro": dict(
        dx={"431": .35, "430": .15, "4321": .15, "43491": .25, "43411": .08, "3481": .05,
            "3485": .1, "34831": .1, "78039": .1, "3453": .03, "43310": .05, "78097": .1},
        px={"8703": .4, "0124": .12, "0131": .08, "8891": .2, "9604": .3, "0331": .05},
        text=["INTRACRANIAL HEMORRHAGE", "STROKE", "SUBARACHNOID HEMORRHAGE", "SEIZURE", "ALTERED MENTAL STATUS"]),
    "trauma": dict(
        dx={"85220": .3, "8052": .15, "8054": .1, "80702": .15, "80703": .1, "8600": .15,
            "8208": .15, "85200": .15, "E8859": .25, "E8120": .2, "E8889": .15, "E8490": .2, "E8499": .1},
        px={"8703": .5, "7935": .1, "3404": .15, "8741": .3, "9904": .25, "8151": .05},
        text=["MOTOR VEHICLE ACCIDENT", "S/P FALL", "TRAUMA", "SUBDURAL HEMATOMA"]),
    "cancer": dict(
        dx={"1977": .3, "1970": .25, "1629": .25, "1983": .12, "1985": .1, "20500": .08,
            "20300": .05, "1550": .06, "1579": .06, "1509": .04, "1541": .04, "1749": .05,
            "185": .04, "1991": .04, "E9331": .15, "2639": .15},
        px={"9915": .15, "3893": .3},
        text=["LUNG CANCER", "ACUTE MYELOID LEUKEMIA", "NEUTROPENIC FEVER"]),
    "newborn": dict(
        dx={"V3000": .6, "V3001": .4, "V053": .8, "V290": .5, "7742": .2, "76518": .15, "7706": .1},
        px={"9955": .7, "9983": .15},
        text=["NEWBORN"]),
}
_CLUSTER_NAMES = list(_CLUSTERS)
_ACUTE_CLUSTERS = ["sepsis", "resp_failure", "aki", "acs", "cardiac_surgery", "gi_bleed", "neuro",
                   "trauma", "dka"]
_MISC_PRINCIPAL = [("78650", "CHEST PAIN"), ("78097", "ALTERED MENTAL STATUS"), ("4589", "HYPOTENSION"),
                   ("78900", "ABDOMINAL PAIN"), ("78060", "FEVER"), ("7802", "SYNCOPE"),
                   ("5770", "PANCREATITIS"), ("5609", "SMALL BOWEL OBSTRUCTION")]

# Background comorbidities: code -> (probability at age 65, log-odds change per decade)
_BACKGROUND_DX: dict[str, tuple[float, float]] = {
    "4019": (.38, .35), "2724": (.22, .25), "53081": (.12, .1), "2449": (.08, .2), "311": (.07, -.1),
    "3051": (.07, -.3), "27800": (.04, -.2), "27801": (.03, -.3), "2859": (.14, .1), "2761": (.08, .1),
    "2760": (.06, .2), "2768": (.06, 0), "2875": (.04, 0), "42731": (.14, .5), "4280": (.1, .45),
    "41401": (.14, .4), "412": (.04, .3), "V5861": (.06, .3), "V1582": (.08, 0), "25000": (.14, .1),
    "496": (.06, .3), "71590": (.04, .4), "73300": (.04, .6), "60000": (.04, .5), "3310": (.02, .9),
    "2930": (.05, .4), "2948": (.03, .6), "4439": (.04, .4), "V4581": (.04, .4), "V4582": (.03, .3),
    "V103": (.02, .2), "V1046": (.015, .4), "V1251": (.02, .2), "V1254": (.02, .4), "V5866": (.04, .3),
    "E9342": (.015, .3), "E9320": (.015, 0), "99859": (.01, 0), "E8798": (.02, 0), "4589": (.05, .1),
    "45829": (.02, 0), "70703": (.02, .4), "2749": (.02, .3), "30000": (.04, -.2), "5119": (.04, .1),
    "78820": (.02, .3), "2752": (.03, 0), "27541": (.02, 0), "28529": (.02, .2), "4400": (.02, .4),
    "44021": (.01, .4), "4414": (.01, .5), "4160": (.015, .1), "V440": (.01, 0), "V4986": (.02, .6),
    "5589": (.02, 0), "78791": (.02, 0), "4580": (.015, .4), "9961": (.01, 0), "9975": (.01, .2),
    "99812": (.01, 0), "29181": (.02, -.5), "30500": (.03, -.5), "E8497": (.01, .5), "34830": (.01, .3),
}

_BACKGROUND_PX: dict[str, float] = {
    "3893": .25, "966": .08, "9904": .1, "9915": .03, "3891": .05, "8962": .02, "8964": .02,
    "4311": .02, "8628": .01, "8622": .01, "5123": .01, "5110": .01, "4573": .01, "5411": .01,
    "3844": .005, "3971": .005, "3950": .01, "3778": .01, "9960": .01, "9962": .01, "9905": .03,
}

# ---------------------------------------------------------------------------------------------
# Vectorized helpers
# ---------------------------------------------------------------------------------------------

_SECONDS_PER_YEAR = 365.2425 * 86400.0
NO_TIME = np.iinfo(np.int64).min  # "no timestamp" (epoch seconds may be negative: births before 1970)
_EPOCH_2100 = int(np.datetime64("2100-01-01T00:00:00", "s").astype(np.int64))
_EPOCH_2190 = int(np.datetime64("2190-01-01T00:00:00", "s").astype(np.int64))


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups with `counts` items: (group index, index within group) per item."""
    counts = np.asarray(counts, dtype=np.int64)
    group = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
    return group, within


def _group_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each group (items sorted by group)."""
    total = np.cumsum(values)
    first = np.r_[True, group[1:] != group[:-1]]
    base = (total - values)[first]
    return total - base[np.cumsum(first) - 1]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _choice(rng, options: list, probs: list[float], size: int) -> np.ndarray:
    """Indices into `options` drawn with `probs` (normalized)."""
    p = np.asarray(probs, dtype=float)
    return rng.choice(len(options), size=size, p=p / p.sum())


def _floor_day(seconds: np.ndarray) -> np.ndarray:
    return (seconds // 86400) * 86400


def _ts(seconds: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64), type=pa.int64(), mask=mask)


# ---------------------------------------------------------------------------------------------
# Configuration and summary
# ---------------------------------------------------------------------------------------------

DEFAULT_CHART_DENSITY = 7.0  # expected CHARTEVENTS rows per ICU-stay hour at the default settings
_ROWS_PER_TICK = 7.45  # rows one charting round writes on average (measured; see _chart_events)


@dataclass
class HospitalConfig:
    """Settings of one synthetic hospital draw."""

    n_patients: int = 1000
    seed: int = 0
    header_case: str = "lower"  # 'lower' = open demo layout, 'upper' = full release
    compress: bool = True  # TABLE.csv.gz vs TABLE.csv
    chart_rows_per_stay_hour: float = DEFAULT_CHART_DENSITY  # density knob for scale runs
    chartevents_rows_target: int | None = None  # if set, overrides the density
    chunk_patients: int = 5000
    max_rows_per_chunk: int = 1_000_000
    code_dictionary_dir: str | Path | None = None  # a MIMIC dir whose D_ICD_* widen the code tail
    gzip_level: int = 1

    def validate(self) -> None:
        if self.n_patients < 1:
            raise ValueError(f"HospitalConfig.n_patients must be >= 1, got {self.n_patients}")
        if self.header_case not in ("lower", "upper"):
            raise ValueError(f"HospitalConfig.header_case must be 'lower' or 'upper', got {self.header_case!r}")
        if not self.chart_rows_per_stay_hour > 0:
            raise ValueError("HospitalConfig.chart_rows_per_stay_hour must be > 0")
        if self.chunk_patients < 1:
            raise ValueError("HospitalConfig.chunk_patients must be >= 1")


@dataclass
class HospitalSummary:
    """What one `generate_hospital` call wrote."""

    out_dir: Path
    rows: dict[str, int]
    n_patients: int
    n_admissions: int
    n_icustays: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    chart_rows_per_stay_hour: float = DEFAULT_CHART_DENSITY
    chartevents_rows_per_second: float = 0.0

    def describe(self) -> str:
        lines = [f"synthetic hospital -> {self.out_dir}",
                 f"  patients {self.n_patients:,}  admissions {self.n_admissions:,}  "
                 f"icu stays {self.n_icustays:,}  in {self.seconds:.1f} s"]
        for table, n in self.rows.items():
            lines.append(f"  {table:<17} {n:>13,} rows")
        lines.append(f"  CHARTEVENTS rate {self.chartevents_rows_per_second:,.0f} rows/s overall "
                     f"(density {self.chart_rows_per_stay_hour:.2f} rows per stay-hour)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Vocabularies for the administrative columns (MIMIC spellings)
# ---------------------------------------------------------------------------------------------

_ETHNICITIES = ["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC OR LATINO", "ASIAN", "OTHER",
                "UNKNOWN/NOT SPECIFIED", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER",
                "HISPANIC/LATINO - PUERTO RICAN", "ASIAN - CHINESE", "WHITE - RUSSIAN",
                "BLACK/CAPE VERDEAN", "MULTI RACE ETHNICITY", "AMERICAN INDIAN/ALASKA NATIVE"]
_ETHNICITY_P = [.70, .09, .025, .025, .025, .07, .015, .01, .01, .008, .008, .006, .004, .004]
_INSURANCE = ["Medicare", "Private", "Medicaid", "Government", "Self Pay"]
_LANGUAGES = ["ENGL", "SPAN", "RUSS", "PTUN", "CANT", "HAIT", None]
_LANGUAGE_P = [.86, .04, .02, .015, .01, .01, .045]
_RELIGIONS = ["CATHOLIC", "NOT SPECIFIED", "UNOBTAINABLE", "PROTESTANT QUAKER", "JEWISH", "OTHER",
              "EPISCOPALIAN", "GREEK ORTHODOX", "CHRISTIAN SCIENTIST", "BUDDHIST", "MUSLIM", None]
_RELIGION_P = [.35, .2, .13, .12, .08, .04, .015, .01, .01, .005, .005, .035]
_MARITAL = ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "SEPARATED", "UNKNOWN (DEFAULT)", "LIFE PARTNER", None]
_MARITAL_P = [.46, .24, .13, .06, .01, .005, .001, .094]
_ADM_LOCATIONS = ["EMERGENCY ROOM ADMIT", "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL/PREMATURE",
                  "PHYS REFERRAL/NORMAL DELI", "TRANSFER FROM SKILLED NUR", "TRANSFER FROM OTHER HEALT"]
_DISCH_LOCATIONS = ["HOME", "HOME HEALTH CARE", "SNF", "REHAB/DISTINCT PART HOSP", "LONG TERM CARE HOSPITAL",
                    "SHORT TERM HOSPITAL", "DISC-TRAN CANCER/CHLDRN H", "HOSPICE-HOME",
                    "LEFT AGAINST MEDICAL ADVI", "DEAD/EXPIRED"]
_DISCH_P = [.3, .26, .2, .12, .04, .03, .02, .02, .01]
_CAREUNITS = ["MICU", "SICU", "CSRU", "CCU", "TSICU", "NICU"]
_ADMISSION_TYPES = ["EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"]
_DBSOURCES = ["carevue", "metavision"]
_RESULTSTATUS = [None, "Manual", "Final"]
_STOPPED = ["NotStopd", "D/C'd", None]
_LAB_TEXT = ["UNABLE TO REPORT", "COMPUTER NETWORK FAILURE. TEST NOT RESULTED.", "LESS THAN 0.4",
             "GREATER THAN 500", "HEMOLYZED SPECIMEN"]

# Mortality model intercept, calibrated once so the in-hospital death rate of adult
# admissions is about 10 % (see tests/test_synthetic_hospital.py for the accepted band).
_MORTALITY_INTERCEPT = -3.0


# ---------------------------------------------------------------------------------------------
# Structure: patients, admissions, ICU stays, codes
# ---------------------------------------------------------------------------------------------

@dataclass
class _Structure:
    # patients
    subject_id: np.ndarray
    male: np.ndarray
    dob: np.ndarray
    dod: np.ndarray  # NO_TIME when alive
    dod_hosp: np.ndarray
    dod_ssn: np.ndarray
    ethnicity: np.ndarray
    carevue: np.ndarray
    # admissions (sorted by patient, then time)
    a_patient: np.ndarray
    hadm_id: np.ndarray
    admittime: np.ndarray
    dischtime: np.ndarray
    deathtime: np.ndarray  # NO_TIME when survived
    a_type: np.ndarray
    a_location: np.ndarray
    d_location: np.ndarray
    insurance: np.ndarray
    language: np.ndarray
    religion: np.ndarray
    marital: np.ndarray
    ed_in: np.ndarray
    ed_out: np.ndarray
    diagnosis: list[str]
    diagnosis_idx: np.ndarray
    died: np.ndarray
    n_stays: np.ndarray
    age: np.ndarray  # real age in years at admission (> 89 kept real here)
    s_adm: np.ndarray
    clusters: np.ndarray  # (n_adm, n_clusters) bool
    # stays (sorted by admission, then time)
    s_adm_index: np.ndarray
    icustay_id: np.ndarray
    first_cu: np.ndarray
    last_cu: np.ndarray
    first_ward: np.ndarray
    last_ward: np.ndarray
    intime: np.ndarray
    outtime: np.ndarray
    s_stay: np.ndarray
    drift: np.ndarray
    intubated: np.ndarray
    art_line: np.ndarray
    # codes (row per code, sorted by admission and seq_num)
    dx_adm: np.ndarray
    dx_code: np.ndarray  # index into the universe, -1 = missing code
    px_adm: np.ndarray
    px_code: np.ndarray


def _structure(rng: np.random.Generator, n: int, patient_offset: int, id_offsets: dict[str, int],
               universe: CodeUniverse) -> _Structure:
    """Patients, admissions, stays and codes for one chunk of `n` patients."""
    g = patient_offset + np.arange(n)
    subject_id = 10_000 + 2 * g + rng.integers(0, 2, n)
    kind = _choice(rng, ["adult", "old", "neonate", "teen"], [.935, .05, .009, .006], n)
    neonate, old, teen = kind == 2, kind == 1, kind == 3
    male = rng.random(n) < np.where(neonate, .5, .56)
    age_first = np.where(old, 90 + rng.gamma(2.0, 1.8, n), 18 + 71.9 * rng.beta(2.6, 1.5, n))
    age_first = np.where(neonate, 0.0, np.where(teen, rng.uniform(15, 18, n), age_first))
    frailty = rng.normal(0, 1, n)
    carevue = rng.random(n) < .52
    ethnicity = _choice(rng, _ETHNICITIES, _ETHNICITY_P, n)
    base = rng.integers(_EPOCH_2100, _EPOCH_2190, n) // 60 * 60

    # admissions ------------------------------------------------------------------------------
    n_adm = 1 + _choice(rng, [0, 1, 2, 3], [.87, .09, .03, .01], n)
    n_adm[neonate] = 1
    a_pat, a_k = _expand(n_adm)
    m = len(a_pat)
    elective = (rng.random(m) < .16) & ~neonate[a_pat]
    urgent = (rng.random(m) < .035) & ~elective & ~neonate[a_pat]
    a_type = np.where(neonate[a_pat], 3, np.where(elective, 1, np.where(urgent, 2, 0)))
    gap_days = np.where(a_k > 0, np.clip(rng.lognormal(np.log(150), 1.0, m), 2, 2000), 0.0)
    s_adm = 0.45 * frailty[a_pat] + 0.9 * rng.normal(0, 1, m) - 0.5 * elective
    age_a0 = age_first[a_pat]  # refined below once admit times are known
    n_stays = 1 + _choice(rng, [0, 1, 2], [.95, .045, .005], m)
    n_stays[(a_k > 0) & (rng.random(m) < .12)] = 0

    # clusters (chronic first, acute depend on them) ----------------------------------------------
    a = (np.minimum(age_a0, 90) - 65) / 10
    mal = male[a_pat].astype(float)
    C = {}

    def draw(name, logit):
        C[name] = (rng.random(m) < _sigmoid(logit)) & ~neonate[a_pat]

    draw("copd", -2.3 + .25 * a)
    draw("diabetes", -1.5 + .1 * a)
    draw("chf", -1.7 + .45 * a + .2 * s_adm)
    draw("ckd", -2.4 + .35 * a)
    draw("liver", -2.9 - .1 * a + .3 * s_adm)
    draw("cancer", -2.5 + .2 * a)
    draw("sepsis", -1.8 + .9 * s_adm + .4 * C["cancer"] + .3 * C["liver"] - 1.5 * elective)
    draw("resp_failure", -1.7 + .8 * s_adm + 1.0 * C["copd"] + .5 * C["sepsis"] - 1.0 * elective)
    draw("aki", -1.9 + .6 * s_adm + .9 * C["sepsis"] + .7 * C["ckd"] + .4 * C["liver"])
    draw("acs", -2.0 + .3 * a + .6 * mal - .3 * s_adm + .4 * C["chf"] - 2.0 * elective)
    draw("cardiac_surgery", -3.6 + 3.4 * elective + .2 * a)
    draw("gi_bleed", -2.6 + .9 * C["liver"] + .2 * s_adm - elective)
    draw("neuro", -2.2 + .15 * a + .4 * s_adm - .5 * elective)
    draw("trauma", -2.3 - .35 * a + .5 * mal - 1.5 * elective)
    draw("dka", -3.6 + 1.6 * C["diabetes"] - .4 * a - elective)
    C["newborn"] = neonate[a_pat].copy()
    clusters = np.stack([C[name] for name in _CLUSTER_NAMES], axis=1)
    septic_shock = C["sepsis"] & (s_adm > .6) & (rng.random(m) < .6)
    cardiogenic = (C["chf"] | C["acs"]) & (s_adm > 1.0) & (rng.random(m) < .4)

    # primary cluster: one of the active acute ones, else a chronic one, else a misc diagnosis
    acute_idx = [_CLUSTER_NAMES.index(c) for c in _ACUTE_CLUSTERS]
    score = np.where(clusters, rng.random(clusters.shape) + 0.1, -1.0)
    score[:, acute_idx] += np.where(clusters[:, acute_idx], 1.0, 0.0)
    primary = np.where(score.max(axis=1) > 0, score.argmax(axis=1), -1)

    # mortality -------------------------------------------------------------------------------
    logit = (_MORTALITY_INTERCEPT + .35 * a + 1.0 * s_adm + .9 * septic_shock + .9 * cardiogenic
             + .4 * C["sepsis"] + .5 * C["resp_failure"] + .7 * C["neuro"] + .6 * C["liver"]
             + .6 * C["cancer"] + .3 * C["aki"] - 1.2 * elective - .8 * C["cardiac_surgery"])
    logit = np.where(neonate[a_pat], -5.0, logit)
    died = rng.random(m) < _sigmoid(logit)
    # nobody is admitted after dying: drop a patient's admissions after the first death
    died_before = _group_cumsum(died.astype(np.int64), a_pat) - died > 0
    keep = ~died_before
    sel = np.flatnonzero(keep)
    a_pat, a_k, a_type, gap_days, s_adm, n_stays = (x[sel] for x in (a_pat, a_k, a_type, gap_days, s_adm, n_stays))
    clusters, primary, died = clusters[sel], primary[sel], died[sel]
    septic_shock, cardiogenic, elective = septic_shock[sel], cardiogenic[sel], elective[sel]
    m = len(sel)
    n_stays[(n_stays == 0) & died] = 1  # deaths happen to ICU patients here

    # ICU stays inside each admission ------------------------------------------------------------
    st_adm, st_k = _expand(n_stays)
    q = len(st_adm)
    cl = {name: clusters[:, i] for i, name in enumerate(_CLUSTER_NAMES)}
    s_stay = s_adm[st_adm] + rng.normal(0, .3, q)
    is_nb = cl["newborn"][st_adm]
    los_h = np.clip(rng.lognormal(np.log(45) + .25 * s_stay, .7), 12, 240)
    los_h = np.where(is_nb, np.clip(rng.lognormal(np.log(60), .9, q), 12, 240), los_h)
    stay_gap = np.where(st_k > 0, np.clip(rng.lognormal(np.log(48), .8, q), 6, 240), 0.0)
    emergency_like = a_type[st_adm] != 1
    pre = np.where(emergency_like,
                   np.where(rng.random(q) < .2, rng.uniform(24, 120, q), rng.lognormal(np.log(5), .6, q)),
                   rng.uniform(2, 6, q))
    pre = np.where(is_nb, rng.uniform(0.1, 2, q), pre)
    # intime relative to admittime (hours): first stay after `pre`, later ones after a gap
    step = np.where(st_k == 0, pre, stay_gap) + np.r_[0.0, los_h[:-1]] * (st_k > 0)
    in_rel = _group_cumsum(step, st_adm)
    out_rel = in_rel + los_h
    last_stay = np.r_[st_adm[1:] != st_adm[:-1], True]
    post = np.clip(rng.lognormal(np.log(72), .8, q), 4, 600)
    # an admission's length: after its last stay (death may come in the ICU or on the ward)
    adm_len = np.clip(rng.lognormal(np.log(96), .7, m), 24, 1500)  # admissions without ICU stays
    died_in_icu = rng.random(m) < .72
    adm_end_rel = np.full(m, np.nan)
    end_of_stays = out_rel[last_stay]
    owner = st_adm[last_stay]
    post_last = post[last_stay]
    death_delay = np.where(died_in_icu[owner], 0.0, rng.uniform(.2, 1, len(owner)) * post_last)
    adm_end_rel[owner] = end_of_stays + np.where(died[owner], death_delay, post_last)
    adm_end_rel = np.where(np.isnan(adm_end_rel), adm_len, adm_end_rel)

    # absolute times: admissions of a patient follow each other -----------------------------------
    # whole minutes, rounded up (plus a second for the rounding of intime and los) so that a
    # death in the ICU is never before the stay's outtime
    adm_secs = np.ceil((adm_end_rel * 3600 + 1) / 60) * 60
    inc = np.where(a_k > 0, np.r_[0.0, adm_secs[:-1]] + np.round(gap_days * 86400 / 60) * 60, 0.0)
    admittime = base[a_pat] + _group_cumsum(inc, a_pat).astype(np.int64)
    dischtime = admittime + adm_secs.astype(np.int64)
    deathtime = np.where(died, dischtime, NO_TIME)
    intime = admittime[st_adm] + np.round(in_rel * 3600).astype(np.int64)
    outtime = intime + np.round(los_h * 3600).astype(np.int64)
    age = age_first[a_pat] + (admittime - base[a_pat]) / _SECONDS_PER_YEAR
    age = np.where(cl["newborn"], 0.0, age)

    # patients: birth and death ---------------------------------------------------------------
    first_adm = np.r_[True, a_pat[1:] != a_pat[:-1]]
    first_admit = admittime[first_adm]
    shifted_age = np.where(old, 300 + rng.uniform(0, .95, n), age_first)  # MIMIC's >89 shift
    dob = _floor_day(first_admit - (shifted_age * _SECONDS_PER_YEAR).astype(np.int64))
    dob = np.where(neonate, _floor_day(first_admit), dob)
    last_adm = np.r_[a_pat[1:] != a_pat[:-1], True]
    died_pat = died[last_adm]
    last_disch = dischtime[last_adm]
    later_death = ~died_pat & (rng.random(n) < .18) & ~neonate
    dod = np.where(died_pat, _floor_day(last_disch),
                   np.where(later_death, _floor_day(last_disch + rng.integers(1, 1500, n) * 86400), NO_TIME))
    dod_hosp = np.where(died_pat, dod, NO_TIME)
    dod_ssn = np.where((dod != NO_TIME) & (later_death | (rng.random(n) < .7)), dod, NO_TIME)

    # administrative columns --------------------------------------------------------------------
    at = a_type
    loc = np.where(at == 1, 3, np.where(at == 3, 3, _choice(rng, _ADM_LOCATIONS, [.6, .25, .12, 0, .02, .01], m)))
    dloc = np.where(died, len(_DISCH_LOCATIONS) - 1, _choice(rng, _DISCH_LOCATIONS[:-1], _DISCH_P, m))
    medicare = rng.random(m) < np.where(age >= 65, .85, .12)
    ins = np.where(medicare, 0, _choice(rng, _INSURANCE[1:], [.6, .3, .06, .04], m) + 1)
    ins = np.where(cl["newborn"], 1, ins)
    lang = _choice(rng, _LANGUAGES, _LANGUAGE_P, m)
    lang = np.where(carevue[a_pat] & (rng.random(m) < .7), len(_LANGUAGES) - 1, lang)
    relig = _choice(rng, _RELIGIONS, _RELIGION_P, m)
    marital = np.where(cl["newborn"], len(_MARITAL) - 1, _choice(rng, _MARITAL, _MARITAL_P, m))
    via_ed = loc == 0
    ed_in = np.where(via_ed, admittime - rng.integers(1, 9, m) * 3600 - rng.integers(0, 60, m) * 60, NO_TIME)
    ed_out = np.where(via_ed, admittime + rng.integers(0, 90, m) * 60, NO_TIME)
    diag_texts: list[str] = []
    for name in _CLUSTER_NAMES:
        diag_texts += _CLUSTERS[name]["text"]
    diag_texts += [t for _, t in _MISC_PRINCIPAL]
    text_start = np.cumsum([0] + [len(_CLUSTERS[nm]["text"]) for nm in _CLUSTER_NAMES])
    misc_pick = rng.integers(0, len(_MISC_PRINCIPAL), m)
    n_text = np.array([len(_CLUSTERS[nm]["text"]) for nm in _CLUSTER_NAMES])
    pick = (rng.random(m) * n_text[np.maximum(primary, 0)]).astype(np.int64)
    diagnosis_idx = np.where(primary >= 0, text_start[np.maximum(primary, 0)] + pick,
                             text_start[-1] + misc_pick)

    # stay columns ------------------------------------------------------------------------------
    cu_p = np.tile([.45, .2, .05, .15, .15, 0.0], (q, 1))
    cu_p[cl["cardiac_surgery"][st_adm]] = [0, .05, .9, .05, 0, 0]
    cu_p[(cl["acs"] | cl["chf"])[st_adm] & ~cl["cardiac_surgery"][st_adm]] = [.2, .05, .05, .7, 0, 0]
    cu_p[(cl["trauma"] | cl["neuro"])[st_adm]] = [.1, .3, 0, 0, .6, 0]
    cu_p[is_nb] = [0, 0, 0, 0, 0, 1]
    cum = np.cumsum(cu_p / cu_p.sum(axis=1, keepdims=True), axis=1)
    first_cu = (rng.random(q)[:, None] > cum).sum(axis=1)
    transfer = (rng.random(q) < .06) & ~is_nb
    last_cu = np.where(transfer & (rng.random(q) < .6), (first_cu + rng.integers(1, 5, q)) % 5, first_cu)
    first_ward = 7 + 2 * first_cu + rng.integers(0, 2, q) * 20 + rng.integers(0, 3, q) * 5
    last_ward = np.where(transfer, first_ward + rng.integers(1, 6, q), first_ward)
    # severity drifts over a stay: worse toward the end for the dying, better for the others
    dying_stay = last_stay & died[st_adm]
    drift = np.where(dying_stay, rng.uniform(.8, 1.8, q), -0.5 * np.maximum(s_stay, 0) - rng.uniform(0, .4, q))
    intub_logit = (-1.4 + 1.0 * s_stay + 1.6 * cl["resp_failure"][st_adm] + 1.0 * cl["neuro"][st_adm]
                   + 2.6 * cl["cardiac_surgery"][st_adm] + .8 * cl["trauma"][st_adm] + .6 * cl["sepsis"][st_adm])
    intubated = (rng.random(q) < _sigmoid(intub_logit)) & ~is_nb
    art_line = rng.random(q) < _sigmoid(-.8 + .8 * s_stay + 2.0 * cl["cardiac_surgery"][st_adm] + .8 * intubated)

    # diagnoses ---------------------------------------------------------------------------------
    dx_index = {c: i for i, c in enumerate(universe.dx_codes)}
    px_index = {c: i for i, c in enumerate(universe.px_codes)}
    n_dx_m, n_px_m = universe.n_dx_model, universe.n_px_model
    Wdx = np.zeros((len(_CLUSTER_NAMES), n_dx_m))
    Wpx = np.zeros((len(_CLUSTER_NAMES), n_px_m))
    for ci, name in enumerate(_CLUSTER_NAMES):
        for code, p in _CLUSTERS[name]["dx"].items():
            Wdx[ci, dx_index[code]] = p
        for code, p in _CLUSTERS[name]["px"].items():
            Wpx[ci, px_index[code]] = p
    log_q = clusters.astype(float) @ np.log1p(-np.minimum(Wdx, .999))
    bg_codes = np.array([dx_index[c] for c in _BACKGROUND_DX])
    bg_p0 = np.array([v[0] for v in _BACKGROUND_DX.values()])
    bg_slope = np.array([v[1] for v in _BACKGROUND_DX.values()])
    age_dec = (np.minimum(age, 90) - 65) / 10
    bg_p = _sigmoid(_logit(bg_p0)[None, :] + bg_slope[None, :] * age_dec[:, None])
    bg_p[cl["newborn"]] = 0.0
    log_q[:, bg_codes] += np.log1p(-bg_p)
    p_dx = 1 - np.exp(log_q)
    has = rng.random(p_dx.shape) < p_dx
    # event-driven codes: shock, death-related, dialysis status
    for flag, code in ((septic_shock, "78552"), (cardiogenic, "78551")):
        has[flag, dx_index[code]] = True
    for code, p in (("V4986", .35), ("V667", .25), ("4275", .12), ("3481", .05)):
        has[died & (rng.random(m) < p), dx_index[code]] = True
    principal = np.full(m, -1)
    with_primary = primary >= 0
    # principal diagnosis: one of the primary cluster's first (typical) codes, by weight
    cands = np.zeros((len(_CLUSTER_NAMES), n_dx_m))
    for ci, name in enumerate(_CLUSTER_NAMES):
        for code, p in list(_CLUSTERS[name]["dx"].items())[:4]:
            if code[0] not in "VE" or name == "newborn":
                cands[ci, dx_index[code]] = p
    cands_cum = np.cumsum(cands / cands.sum(axis=1, keepdims=True), axis=1)
    rows = primary[with_primary]
    principal[with_primary] = (rng.random(len(rows))[:, None] > cands_cum[rows]).sum(axis=1)
    misc_codes = np.array([dx_index[c] for c, _ in _MISC_PRINCIPAL])
    principal[~with_primary] = misc_codes[misc_pick[~with_primary]]
    # septic shock admissions are coded with sepsis first, as in MIMIC
    has[np.arange(m), principal] = True
    dx_a, dx_c = np.nonzero(has)
    key = rng.random(len(dx_a)) + (dx_c != principal[dx_a]) * 1.0
    # long tail: a few rarer codes per admission drawn with Zipf-like weights over the universe
    tail_n = np.where(cl["newborn"], 0, rng.poisson(1.2, m))
    t_a, _ = _expand(tail_n)
    u = len(universe.dx_codes)
    # P(rank r) ~ 1 / (r + 30): a long, flat-headed tail
    rank = np.minimum((30 * ((u + 30) / 30) ** rng.random(len(t_a)) - 30).astype(np.int64), u - 1)
    tail_perm = np.random.default_rng(7).permutation(u)  # fixed: same tail order for every chunk
    t_c = tail_perm[rank]
    dx_a = np.r_[dx_a, t_a]
    dx_c = np.r_[dx_c, t_c]
    key = np.r_[key, 2 + rng.random(len(t_a))]
    order = np.lexsort((key, dx_a))
    dx_a, dx_c, key = dx_a[order], dx_c[order], key[order]
    dup = np.zeros(len(dx_a), dtype=bool)
    pair = dx_a.astype(np.int64) * (u + 1) + dx_c
    _, first_pos = np.unique(pair, return_index=True)
    dup[:] = True
    dup[first_pos] = False
    dx_a, dx_c = dx_a[~dup], dx_c[~dup]
    dx_c = np.where(rng.random(len(dx_c)) < .0005, -1, dx_c)  # MIMIC has a few code-less rows

    # procedures --------------------------------------------------------------------------------
    log_qp = clusters.astype(float) @ np.log1p(-np.minimum(Wpx, .999))
    bgp_codes = np.array([px_index[c] for c in _BACKGROUND_PX])
    bgp_p = np.array(list(_BACKGROUND_PX.values()))
    log_qp[:, bgp_codes] += np.log1p(-bgp_p)[None, :]
    log_qp[cl["newborn"]] = 0.0
    has_p = rng.random(log_qp.shape) < 1 - np.exp(log_qp)
    has_p[cl["newborn"]] = False
    nb_rows = np.flatnonzero(cl["newborn"])
    for code, p in _CLUSTERS["newborn"]["px"].items():
        has_p[nb_rows[rng.random(len(nb_rows)) < p], px_index[code]] = True
    # stay-driven procedures, so codes agree with the charted data
    adm_intub = np.zeros(m, dtype=bool)
    np.logical_or.at(adm_intub, st_adm, intubated)
    long_vent = np.zeros(m, dtype=bool)
    np.logical_or.at(long_vent, st_adm, intubated & (los_h >= 96))
    adm_art = np.zeros(m, dtype=bool)
    np.logical_or.at(adm_art, st_adm, art_line)
    has_p[adm_intub & (rng.random(m) < .65), px_index["9604"]] = True
    has_p[adm_intub & ~long_vent & (rng.random(m) < .9), px_index["9671"]] = True
    has_p[long_vent & (rng.random(m) < .9), px_index["9672"]] = True
    has_p[adm_intub & (rng.random(m) < .03), px_index["9670"]] = True
    has_p[long_vent & (rng.random(m) < .15), px_index["311"]] = True
    has_p[adm_art & (rng.random(m) < .45), px_index["3891"]] = True
    has_p[~adm_intub, px_index["9671"]] = False
    has_p[~adm_intub, px_index["9672"]] = False
    px_a, px_c = np.nonzero(has_p)
    order = np.lexsort((rng.random(len(px_a)), px_a))
    px_a, px_c = px_a[order], px_c[order]

    # ids: unique blocks per chunk, shuffled inside the block so ids don't follow time
    hadm_id = 100_000 + id_offsets["hadm"] + rng.permutation(m)
    icustay_id = 200_000 + id_offsets["icustay"] + rng.permutation(q)
    id_offsets["hadm"] += m
    id_offsets["icustay"] += q

    return _Structure(
        subject_id=subject_id, male=male, dob=dob, dod=dod, dod_hosp=dod_hosp, dod_ssn=dod_ssn,
        ethnicity=ethnicity, carevue=carevue,
        a_patient=a_pat, hadm_id=hadm_id, admittime=admittime, dischtime=dischtime, deathtime=deathtime,
        a_type=a_type, a_location=loc, d_location=dloc, insurance=ins, language=lang, religion=relig,
        marital=marital, ed_in=ed_in, ed_out=ed_out, diagnosis=diag_texts, diagnosis_idx=diagnosis_idx,
        died=died, n_stays=n_stays, age=age, s_adm=s_adm, clusters=clusters,
        s_adm_index=st_adm, icustay_id=icustay_id, first_cu=first_cu, last_cu=last_cu,
        first_ward=first_ward, last_ward=last_ward, intime=intime, outtime=outtime, s_stay=s_stay,
        drift=drift, intubated=intubated, art_line=art_line,
        dx_adm=dx_a, dx_code=dx_c, px_adm=px_a, px_code=px_c,
    )


# ---------------------------------------------------------------------------------------------
# CHARTEVENTS
# ---------------------------------------------------------------------------------------------

def _chart_events(rng: np.random.Generator, S: _Structure, ticks_per_hour: float,
                  row_offset: int) -> dict[str, pa.Array]:
    """Vitals, GCS, capillary refill and a few distractor items, charted in rounds ('ticks')."""
    q = len(S.icustay_id)
    adm = S.s_adm_index
    pat = S.a_patient[adm]
    cl = {name: S.clusters[adm, i] for i, name in enumerate(_CLUSTER_NAMES)}
    carevue = S.carevue[pat]
    los_h = (S.outtime - S.intime) / 3600.0
    n_ticks = np.floor(los_h * ticks_per_hour).astype(np.int64) + 1
    st, j = _expand(n_ticks)
    n = len(st)
    t = (j + 0.5 + rng.uniform(-.3, .3, n)) / ticks_per_hour
    t = np.clip(t, 0.02, los_h[st] * 0.999)
    charttime = S.intime[st] // 60 * 60 + np.round(t * 60).astype(np.int64) * 60  # whole minutes
    sev = S.s_stay[st] + S.drift[st] * (t / los_h[st])
    z = rng.normal(0, 1, n)
    off = rng.normal(0, 1, (q, 8))[st]
    nb = cl["newborn"][st]
    cv = carevue[st]
    intub = S.intubated[st]
    age = S.age[adm][st]

    slots: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # mask, itemid, valuenum, text

    def add(mask, itemid, value=None, text=None):
        k = int(mask.sum())
        itemid = np.broadcast_to(np.asarray(itemid), (n,))[mask]
        value = np.full(k, np.nan) if value is None else np.broadcast_to(value, (n,))[mask]
        text = np.full(k, -1) if text is None else np.broadcast_to(text, (n,))[mask]
        slots.append((mask, itemid, value, text))

    def rand(p):
        return rng.random(n) < p

    # vitals (canonical units; converted to each item's unit below)
    hr = 84 + 9 * sev + 5 * z + 10 * off[:, 0] + 6 * cl["sepsis"][st] + 50 * nb + 4 * rng.normal(0, 1, n)
    mbp = 78 - 7 * sev - 3 * z + 8 * off[:, 1] - 30 * nb + 3 * rng.normal(0, 1, n)
    pp = np.where(nb, 25.0, np.maximum(48 + .3 * (age - 60) + 8 * off[:, 2] + 4 * rng.normal(0, 1, n), 15))
    sbp, dbp = mbp + 2 * pp / 3, mbp - pp / 3
    rr = np.where(intub, 16 + 2 * off[:, 3] + 1.5 * sev + 2 * rng.normal(0, 1, n),
                  18 + 3 * sev + 2 * z + 3 * cl["resp_failure"][st] + 3 * off[:, 3] + 25 * nb
                  + 2 * rng.normal(0, 1, n))
    rr = np.maximum(rr, 4)
    spo2 = np.minimum(97.5 - 1.2 * sev - 1.5 * cl["resp_failure"][st] + off[:, 4] + 1.2 * rng.normal(0, 1, n), 100)
    temp = 37.0 + .3 * sev + .6 * cl["sepsis"][st] + .1 * z + .3 * off[:, 5] + .3 * rng.normal(0, 1, n)
    art = S.art_line[st] & rand(.8)

    add(rand(.93), np.where(cv, 211, 220045), hr)
    bp_round = rand(.9)
    for value, art_mv, nbp_mv, art_cv, nbp_cv in ((sbp, 220050, 220179, 51, 455),
                                                  (dbp, 220051, 220180, 8368, 8441),
                                                  (mbp, 220052, 220181, 52, 456)):
        item = np.where(cv, np.where(art, art_cv, nbp_cv), np.where(art, art_mv, nbp_mv))
        add(bp_round & rand(.98), item, value)
    add(rand(.9), np.where(cv, 618, 220210), rr)
    add(rand(.92), np.where(cv, 646, 220277), spo2)
    temp_round = rand(.25)
    temp_f = rand(.85)
    add(temp_round, np.where(cv, 678, np.where(temp_f, 223761, 223762)), temp)
    add(temp_round & cv & rand(.6), 677, temp)  # CareVue also charted a calculated Celsius copy
    fio2 = np.clip(.4 + .12 * sev + .1 * cl["resp_failure"][st] + .05 * rng.normal(0, 1, n), .21, 1.0)
    fio2_item = np.where(cv, np.where(rand(.15), 189, 3420), 223835)
    # % charted as room air (21) or in steps of 5
    fio2 = np.where(fio2_item == 189, fio2, np.where(fio2 < .23, .21, np.round(fio2 * 20) / 20))
    add(rand(np.where(intub, .3, .02)), fio2_item, fio2)

    # Glasgow coma scale: one latent level of consciousness drives the three components
    # (sedated intubated patients and alert ones make the scores bimodal, as in MIMIC)
    g = 1.4 - .6 * sev - 1.5 * cl["neuro"][st] - 1.6 * intub + .6 * off[:, 6] + .4 * rng.normal(0, 1, n)
    f = _sigmoid(2.5 * g)
    eye = 1 + np.searchsorted([.15, .3, .55], f + .08 * rng.normal(0, 1, n))
    motor = 1 + np.searchsorted([.08, .1, .13, .3, .55], f + .06 * rng.normal(0, 1, n))
    verbal = 1 + np.searchsorted([.2, .3, .4, .7], f + .08 * rng.normal(0, 1, n))
    ett = intub & rand(.9)
    verbal_code = np.where(ett, GCS_VERBAL_ETT, verbal)
    verbal_score = np.where(ett, 1, verbal)
    gcs_round = rand(.25)
    add(gcs_round & rand(.97), np.where(cv, 184, 220739), eye.astype(float),
        np.where(cv, text_codes("gcs_eye_cv", eye), text_codes("gcs_eye_mv", eye)))
    add(gcs_round & rand(.97), np.where(cv, 454, 223901), motor.astype(float),
        np.where(cv, text_codes("gcs_motor_cv", motor), text_codes("gcs_motor_mv", motor)))
    add(gcs_round & rand(.97), np.where(cv, 723, 223900), verbal_score.astype(float),
        np.where(cv, text_codes("gcs_verbal_cv", verbal_code), text_codes("gcs_verbal_mv", verbal_code)))
    add(gcs_round & cv, 198, (eye + motor + verbal_score).astype(float))
    crr = (rng.random(n) < _sigmoid(-3 + 1.2 * sev)).astype(np.int64)
    crr_pick = _choice(rng, [3348, 115, 8377], [.8, .1, .1], n)
    crr_item = np.where(cv, np.array([3348, 115, 8377])[crr_pick], 223951)
    add(rand(np.where(cv, .12, .05)), crr_item, None,
        np.where(cv, text_codes("crr_cv", crr), text_codes("crr_mv", crr)))
    glucose = 130 * np.exp(.3 * cl["diabetes"][st] + .9 * cl["dka"][st] + .05 * sev + .25 * rng.normal(0, 1, n))
    add(rand(.15 + .15 * cl["diabetes"][st]), np.where(cv, 807, 225664), glucose)
    ph = 7.39 - .04 * sev + .04 * rng.normal(0, 1, n)
    add(rand(.05 + .1 * intub), np.where(cv, 780, 223830), ph)
    # distractors
    rhythm = np.where(cl["chf"][st] & (off[:, 7] > 0), 2, np.where(hr > 100, 1, np.where(hr < 60, 3, 0)))
    add(rand(.25), np.where(cv, 212, 220048), None,
        np.where(cv, text_codes("rhythm_cv", rhythm), text_codes("rhythm_mv", rhythm)))
    add(intub & rand(.25), np.where(cv, 506, 220339), 5 + np.round(rng.uniform(0, 10, n)))
    add(~cv & rand(.01), 224032, None, text_codes("skin_site_mv", rng.integers(0, 4, n)))

    # rows in (stay, time, slot) order without sorting: row-major positions of the slot matrix
    mask = np.stack([s[0] for s in slots], axis=1)
    pos = np.cumsum(mask.ravel()).reshape(mask.shape) - 1
    n_rows = int(mask.sum())
    tick = np.empty(n_rows, dtype=np.int64)
    itemid = np.empty(n_rows, dtype=np.int64)
    canonical = np.empty(n_rows)
    text = np.empty(n_rows, dtype=np.int64)
    for k, (m_k, item_k, value_k, text_k) in enumerate(slots):
        p = pos[m_k, k]
        tick[p] = np.flatnonzero(m_k)
        itemid[p] = item_k
        canonical[p] = value_k
        text[p] = text_k
    del pos, mask

    raw = canonical * ITEM_SCALE[itemid] + ITEM_OFFSET[itemid]
    # charting errors: a few absurd numbers (range filtering must catch them)
    numeric_vital = np.isin(itemid, [211, 220045, 51, 455, 220050, 220179, 8368, 8441, 220051, 220180,
                                     52, 456, 220052, 220181, 618, 220210, 646, 220277, 678, 223761, 223762])
    garbage = numeric_vital & (rng.random(n_rows) < .0015)
    kind = rng.integers(0, 4, n_rows)
    bad = np.select([kind == 0, kind == 1, kind == 2], [0.0, raw * 10, -raw], 999999.0)
    raw = np.where(garbage, bad, raw)
    valuenum = np.where(np.isnan(raw), np.nan, round_values(np.nan_to_num(raw), itemid))
    value, num, uom = event_value_columns(itemid, valuenum, text)

    row_st = st[tick]
    row_cv = cv[tick]
    mv_rows = ~row_cv
    warning = np.where(rng.random(n_rows) < .02, 1, 0)
    error = np.where(rng.random(n_rows) < .0015, 1, 0)
    status = np.where(rng.random(n_rows) < .05, 2, np.where(rng.random(n_rows) < .005, 1, 0))
    stopped = _choice(rng, _STOPPED, [.992, .004, .004], n_rows)
    ct = charttime[tick]
    cgid = 14_000 + (S.icustay_id[row_st] * 7919 + rng.integers(0, 3, n_rows)) % 7_000
    return {
        "row_id": np.arange(row_offset + 1, row_offset + n_rows + 1),
        "subject_id": S.subject_id[pat[row_st]],
        "hadm_id": S.hadm_id[adm[row_st]],
        "icustay_id": S.icustay_id[row_st],
        "itemid": itemid,
        "charttime": _ts(ct),
        "storetime": _ts(ct + rng.integers(1, 90, n_rows) * 60),
        "cgid": cgid,
        "value": value,
        "valuenum": num,
        "valueuom": uom,
        "warning": pa.array(warning, mask=row_cv),
        "error": pa.array(error, mask=row_cv),
        "resultstatus": dict_array(np.where(mv_rows, -1, status), _RESULTSTATUS),
        "stopped": dict_array(np.where(mv_rows, -1, stopped), _STOPPED),
    }


# ---------------------------------------------------------------------------------------------
# LABEVENTS
# ---------------------------------------------------------------------------------------------

# lab slot -> (itemid, panel); panels decide which tests a blood draw includes
_LAB_SLOTS: list[tuple[int, str]] = [
    (51006, "chem"), (50912, "chem"), (50931, "chem"), (50971, "chem"), (50902, "chem"),
    (50882, "chem"), (50868, "chem"), (50983, "chem"), (50893, "chem_ext"), (50970, "chem_ext"),
    (50960, "chem_ext"), (51301, "cbc"), (51222, "cbc"), (51221, "cbc"), (51265, "cbc"),
    (51279, "cbc"), (51250, "cbc"), (51256, "diff"), (51244, "diff"), (51254, "diff"),
    (51146, "diff"), (50861, "lft"), (50878, "lft"), (50863, "lft"), (50885, "lft"),
    (50862, "albumin"), (51274, "coag"), (51237, "coag"), (50820, "abg"), (50818, "abg"),
    (50821, "abg"), (50813, "lactate"), (50809, "abg_extra"), (50822, "abg_extra"),
    (50817, "abg_extra"),
]
def _lab_values(rng: np.random.Generator, n: int, sev: np.ndarray, off: np.ndarray,
                cl: dict[str, np.ndarray], male: np.ndarray) -> dict[int, np.ndarray]:
    """Correlated lab values (canonical units) for `n` draws; `off` = per-admission effects."""
    e = lambda: rng.normal(0, 1, n)  # noqa: E731 - within-admission noise
    renal, liver, sepsis = cl["aki"] | cl["ckd"], cl["liver"], cl["sepsis"]
    shock = sepsis & (sev > .8)
    v: dict[int, np.ndarray] = {}
    v[50912] = 1.0 * np.exp(.35 * off[:, 0] + .15 * e() + .15 * sev + .8 * renal + .6 * cl["ckd"] - .15 * ~male)
    v[51006] = 20 * np.exp(.45 * off[:, 1] + .15 * e() + .2 * sev + .7 * renal + .3 * cl["gi_bleed"])
    v[50931] = 125 * np.exp(.15 * off[:, 2] + .25 * e() + .08 * sev + .35 * cl["diabetes"] + 1.0 * cl["dka"])
    v[50971] = 4.1 + .25 * off[:, 3] + .35 * e() + .08 * sev + .4 * renal
    v[50902] = 104 + 3 * off[:, 4] + 3 * e()
    lactate = 1.5 * np.exp(.3 * off[:, 5] + .25 * e() + .38 * sev + .3 * sepsis + .6 * shock)
    v[50813] = lactate
    v[50882] = 24 + 2.5 * off[:, 6] + 2 * e() - 1.2 * np.maximum(sev, 0) - 2 * renal + 4 * cl["copd"] - .8 * (lactate - 1.5) - 8 * cl["dka"]
    v[50983] = 139 + 3 * off[:, 7] + 2.5 * e()
    v[50868] = v[50983] - v[50902] - v[50882] + 1.5 * e()
    v[50893] = 8.5 + .4 * off[:, 8] + .4 * e() - .2 * sev
    v[50970] = 3.5 * np.exp(.25 * off[:, 9] + .15 * e() + .1 * sev + .3 * renal)
    v[50960] = 2.0 + .2 * off[:, 10] + .2 * e()
    v[51301] = 10 * np.exp(.4 * off[:, 11] + .15 * e() + .15 * sev + .35 * sepsis)
    hgb = 10.2 + 1.4 * off[:, 12] + .5 * e() - .3 * sev - 1.5 * cl["gi_bleed"] - cl["trauma"] - .8 * cl["cardiac_surgery"] + .8 * male - .6 * renal
    hgb = np.maximum(hgb, 3.5)
    v[51222] = hgb
    v[51221] = 3 * hgb + e()
    v[51265] = 200 * np.exp(.45 * off[:, 13] + .12 * e() - .15 * sev - .35 * sepsis - .6 * liver)
    v[51279] = hgb / 3 * np.exp(.03 * e())
    v[51250] = 89 + 5 * off[:, 14] + e()
    neut = np.clip(74 + 6 * off[:, 15] + 3 * e() + 6 * sepsis, 20, 97)
    mono = np.clip(5 + 1.5 * off[:, 16] + e(), .5, 20)
    baso = np.clip(.2 * np.exp(.6 * e()), 0, 3)
    v[51256], v[51254], v[51146] = neut, mono, baso
    v[51244] = np.clip(100 - neut - mono - baso - np.clip(1.5 + e(), 0, 6), 1, 80)
    v[50861] = 30 * np.exp(.8 * off[:, 17] + .2 * e() + .2 * sev + 1.2 * liver + .5 * shock)
    v[50878] = 40 * np.exp(.8 * off[:, 18] + .2 * e() + .2 * sev + 1.3 * liver + .6 * shock)
    v[50863] = 100 * np.exp(.45 * off[:, 19] + .1 * e() + .6 * liver)
    v[50885] = .8 * np.exp(.6 * off[:, 20] + .15 * e() + 1.3 * liver + .3 * sepsis)
    v[50862] = np.clip(3.0 + .5 * off[:, 21] + .15 * e() - .25 * sev - .5 * liver, 1.0, 5.5)
    pt = 14 * np.exp(.1 * off[:, 22] + .04 * e() + .35 * liver + .05 * sev)
    v[51274] = pt
    v[51237] = (pt / 12.6) ** 1.4 * np.exp(.02 * e())
    v[50820] = 7.39 + .03 * off[:, 23] + .04 * e() - .04 * sev - .01 * (lactate - 1.5)
    v[50818] = np.maximum(41 + 5 * off[:, 24] + 4 * e() - sev + 10 * cl["copd"] + 4 * cl["resp_failure"], 12)
    v[50821] = 100 * np.exp(.3 * off[:, 25] + .25 * e())
    v[50809] = v[50931] * np.exp(.05 * e())
    v[50822] = v[50971] + .2 * e()
    v[50817] = np.minimum(96 + off[:, 26] + 1.5 * e() - sev, 100)
    return v


def _lab_events(rng: np.random.Generator, S: _Structure, row_offset: int) -> dict[str, pa.Array]:
    """Blood draws during ICU stays (from just before ICU admission), on the ward and outpatient."""
    m, q = len(S.hadm_id), len(S.icustay_id)
    st_adm = S.s_adm_index
    los_h = (S.outtime - S.intime) / 3600.0
    # ICU draws: the first one a little before or after ICU admission, then every ~4-24 h
    mean_gap = np.clip(8.0 / (1 + .25 * np.maximum(S.s_stay, 0)), 4, 12)
    n_est = np.ceil(los_h / 2).astype(np.int64) + 2
    i_st, i_k = _expand(n_est)
    gaps = np.clip(rng.gamma(4.0, mean_gap[i_st] / 4.0), 2, 30)
    first = rng.uniform(-3, 1, q)
    t_icu = first[i_st] + _group_cumsum(np.where(i_k == 0, 0.0, gaps), i_st)
    keep = t_icu <= los_h[i_st]
    i_st, t_icu = i_st[keep], t_icu[keep]
    icu_time = S.intime[i_st] // 60 * 60 + np.round(t_icu * 60).astype(np.int64) * 60
    icu_sev = S.s_stay[i_st] + S.drift[i_st] * np.clip(t_icu / los_h[i_st], 0, 1)

    # ward draws: about daily across the admission, outside the ICU windows
    adm_len_h = (S.dischtime - S.admittime) / 3600.0
    n_est_w = np.ceil(adm_len_h / 12).astype(np.int64) + 2
    w_adm, w_k = _expand(n_est_w)
    w_gap = np.clip(rng.gamma(6.0, 4.0, len(w_adm)), 8, 60)
    t_w = rng.uniform(.5, 4, m)[w_adm] + _group_cumsum(np.where(w_k == 0, 0.0, w_gap), w_adm)
    w_time = S.admittime[w_adm] + np.round(t_w * 60).astype(np.int64) * 60
    keep = w_time < S.dischtime[w_adm]
    first_stay = np.cumsum(S.n_stays) - S.n_stays
    for k in range(int(S.n_stays.max(initial=0))):
        has_k = S.n_stays[w_adm] > k
        idx = np.where(has_k, first_stay[w_adm] + k, 0)
        inside = has_k & (w_time >= S.intime[idx] - 3 * 3600) & (w_time <= S.outtime[idx])
        keep &= ~inside
    w_adm, w_time = w_adm[keep], w_time[keep]

    # outpatient draws before some admissions (no hadm_id)
    n_out = np.where(rng.random(m) < .2, rng.integers(1, 4, m), 0)
    o_adm, _ = _expand(n_out)
    o_time = S.admittime[o_adm] - rng.integers(1 * 24 * 60, 60 * 24 * 60, len(o_adm)) * 60

    d_adm = np.r_[st_adm[i_st], w_adm, o_adm]
    d_time = np.r_[icu_time, w_time, o_time]
    d_kind = np.r_[np.full(len(i_st), 2), np.ones(len(w_adm), dtype=np.int64), np.zeros(len(o_adm), dtype=np.int64)]
    d_sev = np.r_[icu_sev, .4 * S.s_adm[w_adm], .1 * S.s_adm[o_adm]]
    d_intub = np.r_[S.intubated[i_st], np.zeros(len(w_adm) + len(o_adm), dtype=bool)]
    d_pat = S.a_patient[d_adm]
    order = np.lexsort((d_time, d_pat))
    d_adm, d_time, d_kind, d_sev, d_intub, d_pat = (x[order] for x in (d_adm, d_time, d_kind, d_sev, d_intub, d_pat))
    n = len(d_adm)
    cl = {name: S.clusters[d_adm, i] for i, name in enumerate(_CLUSTER_NAMES)}
    off = rng.normal(0, 1, (m, 27))[d_adm]
    values = _lab_values(rng, n, d_sev, off, cl, S.male[d_pat])

    icu = d_kind == 2

    def panel(p_icu, p_ward, p_out):
        return rng.random(n) < np.select([d_kind == 2, d_kind == 1], [p_icu, p_ward], p_out)

    panels = {
        "chem": panel(.88, .9, .7),
        "cbc": panel(.8, .8, .6),
        "diff": panel(.15 + .2 * cl["sepsis"], .1, .15),
        "lft": panel(.15 + .45 * cl["liver"], .1 + .3 * cl["liver"], .15),
        "coag": panel(.4, .25, .1),
        "abg": icu & (rng.random(n) < .12 + .45 * d_intub),
    }
    panels["chem_ext"] = panels["chem"] & (rng.random(n) < .8)
    panels["albumin"] = panels["lft"] & (rng.random(n) < .6)
    panels["abg_extra"] = panels["abg"]
    panels["lactate"] = (panels["abg"] & (rng.random(n) < .7)) | (icu & (rng.random(n) < .1 + .2 * cl["sepsis"]))
    # every draw yields at least one result
    empty = ~np.any(np.stack([panels[p] for p in ("chem", "cbc", "diff", "lft", "coag", "abg", "lactate")]), axis=0)
    panels["chem"] = panels["chem"] | empty

    slot_masks = []
    for itemid, panel_name in _LAB_SLOTS:
        mask = panels[panel_name]
        if panel_name == "abg_extra":
            mask = mask & (rng.random(n) < (.4 if itemid == 50817 else .3))
        slot_masks.append(mask)
    mask = np.stack(slot_masks, axis=1)
    pos = np.cumsum(mask.ravel()).reshape(mask.shape) - 1
    n_rows = int(mask.sum())
    draw = np.empty(n_rows, dtype=np.int64)
    itemid = np.empty(n_rows, dtype=np.int64)
    canonical = np.empty(n_rows)
    for k, (item, _) in enumerate(_LAB_SLOTS):
        m_k = mask[:, k]
        p = pos[m_k, k]
        draw[p] = np.flatnonzero(m_k)
        itemid[p] = item
        canonical[p] = values[item][m_k]
    del pos, mask
    valuenum = round_values(np.maximum(canonical, 0), itemid)
    lo = np.zeros(MAX_ITEMID)
    hi = np.zeros(MAX_ITEMID)
    for item, (a, b) in LAB_REFERENCE_RANGES.items():
        lo[item], hi[item] = a, b
    flag = np.where((valuenum < lo[itemid]) | (valuenum > hi[itemid]), 0, -1)
    # a few results are text only ("UNABLE TO REPORT" ...), with no valuenum and no flag
    text_only = rng.random(n_rows) < .003
    text = np.where(text_only, rng.integers(0, len(_LAB_TEXT), n_rows), -1)
    valuenum = np.where(text_only, np.nan, valuenum)
    flag = np.where(text_only, -1, flag)
    num = pa.array(valuenum, type=pa.float64(), from_pandas=True)
    value = pc.if_else(pa.array(text_only), dict_array(text, _LAB_TEXT).cast(pa.string()),
                       fixed_decimals_text(num, ITEM_DECIMALS[itemid]))
    uom = dict_array(ITEM_UOM[itemid], UOM_VALUES)
    outpatient = d_kind[draw] == 0
    return {
        "row_id": np.arange(row_offset + 1, row_offset + n_rows + 1),
        "subject_id": S.subject_id[d_pat[draw]],
        "hadm_id": pa.array(S.hadm_id[d_adm[draw]], mask=outpatient),
        "itemid": itemid,
        "charttime": _ts(d_time[draw]),
        "value": value,
        "valuenum": num,
        "valueuom": uom,
        "flag": dict_array(flag, ["abnormal"]),
    }


# ---------------------------------------------------------------------------------------------
# Structural tables as writer input
# ---------------------------------------------------------------------------------------------

def _null_ts(seconds: np.ndarray) -> pa.Array:
    seconds = np.asarray(seconds, dtype=np.int64)
    return _ts(seconds, mask=seconds == NO_TIME)


def _structure_tables(S: _Structure, universe: CodeUniverse, offsets: dict[str, int]) -> dict[str, dict]:
    n, m, q = len(S.subject_id), len(S.hadm_id), len(S.icustay_id)
    rid = lambda table, k: np.arange(offsets[table] + 1, offsets[table] + k + 1)  # noqa: E731
    patients = {
        "row_id": rid("PATIENTS", n),
        "subject_id": S.subject_id,
        "gender": dict_array(S.male.astype(np.int64), ["F", "M"]),
        "dob": _null_ts(S.dob),
        "dod": _null_ts(S.dod),
        "dod_hosp": _null_ts(S.dod_hosp),
        "dod_ssn": _null_ts(S.dod_ssn),
        "expire_flag": (S.dod != NO_TIME).astype(np.int64),
    }
    admissions = {
        "row_id": rid("ADMISSIONS", m),
        "subject_id": S.subject_id[S.a_patient],
        "hadm_id": S.hadm_id,
        "admittime": _ts(S.admittime),
        "dischtime": _ts(S.dischtime),
        "deathtime": _null_ts(S.deathtime),
        "admission_type": dict_array(S.a_type, _ADMISSION_TYPES),
        "admission_location": dict_array(S.a_location, _ADM_LOCATIONS),
        "discharge_location": dict_array(S.d_location, _DISCH_LOCATIONS),
        "insurance": dict_array(S.insurance, _INSURANCE),
        "language": dict_array(S.language, _LANGUAGES),
        "religion": dict_array(S.religion, _RELIGIONS),
        "marital_status": dict_array(S.marital, _MARITAL),
        "ethnicity": dict_array(S.ethnicity[S.a_patient], _ETHNICITIES),
        "edregtime": _null_ts(S.ed_in),
        "edouttime": _null_ts(S.ed_out),
        "diagnosis": dict_array(S.diagnosis_idx, S.diagnosis),
        "hospital_expire_flag": S.died.astype(np.int64),
        "has_chartevents_data": (S.n_stays > 0).astype(np.int64),
    }
    los_days = np.round((S.outtime - S.intime) / 86400.0, 4)
    icustays = {
        "row_id": rid("ICUSTAYS", q),
        "subject_id": S.subject_id[S.a_patient[S.s_adm_index]],
        "hadm_id": S.hadm_id[S.s_adm_index],
        "icustay_id": S.icustay_id,
        "dbsource": dict_array(np.where(S.carevue[S.a_patient[S.s_adm_index]], 0, 1), _DBSOURCES),
        "first_careunit": dict_array(S.first_cu, _CAREUNITS),
        "last_careunit": dict_array(S.last_cu, _CAREUNITS),
        "first_wardid": S.first_ward,
        "last_wardid": S.last_ward,
        "intime": _ts(S.intime),
        "outtime": _ts(S.outtime),
        "los": los_days,
    }

    def codes(table, adm, code, universe_codes):
        seq = _expand(np.bincount(adm, minlength=m))[1] + 1
        return {
            "row_id": rid(table, len(adm)),
            "subject_id": S.subject_id[S.a_patient[adm]],
            "hadm_id": S.hadm_id[adm],
            "seq_num": seq,
            "icd9_code": dict_array(code, universe_codes),
        }

    return {
        "PATIENTS": patients,
        "ADMISSIONS": admissions,
        "ICUSTAYS": icustays,
        "DIAGNOSES_ICD": codes("DIAGNOSES_ICD", S.dx_adm, S.dx_code, universe.dx_codes),
        "PROCEDURES_ICD": codes("PROCEDURES_ICD", S.px_adm, S.px_code, universe.px_codes),
    }


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------

def _plan(config: HospitalConfig, universe: CodeUniverse) -> tuple[float, int, float]:
    """(ticks per hour, patients per chunk, density) from a cheap structure-only pilot.

    A row target needs the ICU hours per patient; a 20,000-patient pilot estimates them
    within about 1 % (structure only, about a second).
    """
    n_pilot = 20_000 if config.chartevents_rows_target else 2_000
    pilot = _structure(np.random.default_rng([config.seed, 2**31 - 1]), n_pilot, 0,
                       {"hadm": 0, "icustay": 0}, universe)
    hours_per_patient = float((pilot.outtime - pilot.intime).sum() / 3600.0 / n_pilot)
    density = config.chart_rows_per_stay_hour
    if config.chartevents_rows_target:
        density = config.chartevents_rows_target / (config.n_patients * hours_per_patient)
    rows_per_patient = max(density * hours_per_patient, 1.0)
    chunk = int(np.clip(config.max_rows_per_chunk // rows_per_patient, 100, config.chunk_patients))
    return density / _ROWS_PER_TICK, chunk, density


def generate_hospital(out_dir: str | Path, config: HospitalConfig | None = None,
                      progress: Callable[[str], None] | None = None) -> HospitalSummary:
    """Write the 11 raw MIMIC-III tables of a synthetic hospital into `out_dir`.

    Files appear only when every table was written (a failure leaves `out_dir` unchanged).
    """
    config = config or HospitalConfig()
    config.validate()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    universe = code_universe(config.code_dictionary_dir)
    ticks_per_hour, chunk, density = _plan(config, universe)
    say = progress or (lambda message: None)
    counts = {"hadm": 0, "icustay": 0}
    n_adm = n_stays = 0
    files: dict[str, Path] = {}
    with atomic_table_dir(out_dir, config.compress) as tmp:
        writers = {
            table: MimicTableWriter(tmp / table_filename(table, config.compress), table,
                                    header_case=config.header_case, compress=config.compress,
                                    gzip_level=config.gzip_level)
            for table in HOSPITAL_TABLES
        }
        try:
            for table, frame in dictionary_tables(universe).items():
                writers[table].write(frame)
            done = 0
            chunk_index = 0
            while done < config.n_patients:
                size = min(chunk, config.n_patients - done)
                rng = np.random.default_rng([config.seed, chunk_index])
                S = _structure(rng, size, done, counts, universe)
                offsets = {t: w.rows for t, w in writers.items()}
                for table, data in _structure_tables(S, universe, offsets).items():
                    writers[table].write(data)
                chart = _chart_events(rng, S, ticks_per_hour, writers["CHARTEVENTS"].rows)
                writers["CHARTEVENTS"].write(chart)
                del chart
                writers["LABEVENTS"].write(_lab_events(rng, S, writers["LABEVENTS"].rows))
                n_adm += len(S.hadm_id)
                n_stays += len(S.icustay_id)
                done += size
                chunk_index += 1
                say(f"{done:,}/{config.n_patients:,} patients, "
                    f"{writers['CHARTEVENTS'].rows:,} chartevents rows, "
                    f"{time.perf_counter() - started:.1f} s")
        finally:
            # close every writer even if one fails; a close error only surfaces when nothing
            # else is already propagating
            close_errors = []
            for writer in writers.values():
                try:
                    writer.close()
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    close_errors.append(exc)
            if close_errors and sys.exc_info()[0] is None:
                raise close_errors[0]
        rows = {table: w.rows for table, w in writers.items()}
    for table in HOSPITAL_TABLES:
        files[table] = out_dir / table_filename(table, config.compress)
    seconds = time.perf_counter() - started
    return HospitalSummary(
        out_dir=out_dir, rows=rows, n_patients=config.n_patients, n_admissions=n_adm,
        n_icustays=n_stays, seconds=seconds, files=files, chart_rows_per_stay_hour=density,
        chartevents_rows_per_second=rows["CHARTEVENTS"] / seconds if seconds > 0 else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synehrgy_assets.core.synthetic_hospital",
        description="Write a synthetic hospital as raw MIMIC-III v1.4 tables.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--upper", action="store_true", help="full-release layout (UPPERCASE quoted headers)")
    parser.add_argument("--no-compress", action="store_true", help="write TABLE.csv instead of TABLE.csv.gz")
    parser.add_argument("--chartevents-rows", type=int, default=None,
                        help="target number of CHARTEVENTS rows (sets the charting density)")
    parser.add_argument("--density", type=float, default=DEFAULT_CHART_DENSITY,
                        help="CHARTEVENTS rows per ICU-stay hour")
    parser.add_argument("--code-dictionary", default=None,
                        help="a MIMIC directory whose D_ICD_* tables widen the code long tail")
    args = parser.parse_args(argv)
    config = HospitalConfig(
        n_patients=args.patients, seed=args.seed, header_case="upper" if args.upper else "lower",
        compress=not args.no_compress, chart_rows_per_stay_hour=args.density,
        chartevents_rows_target=args.chartevents_rows, code_dictionary_dir=args.code_dictionary,
    )
    summary = generate_hospital(args.out, config, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(summary.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
