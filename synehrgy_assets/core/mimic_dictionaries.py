"""MIMIC-III dictionaries as this project writes them: the item catalogue (the variables of
`dbt_mimic/seeds/variables.csv` as real MIMIC ITEMIDs, units and text categories), a built-in
ICD-9 code list, and the dictionary tables D_ITEMS, D_LABITEMS, D_ICD_DIAGNOSES and
D_ICD_PROCEDURES built from them.

Shared by the synthetic hospital and the writer of synthetic cohorts (`mimic_writer.py`). Reference data only: no
patient data, no simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synehrgy_assets.core.mimic_tables import dict_array

# ---------------------------------------------------------------------------------------------
# Item catalogue: the variables of dbt_mimic/seeds/variables.csv as real MIMIC ITEMIDs
# ---------------------------------------------------------------------------------------------

# Text categories as MIMIC writes them (checked against the demo's CHARTEVENTS `value`).
# Key: text map name -> {score: text}; score 0 of the verbal maps is the intubated category.
GCS_VERBAL_ETT = 0
TEXT_MAPS: dict[str, dict[int, str]] = {
    "gcs_eye_mv": {4: "Spontaneously", 3: "To Speech", 2: "To Pain", 1: "None"},
    "gcs_eye_cv": {4: "4 Spontaneously", 3: "3 To speech", 2: "2 To pain", 1: "1 No Response"},
    "gcs_motor_mv": {
        6: "Obeys Commands", 5: "Localizes Pain", 4: "Flex-withdraws", 3: "Abnormal Flexion",
        2: "Abnormal extension", 1: "No response",
    },
    "gcs_motor_cv": {
        6: "6 Obeys Commands", 5: "5 Localizes Pain", 4: "4 Flex-withdraws",
        3: "3 Abnorm flexion", 2: "2 Abnorm extensn", 1: "1 No Response",
    },
    "gcs_verbal_mv": {
        5: "Oriented", 4: "Confused", 3: "Inappropriate Words", 2: "Incomprehensible sounds",
        1: "No Response", GCS_VERBAL_ETT: "No Response-ETT",
    },
    "gcs_verbal_cv": {
        5: "5 Oriented", 4: "4 Confused", 3: "3 Inapprop words", 2: "2 Incomp sounds",
        1: "1 No Response", GCS_VERBAL_ETT: "1.0 ET/Trach",
    },
    "crr_cv": {0: "Normal <3 secs", 1: "Abnormal >3 secs"},
    "crr_mv": {0: "Normal <3 Seconds", 1: "Abnormal >3 Seconds"},
    # distractor items (not in the variable set): staging must ignore them
    "rhythm_mv": {0: "SR (Sinus Rhythm)", 1: "ST (Sinus Tachycardia)", 2: "AF (Atrial Fibrillation)",
                  3: "SB (Sinus Bradycardia)"},
    "rhythm_cv": {0: "Sinus Rhythm", 1: "Sinus Tachy", 2: "Atrial Fib", 3: "Sinus Brady"},
    "skin_site_mv": {0: "Gluteal, Left", 1: "Gluteal, Right", 2: "Coccyx", 3: 'Heel, "R"'},
}


@dataclass(frozen=True)
class Item:
    """One MIMIC ITEMID and how a variable's canonical value is written in it.

    raw = canonical * scale + offset, rounded to `decimals`; categorical items use `text_map`.
    """

    itemid: int
    variable: str | None  # None: a distractor item outside the variable set
    table: str  # 'chartevents' | 'labevents'
    dbsource: str  # 'carevue' | 'metavision' | 'hospital' (labs)
    label: str
    valueuom: str | None
    decimals: int = 0
    scale: float = 1.0
    offset: float = 0.0
    text_map: str | None = None
    canonical: bool = False  # the one ITEMID mimic_writer writes for this variable
    abbreviation: str | None = None
    category: str | None = None
    fluid: str | None = None
    loinc: str | None = None


def _c(itemid, variable, dbsource, label, uom, decimals=0, **kw) -> Item:
    return Item(itemid, variable, "chartevents", dbsource, label, uom, decimals, **kw)


def _l(itemid, variable, label, uom, decimals, category, loinc, canonical=True, fluid="Blood") -> Item:
    return Item(itemid, variable, "labevents", "hospital", label, uom, decimals,
                canonical=canonical, category=category, fluid=fluid, loinc=loinc)


MV, CV = "metavision", "carevue"
ITEMS: tuple[Item, ...] = (
    # vitals (CareVue and MetaVision), written in their real units
    _c(220045, "heart_rate", MV, "Heart Rate", "bpm", abbreviation="HR", category="Routine Vital Signs", canonical=True),
    _c(211, "heart_rate", CV, "Heart Rate", "BPM"),
    _c(220179, "systolic_blood_pressure", MV, "Non Invasive Blood Pressure systolic", "mmHg", abbreviation="NBPs", category="Routine Vital Signs", canonical=True),
    _c(220050, "arterial_systolic_blood_pressure", MV, "Arterial Blood Pressure systolic", "mmHg", abbreviation="ABPs", category="Routine Vital Signs", canonical=True),
    _c(455, "systolic_blood_pressure", CV, "NBP [Systolic]", "mmHg"),
    _c(51, "arterial_systolic_blood_pressure", CV, "Arterial BP [Systolic]", "mmHg"),
    _c(220180, "diastolic_blood_pressure", MV, "Non Invasive Blood Pressure diastolic", "mmHg", abbreviation="NBPd", category="Routine Vital Signs", canonical=True),
    _c(220051, "arterial_diastolic_blood_pressure", MV, "Arterial Blood Pressure diastolic", "mmHg", abbreviation="ABPd", category="Routine Vital Signs", canonical=True),
    _c(8441, "diastolic_blood_pressure", CV, "NBP [Diastolic]", "mmHg"),
    _c(8368, "arterial_diastolic_blood_pressure", CV, "Arterial BP [Diastolic]", "mmHg"),
    _c(220181, "mean_blood_pressure", MV, "Non Invasive Blood Pressure mean", "mmHg", abbreviation="NBPm", category="Routine Vital Signs", canonical=True),
    _c(220052, "arterial_mean_blood_pressure", MV, "Arterial Blood Pressure mean", "mmHg", abbreviation="ABPm", category="Routine Vital Signs", canonical=True),
    _c(456, "mean_blood_pressure", CV, "NBP Mean", "mmHg"),
    _c(52, "arterial_mean_blood_pressure", CV, "Arterial BP Mean", "mmHg"),
    _c(220210, "respiratory_rate", MV, "Respiratory Rate", "insp/min", abbreviation="RR", category="Respiratory", canonical=True),
    _c(618, "respiratory_rate", CV, "Respiratory Rate", "BPM"),
    _c(220277, "oxygen_saturation", MV, "O2 saturation pulseoxymetry", "%", abbreviation="SpO2", category="Respiratory", canonical=True),
    _c(646, "oxygen_saturation", CV, "SpO2", "%"),
    _c(223762, "temperature", MV, "Temperature Celsius", "?C", 1, abbreviation="Temperature C", category="Routine Vital Signs", canonical=True),
    _c(223761, "temperature", MV, "Temperature Fahrenheit", "?F", 1, scale=1.8, offset=32.0, abbreviation="Temperature F", category="Routine Vital Signs"),
    _c(678, "temperature", CV, "Temperature F", "Deg. F", 1, scale=1.8, offset=32.0),
    _c(677, "temperature", CV, "Temperature C (calc)", "Deg. C", 1),
    # FiO2: CareVue 189 stores a fraction (its unit field really says 'torr'); 223835 and 3420 store %
    _c(189, "fraction_inspired_oxygen", CV, "FiO2 (Analyzed)", "torr", 2, canonical=True),
    _c(223835, "fraction_inspired_oxygen", MV, "Inspired O2 Fraction", None, 0, scale=100.0, abbreviation="FiO2", category="Respiratory"),
    _c(3420, "fraction_inspired_oxygen", CV, "FIO2", "%", 0, scale=100.0),
    _c(225664, "glucose", MV, "Glucose finger stick", None, abbreviation="Glucose finger stick", category="Labs"),
    _c(807, "glucose", CV, "Fingerstick Glucose", None, category="Chemistry"),
    _c(223830, "ph", MV, "PH (Arterial)", "units", 2, abbreviation="PH (Arterial)", category="Labs"),
    _c(780, "ph", CV, "Arterial pH", None, 2, category="ABG"),
    # Glasgow coma scale and capillary refill: text categories, valuenum = score (GCS only)
    _c(220739, "gcs_eye_opening", MV, "GCS - Eye Opening", None, text_map="gcs_eye_mv", canonical=True, abbreviation="Eye Opening", category="Neurological"),
    _c(184, "gcs_eye_opening", CV, "Eye Opening", None, text_map="gcs_eye_cv"),
    _c(223901, "gcs_motor_response", MV, "GCS - Motor Response", None, text_map="gcs_motor_mv", canonical=True, abbreviation="Motor Response", category="Neurological"),
    _c(454, "gcs_motor_response", CV, "Motor Response", None, text_map="gcs_motor_cv"),
    _c(223900, "gcs_verbal_response", MV, "GCS - Verbal Response", None, text_map="gcs_verbal_mv", canonical=True, abbreviation="Verbal Response", category="Neurological"),
    _c(723, "gcs_verbal_response", CV, "Verbal Response", None, text_map="gcs_verbal_cv"),
    _c(198, "gcs_total", CV, "GCS Total", "points", canonical=True),
    _c(3348, "capillary_refill_rate", CV, "Capillary Refill", None, text_map="crr_cv", canonical=True),
    _c(115, "capillary_refill_rate", CV, "Capillary Refill [Right]", None, text_map="crr_cv"),
    _c(8377, "capillary_refill_rate", CV, "Capillary Refill [Left]", None, text_map="crr_cv"),
    # MetaVision capillary refill (not in the benchmark's item map, charted as often as CareVue's)
    _c(223951, "capillary_refill_rate", MV, "Capillary Refill R", None, text_map="crr_mv", abbreviation="Capillary Refill R", category="Cardiovascular (Pulses)"),
    # weight (kg) and height (cm; CareVue charted the admission height in inches)
    _c(226512, "weight", MV, "Admission Weight (Kg)", "kg", 1, canonical=True, abbreviation="Admission Weight (Kg)", category="General"),
    _c(224639, "weight", MV, "Daily Weight", "kg", 1, abbreviation="Daily Weight", category="General"),
    _c(762, "weight", CV, "Admit Wt", "kg", 1),
    _c(763, "weight", CV, "Daily Weight", "kg", 1),
    _c(226730, "height", MV, "Height (cm)", "cm", 0, canonical=True, abbreviation="Height (cm)", category="General"),
    _c(920, "height", CV, "Admit Ht", "inches", 0, scale=1 / 2.54),
    # distractors: items a staging model must not pick up
    _c(220048, None, MV, "Heart Rhythm", None, text_map="rhythm_mv", abbreviation="Heart Rhythm", category="Routine Vital Signs"),
    _c(212, None, CV, "Heart Rhythm", None, text_map="rhythm_cv"),
    _c(224032, None, MV, "Impaired Skin Site #1", None, text_map="skin_site_mv", abbreviation="Site #1", category="Skin - Impairment"),
    _c(220339, None, MV, "PEEP set", "cmH2O", abbreviation="PEEP set", category="Respiratory"),
    _c(506, None, CV, "PEEP Set", "cmH2O"),
    # labs (LABEVENTS has no icustay_id)
    _l(50861, "alanine_aminotransferase", "Alanine Aminotransferase (ALT)", "IU/L", 0, "Chemistry", "1742-6"),
    _l(50862, "albumin", "Albumin", "g/dL", 1, "Chemistry", "1751-7"),
    _l(50863, "alkaline_phosphatase", "Alkaline Phosphatase", "IU/L", 0, "Chemistry", "6768-6"),
    _l(50868, "anion_gap", "Anion Gap", "mEq/L", 0, "Chemistry", "1863-0"),
    _l(50878, "aspartate_aminotransferase", "Asparate Aminotransferase (AST)", "IU/L", 0, "Chemistry", "1920-8"),
    _l(51146, "basophils", "Basophils", "%", 1, "Hematology", "704-7"),
    _l(50882, "bicarbonate", "Bicarbonate", "mEq/L", 0, "Chemistry", "1963-8"),
    _l(50885, "bilirubin", "Bilirubin, Total", "mg/dL", 1, "Chemistry", "1975-2"),
    _l(51006, "blood_urea_nitrogen", "Urea Nitrogen", "mg/dL", 0, "Chemistry", "3094-0"),
    _l(50893, "calcium", "Calcium, Total", "mg/dL", 1, "Chemistry", "2000-8"),
    _l(50902, "chloride", "Chloride", "mEq/L", 0, "Chemistry", "2075-0"),
    _l(50912, "creatinine", "Creatinine", "mg/dL", 1, "Chemistry", "2160-0"),
    _l(50931, "glucose", "Glucose", "mg/dL", 0, "Chemistry", "2345-7"),
    _l(51221, "hematocrit", "Hematocrit", "%", 1, "Hematology", "4544-3"),
    _l(51222, "hemoglobin", "Hemoglobin", "g/dL", 1, "Hematology", "718-7"),
    _l(50813, "lactate", "Lactate", "mmol/L", 1, "Blood Gas", "32693-4"),
    _l(51244, "lymphocytes", "Lymphocytes", "%", 1, "Hematology", "731-0"),
    _l(51250, "mean_corpuscular_volume", "MCV", "fL", 0, "Hematology", "787-2"),
    _l(51254, "monocytes", "Monocytes", "%", 1, "Hematology", "742-7"),
    _l(51256, "neutrophils", "Neutrophils", "%", 1, "Hematology", "761-7"),
    _l(50818, "partial_pressure_co2", "pCO2", "mm Hg", 0, "Blood Gas", "11557-6"),
    _l(50970, "phosphate", "Phosphate", "mg/dL", 1, "Chemistry", "2777-1"),
    _l(51265, "platelets", "Platelet Count", "K/uL", 0, "Hematology", "777-3"),
    _l(50971, "potassium", "Potassium", "mEq/L", 1, "Chemistry", "2823-3"),
    _l(51274, "prothrombin_time", "PT", "sec", 1, "Hematology", "5902-2"),
    _l(51237, "inr", "INR(PT)", None, 1, "Hematology", "5895-7"),
    _l(51279, "red_blood_cell_count", "Red Blood Cells", "m/uL", 2, "Hematology", "789-8"),
    _l(51301, "white_blood_cell_count", "White Blood Cells", "K/uL", 1, "Hematology", "804-5"),
    _l(50820, "ph", "pH", "units", 2, "Blood Gas", "11558-4"),
    # blood-gas duplicates of chemistry variables (same variable, second ITEMID)
    _l(50809, "glucose", "Glucose", "mg/dL", 0, "Blood Gas", "2339-0", canonical=False),
    _l(50822, "potassium", "Potassium, Whole Blood", "mEq/L", 1, "Blood Gas", "6298-4", canonical=False),
    _l(50817, "arterial_oxygen_saturation", "Oxygen Saturation", "%", 0, "Blood Gas", "20564-1"),
    _l(50983, "sodium", "Sodium", "mEq/L", 0, "Chemistry", "2951-2"),
    _l(50960, "magnesium", "Magnesium", "mg/dL", 1, "Chemistry", "2601-3"),
    _l(50821, "partial_pressure_o2", "pO2", "mm Hg", 0, "Blood Gas", "11556-8"),
    _l(51003, "troponin_t", "Troponin T", "ng/mL", 2, "Chemistry", "6598-7"),
    _l(51002, "troponin_i", "Troponin I", "ng/ml", 1, "Chemistry", "10839-9"),
    # a distractor lab: the pO2 of a body fluid is not the blood PaO2 variable
    _l(50832, None, "pO2, Body Fluid", "mm Hg", 0, "Blood Gas", "2706-0", canonical=False, fluid="Other Body Fluid"),
)

ITEM_BY_ID: dict[int, Item] = {item.itemid: item for item in ITEMS}
CANONICAL_ITEMS: dict[str, Item] = {item.variable: item for item in ITEMS if item.canonical}


def item_for(variable: str, database: str | None) -> Item:
    """The ITEMID a variable is written with in a stay of `database` (carevue | metavision):
    among the variable's items of that database or of the hospital (labs), the canonical one if it
    is among them, else the first listed; the canonical item when the database is unknown, 'both',
    or has no item for the variable (a stay the sampling constraint did not shape)."""
    if database in (MV, CV):
        candidates = [i for i in ITEMS if i.variable == variable and i.dbsource in (database, "hospital")]
        if candidates:
            return next((i for i in candidates if i.canonical), candidates[0])
    return CANONICAL_ITEMS[variable]


def item_catalogue() -> pd.DataFrame:
    """The item catalogue as a frame (one row per ITEMID), e.g. to cross-check a dbt seed."""
    return pd.DataFrame([item.__dict__ for item in ITEMS])


def text_to_score() -> dict[tuple[str, str], int]:
    """(variable, MIMIC text) -> score for every categorical item; verbal ETT maps to 1."""
    out: dict[tuple[str, str], int] = {}
    for item in ITEMS:
        if item.text_map and item.variable:
            for score, text in TEXT_MAPS[item.text_map].items():
                ett = item.variable == "gcs_verbal_response" and score == GCS_VERBAL_ETT
                out[(item.variable, text)] = 1 if ett else score
    return out


def check_catalogue(variables_csv: str | Path | None = None) -> None:
    """Raise if the catalogue's variables differ from `dbt_mimic/seeds/variables.csv`."""
    seed = Path(variables_csv) if variables_csv else (
        Path(__file__).resolve().parents[2] / "dbt_mimic" / "seeds" / "variables.csv")
    wanted = set(pd.read_csv(seed)["variable"])
    have = set(CANONICAL_ITEMS)
    if wanted != have:
        raise ValueError(
            f"item catalogue (mimic_dictionaries.py) out of sync with {seed}: "
            f"missing {sorted(wanted - have)}, unexpected {sorted(have - wanted)}"
        )

# ---------------------------------------------------------------------------------------------
# Built-in ICD-9 universe (written for this project; common ICU codes, MIMIC spelling: no dots).
# The codes and titles are data, in the package file core/data/icd9_builtin.csv (file order is the
# order the synthetic hospital draws from).
# ---------------------------------------------------------------------------------------------

BUILTIN_CODES_FILE = "data/icd9_builtin.csv"


def _builtin_codes(code_type: str) -> tuple[list[str], list[str]]:
    """(codes, titles) of one code type, in file order; codes stay text (leading zeros matter)."""
    import csv
    from importlib.resources import files

    resource = files("synehrgy_assets.core").joinpath(BUILTIN_CODES_FILE)
    with resource.open("r", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["code_type"] == code_type]
    if not rows:
        raise ValueError(f"{BUILTIN_CODES_FILE} (package synehrgy_assets.core): no {code_type} codes in "
                         "column 'code_type'")
    return [r["icd9_code"] for r in rows], [r["title"] for r in rows]


BUILTIN_DIAGNOSES, _DIAG_TITLES = _builtin_codes("diagnosis")
# MIMIC's own dictionary lacks a few codes that DIAGNOSES_ICD uses (e.g. 0414); so does ours,
# so staging must not inner-join codes to D_ICD_DIAGNOSES.
NOT_IN_DICTIONARY = {"0414"}
BUILTIN_PROCEDURES, _PROC_TITLES = _builtin_codes("procedure")



# ---------------------------------------------------------------------------------------------
# Code universe
# ---------------------------------------------------------------------------------------------

@dataclass
class CodeUniverse:
    dx_codes: list[str]
    dx_short: list[str]
    dx_long: list[str]
    px_codes: list[str]
    px_short: list[str]
    px_long: list[str]
    n_dx_model: int  # the first n codes are the built-in ones the model uses
    n_px_model: int


def _short_title(title: str) -> str:
    """MIMIC short titles are at most 24 characters; cut at a word boundary."""
    if len(title) <= 24:
        return title
    cut = title[:24]
    return cut[: cut.rfind(" ")].rstrip(" ,") if " " in cut else cut


def _read_dictionary(directory: Path, table: str) -> pd.DataFrame | None:
    for name in (f"{table}.csv.gz", f"{table}.csv"):
        path = directory / name
        if path.exists():
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame.columns = [c.lower() for c in frame.columns]
            expected = {"icd9_code", "short_title", "long_title"}
            if not expected <= set(frame.columns):
                raise ValueError(f"{path}: expected columns {sorted(expected)}, got {list(frame.columns)}")
            return frame
    return None


def code_universe(dictionary_dir) -> CodeUniverse:
    dx_codes, dx_long = list(BUILTIN_DIAGNOSES), list(_DIAG_TITLES)
    px_codes, px_long = list(BUILTIN_PROCEDURES), list(_PROC_TITLES)
    dx_short = [_short_title(t) for t in dx_long]
    px_short = [_short_title(t) for t in px_long]
    n_dx, n_px = len(dx_codes), len(px_codes)
    if dictionary_dir is not None:
        directory = Path(dictionary_dir)
        for table, codes, shorts, longs in (
            ("D_ICD_DIAGNOSES", dx_codes, dx_short, dx_long),
            ("D_ICD_PROCEDURES", px_codes, px_short, px_long),
        ):
            frame = _read_dictionary(directory, table)
            if frame is None:
                raise FileNotFoundError(f"code_dictionary_dir {directory} has no {table}.csv(.gz)")
            known = set(codes)
            extra = frame[~frame["icd9_code"].isin(known)].sort_values("icd9_code")
            codes += extra["icd9_code"].tolist()
            shorts += extra["short_title"].tolist()
            longs += extra["long_title"].tolist()
    return CodeUniverse(dx_codes, dx_short, dx_long, px_codes, px_short, px_long, n_dx, n_px)



# ---------------------------------------------------------------------------------------------
# Item lookups (writer lookups)
# ---------------------------------------------------------------------------------------------

TEXT_VALUES: list[str] = []
_TEXT_CODE: dict[tuple[str, int], int] = {}
for _map_name, _entries in TEXT_MAPS.items():
    for _score, _text in _entries.items():
        _TEXT_CODE[(_map_name, _score)] = len(TEXT_VALUES)
        TEXT_VALUES.append(_text)

MAX_ITEMID = max(item.itemid for item in ITEMS) + 1
ITEM_DECIMALS = np.zeros(MAX_ITEMID, dtype=np.int64)
ITEM_SCALE = np.ones(MAX_ITEMID)
ITEM_OFFSET = np.zeros(MAX_ITEMID)
UOM_VALUES: list[str | None] = [None]
ITEM_UOM = np.zeros(MAX_ITEMID, dtype=np.int64)
for _item in ITEMS:
    ITEM_DECIMALS[_item.itemid] = _item.decimals
    ITEM_SCALE[_item.itemid] = _item.scale
    ITEM_OFFSET[_item.itemid] = _item.offset
    if _item.valueuom is not None:
        if _item.valueuom not in UOM_VALUES:
            UOM_VALUES.append(_item.valueuom)
        ITEM_UOM[_item.itemid] = UOM_VALUES.index(_item.valueuom)


def text_codes(map_name: str, scores: np.ndarray) -> np.ndarray:
    """Global text codes (indices into TEXT_VALUES) for integer scores of one text map."""
    lookup = np.full(max(TEXT_MAPS[map_name]) + 1, -1, dtype=np.int64)
    for score in TEXT_MAPS[map_name]:
        lookup[score] = _TEXT_CODE[(map_name, score)]
    return lookup[np.asarray(scores, dtype=np.int64)]


def round_values(values: np.ndarray, itemids: np.ndarray) -> np.ndarray:
    """Round to each item's decimals, as MIMIC stores them (shortest decimal text)."""
    scale = 10.0 ** ITEM_DECIMALS[itemids]
    return np.round(values * scale) / scale


def fixed_decimals_text(values: pa.Array, decimals: np.ndarray) -> pa.Array:
    """Numbers as text with a fixed number of decimals per row ('1.0', '7.40'), like MIMIC's
    `value` column (its `valuenum` keeps the shortest form)."""
    decimals = np.asarray(decimals, dtype=np.int64)
    # shortest text first (right for whole-number items), then fix the rows with decimals
    text = pc.cast(values, pa.string())
    for d in np.unique(decimals[decimals > 0]):
        mask = decimals == d
        fixed = pc.cast(pc.cast(values.filter(pa.array(mask)), pa.decimal128(38, int(d))), pa.string())
        text = pc.replace_with_mask(text, pa.array(mask), fixed)
    return text


def event_value_columns(itemids: np.ndarray, valuenum: np.ndarray, text: np.ndarray):
    """(value, valuenum, valueuom) arrow columns from numbers in raw units and text codes.

    Rows with a text code (>= 0) write that text as `value`; the others write the number.
    """
    itemids = np.asarray(itemids, dtype=np.int64)
    has_text = np.asarray(text) >= 0
    num = pa.array(valuenum, type=pa.float64(), from_pandas=True)
    num_text = fixed_decimals_text(num, ITEM_DECIMALS[itemids])
    if has_text.any():
        txt = pc.take(pa.array(TEXT_VALUES, type=pa.string()),
                      pa.array(np.where(has_text, text, 0).astype(np.int32)))
        value = pc.if_else(pa.array(has_text), txt, num_text)
    else:
        value = num_text
    uom = dict_array(ITEM_UOM[itemids], UOM_VALUES)
    return value, num, uom



# reference ranges for the 'abnormal' flag (the synthetic hospital and mimic_writer)
LAB_REFERENCE_RANGES: dict[int, tuple[float, float]] = {
    51006: (6, 20), 50912: (.5, 1.2), 50931: (70, 100), 50971: (3.3, 5.1), 50902: (96, 108),
    50882: (22, 32), 50868: (8, 20), 50983: (133, 145), 50893: (8.4, 10.3), 50970: (2.7, 4.5),
    50960: (1.6, 2.6), 51301: (4, 11), 51222: (12, 16), 51221: (34, 45), 51265: (150, 440),
    51279: (4.2, 5.4), 51250: (82, 98), 51256: (50, 70), 51244: (18, 42), 51254: (2, 11),
    51146: (0, 2), 50861: (0, 40), 50878: (0, 40), 50863: (39, 117), 50885: (0, 1.5),
    50862: (3.5, 5.2), 51274: (10.4, 13.4), 51237: (.9, 1.1), 50820: (7.35, 7.45),
    50818: (35, 45), 50821: (85, 105), 50813: (.5, 2), 50809: (70, 105), 50822: (3.5, 5.3),
    50817: (95, 100), 51003: (0, .01), 51002: (0, .04),
}



def dictionary_tables(universe: CodeUniverse | None = None) -> dict[str, pd.DataFrame]:
    """D_ITEMS, D_LABITEMS, D_ICD_DIAGNOSES, D_ICD_PROCEDURES for the catalogue and code universe."""
    universe = universe or code_universe(None)
    chart = [i for i in ITEMS if i.table == "chartevents"]
    labs = [i for i in ITEMS if i.table == "labevents"]
    d_items = pd.DataFrame({
        "row_id": np.arange(1, len(chart) + 1),
        "itemid": [i.itemid for i in chart],
        "label": [i.label for i in chart],
        "abbreviation": pd.array([i.abbreviation for i in chart], dtype="str"),
        "dbsource": [i.dbsource for i in chart],
        "linksto": "chartevents",
        "category": pd.array([i.category for i in chart], dtype="str"),
        "unitname": pd.array([i.valueuom if i.dbsource == MV else None for i in chart], dtype="str"),
        "param_type": pd.array([("Text" if i.text_map else "Numeric") if i.dbsource == MV else None
                                for i in chart], dtype="str"),
        "conceptid": pd.array([None] * len(chart), dtype="Int64"),
    })
    d_lab = pd.DataFrame({
        "row_id": np.arange(1, len(labs) + 1),
        "itemid": [i.itemid for i in labs],
        "label": [i.label for i in labs],
        "fluid": [i.fluid for i in labs],
        "category": [i.category for i in labs],
        "loinc_code": [i.loinc for i in labs],
    })

    def d_icd(codes, shorts, longs):
        frame = pd.DataFrame({"icd9_code": codes, "short_title": shorts, "long_title": longs})
        frame = frame[~frame["icd9_code"].isin(NOT_IN_DICTIONARY)].reset_index(drop=True)
        frame.insert(0, "row_id", np.arange(1, len(frame) + 1))
        return frame

    return {
        "D_ITEMS": d_items,
        "D_LABITEMS": d_lab,
        "D_ICD_DIAGNOSES": d_icd(universe.dx_codes, universe.dx_short, universe.dx_long),
        "D_ICD_PROCEDURES": d_icd(universe.px_codes, universe.px_short, universe.px_long),
    }


