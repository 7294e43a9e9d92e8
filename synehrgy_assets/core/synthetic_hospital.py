"""A built-in synthetic hospital that writes raw MIMIC-III v1.4 tables.

It is the project's default data source (no real data needed) and its scale generator: every
step is vectorized numpy, patients are generated in chunks and each table is streamed to its
CSV (optionally gzip) file, so memory stays bounded whatever the size.

The module also owns what `decoder.py` shares: the MIMIC table schemas (official column
order), the item catalogue (variable -> ITEMIDs, units, text categories) and the CSV writer.

Nothing here is real patient data: every row comes from the random model below.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# ---------------------------------------------------------------------------------------------
# MIMIC-III v1.4 table schemas (official column order; kinds drive CSV formatting)
# ---------------------------------------------------------------------------------------------

INT, FLOAT, STR, TS = "int", "float", "str", "ts"

MIMIC_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "PATIENTS": (
        ("row_id", INT), ("subject_id", INT), ("gender", STR), ("dob", TS), ("dod", TS),
        ("dod_hosp", TS), ("dod_ssn", TS), ("expire_flag", INT),
    ),
    "ADMISSIONS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("admittime", TS),
        ("dischtime", TS), ("deathtime", TS), ("admission_type", STR),
        ("admission_location", STR), ("discharge_location", STR), ("insurance", STR),
        ("language", STR), ("religion", STR), ("marital_status", STR), ("ethnicity", STR),
        ("edregtime", TS), ("edouttime", TS), ("diagnosis", STR),
        ("hospital_expire_flag", INT), ("has_chartevents_data", INT),
    ),
    "ICUSTAYS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("icustay_id", INT),
        ("dbsource", STR), ("first_careunit", STR), ("last_careunit", STR),
        ("first_wardid", INT), ("last_wardid", INT), ("intime", TS), ("outtime", TS),
        ("los", FLOAT),
    ),
    "DIAGNOSES_ICD": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("seq_num", INT),
        ("icd9_code", STR),
    ),
    "PROCEDURES_ICD": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("seq_num", INT),
        ("icd9_code", STR),
    ),
    "D_ICD_DIAGNOSES": (
        ("row_id", INT), ("icd9_code", STR), ("short_title", STR), ("long_title", STR),
    ),
    "D_ICD_PROCEDURES": (
        ("row_id", INT), ("icd9_code", STR), ("short_title", STR), ("long_title", STR),
    ),
    "CHARTEVENTS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("icustay_id", INT),
        ("itemid", INT), ("charttime", TS), ("storetime", TS), ("cgid", INT), ("value", STR),
        ("valuenum", FLOAT), ("valueuom", STR), ("warning", INT), ("error", INT),
        ("resultstatus", STR), ("stopped", STR),
    ),
    "LABEVENTS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("itemid", INT),
        ("charttime", TS), ("value", STR), ("valuenum", FLOAT), ("valueuom", STR),
        ("flag", STR),
    ),
    "D_ITEMS": (
        ("row_id", INT), ("itemid", INT), ("label", STR), ("abbreviation", STR),
        ("dbsource", STR), ("linksto", STR), ("category", STR), ("unitname", STR),
        ("param_type", STR), ("conceptid", INT),
    ),
    "D_LABITEMS": (
        ("row_id", INT), ("itemid", INT), ("label", STR), ("fluid", STR), ("category", STR),
        ("loinc_code", STR),
    ),
}

HOSPITAL_TABLES = tuple(MIMIC_SCHEMAS)


def table_columns(table: str) -> list[str]:
    """Lowercase column names of a MIMIC table, in the official order."""
    return [name for name, _ in MIMIC_SCHEMAS[table]]


def table_filename(table: str, compress: bool) -> str:
    return f"{table}.csv.gz" if compress else f"{table}.csv"


# ---------------------------------------------------------------------------------------------
# Item catalogue: the 42 variables of dbt_mimic/seeds/variables.csv as real MIMIC ITEMIDs
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
    # distractor items (not one of the 42 variables): staging must ignore them
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
    variable: str | None  # None: a distractor item outside the 42 variables
    table: str  # 'chartevents' | 'labevents'
    dbsource: str  # 'carevue' | 'metavision' | 'hospital' (labs)
    label: str
    valueuom: str | None
    decimals: int = 0
    scale: float = 1.0
    offset: float = 0.0
    text_map: str | None = None
    canonical: bool = False  # the one ITEMID the decoder writes for this variable
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
    _c(220050, "systolic_blood_pressure", MV, "Arterial Blood Pressure systolic", "mmHg", abbreviation="ABPs", category="Routine Vital Signs"),
    _c(455, "systolic_blood_pressure", CV, "NBP [Systolic]", "mmHg"),
    _c(51, "systolic_blood_pressure", CV, "Arterial BP [Systolic]", "mmHg"),
    _c(220180, "diastolic_blood_pressure", MV, "Non Invasive Blood Pressure diastolic", "mmHg", abbreviation="NBPd", category="Routine Vital Signs", canonical=True),
    _c(220051, "diastolic_blood_pressure", MV, "Arterial Blood Pressure diastolic", "mmHg", abbreviation="ABPd", category="Routine Vital Signs"),
    _c(8441, "diastolic_blood_pressure", CV, "NBP [Diastolic]", "mmHg"),
    _c(8368, "diastolic_blood_pressure", CV, "Arterial BP [Diastolic]", "mmHg"),
    _c(220181, "mean_blood_pressure", MV, "Non Invasive Blood Pressure mean", "mmHg", abbreviation="NBPm", category="Routine Vital Signs", canonical=True),
    _c(220052, "mean_blood_pressure", MV, "Arterial Blood Pressure mean", "mmHg", abbreviation="ABPm", category="Routine Vital Signs"),
    _c(456, "mean_blood_pressure", CV, "NBP Mean", "mmHg"),
    _c(52, "mean_blood_pressure", CV, "Arterial BP Mean", "mmHg"),
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
    # MetaVision capillary refill is not in the benchmark's item map; kept for realism
    _c(223951, "capillary_refill_rate", MV, "Capillary Refill R", None, text_map="crr_mv", abbreviation="Capillary Refill R", category="Cardiovascular (Pulses)"),
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
    _l(50817, "oxygen_saturation", "Oxygen Saturation", "%", 0, "Blood Gas", "20564-1", canonical=False),
    # distractor labs
    _l(50983, None, "Sodium", "mEq/L", 0, "Chemistry", "2951-2", canonical=False),
    _l(50960, None, "Magnesium", "mg/dL", 1, "Chemistry", "2601-3", canonical=False),
    _l(50821, None, "pO2", "mm Hg", 0, "Blood Gas", "11556-8", canonical=False),
)

ITEM_BY_ID: dict[int, Item] = {item.itemid: item for item in ITEMS}
CANONICAL_ITEMS: dict[str, Item] = {item.variable: item for item in ITEMS if item.canonical}


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
            f"synthetic_hospital item catalogue out of sync with {seed}: "
            f"missing {sorted(wanted - have)}, unexpected {sorted(have - wanted)}"
        )

# ---------------------------------------------------------------------------------------------
# Built-in ICD-9 universe (written for this project; common ICU codes, MIMIC spelling: no dots)
# ---------------------------------------------------------------------------------------------

_DIAGNOSES_TEXT = """
0380|Streptococcal septicemia
03811|Methicillin susceptible Staphylococcus aureus septicemia
03812|Methicillin resistant Staphylococcus aureus septicemia
03842|Septicemia due to Escherichia coli
03849|Other septicemia due to gram-negative organisms
0389|Unspecified septicemia
00845|Intestinal infection due to Clostridium difficile
0414|Escherichia coli infection in conditions classified elsewhere
04104|Streptococcus group D infection in conditions classified elsewhere
04111|Methicillin susceptible Staphylococcus aureus infection elsewhere
0413|Klebsiella pneumoniae infection in conditions classified elsewhere
07054|Chronic hepatitis C without mention of hepatic coma
07070|Unspecified viral hepatitis C without hepatic coma
1120|Candidiasis of mouth
1125|Disseminated candidiasis
1509|Malignant neoplasm of esophagus, unspecified site
1541|Malignant neoplasm of rectum
1550|Malignant neoplasm of liver, primary
1579|Malignant neoplasm of pancreas, part unspecified
1629|Malignant neoplasm of bronchus and lung, unspecified
1749|Malignant neoplasm of breast (female), unspecified
185|Malignant neoplasm of prostate
1970|Secondary malignant neoplasm of lung
1977|Secondary malignant neoplasm of liver
1983|Secondary malignant neoplasm of brain and spinal cord
1985|Secondary malignant neoplasm of bone and bone marrow
1991|Other malignant neoplasm without specification of site
20300|Multiple myeloma, without mention of having achieved remission
20500|Acute myeloid leukemia, without mention of having achieved remission
2449|Unspecified acquired hypothyroidism
25000|Diabetes mellitus without complication, type II or unspecified
25001|Diabetes mellitus without complication, type I
25013|Diabetes with ketoacidosis, type I, uncontrolled
25040|Diabetes with renal manifestations, type II or unspecified
25060|Diabetes with neurological manifestations, type II or unspecified
2639|Unspecified protein-calorie malnutrition
2720|Pure hypercholesterolemia
2724|Other and unspecified hyperlipidemia
2749|Gout, unspecified
2752|Disorders of magnesium metabolism
27541|Hypocalcemia
2760|Hyperosmolality and/or hypernatremia
2761|Hyposmolality and/or hyponatremia
2762|Acidosis
2767|Hyperpotassemia
2768|Hypopotassemia
27651|Dehydration
27669|Other fluid overload
27800|Obesity, unspecified
27801|Morbid obesity
2800|Iron deficiency anemia secondary to blood loss (chronic)
2851|Acute posthemorrhagic anemia
28521|Anemia in chronic kidney disease
28529|Anemia of other chronic disease
2859|Anemia, unspecified
2866|Defibrination syndrome
2869|Other and unspecified coagulation defects
2875|Thrombocytopenia, unspecified
2930|Delirium due to conditions classified elsewhere
2948|Other persistent mental disorders due to conditions classified elsewhere
29181|Alcohol withdrawal
30000|Anxiety state, unspecified
30390|Other and unspecified alcohol dependence, unspecified
30500|Alcohol abuse, unspecified
3051|Tobacco use disorder
311|Depressive disorder, not elsewhere classified
3310|Alzheimer's disease
32723|Obstructive sleep apnea (adult) (pediatric)
3453|Grand mal status
3481|Anoxic brain damage
34830|Encephalopathy, unspecified
34831|Metabolic encephalopathy
3485|Cerebral edema
3572|Polyneuropathy in diabetes
4019|Unspecified essential hypertension
40390|Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage I through stage IV, or unspecified
40391|Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage V or end stage renal disease
41011|Acute myocardial infarction of other anterior wall, initial episode of care
41041|Acute myocardial infarction of other inferior wall, initial episode of care
41071|Subendocardial infarction, initial episode of care
4111|Intermediate coronary syndrome
412|Old myocardial infarction
4139|Other and unspecified angina pectoris
41400|Coronary atherosclerosis of unspecified type of vessel, native or graft
41401|Coronary atherosclerosis of native coronary artery
41519|Other pulmonary embolism and infarction
4160|Primary pulmonary hypertension
4168|Other chronic pulmonary heart diseases
4233|Cardiac tamponade
4240|Mitral valve disorders
4241|Aortic valve disorders
4254|Other primary cardiomyopathies
4271|Paroxysmal ventricular tachycardia
42731|Atrial fibrillation
42732|Atrial flutter
42741|Ventricular fibrillation
4275|Cardiac arrest
4280|Congestive heart failure, unspecified
42822|Chronic systolic heart failure
42823|Acute on chronic systolic heart failure
42832|Chronic diastolic heart failure
42833|Acute on chronic diastolic heart failure
430|Subarachnoid hemorrhage
431|Intracerebral hemorrhage
4321|Subdural hemorrhage
43310|Occlusion and stenosis of carotid artery without mention of cerebral infarction
43411|Cerebral embolism with cerebral infarction
43491|Cerebral artery occlusion, unspecified with cerebral infarction
4400|Atherosclerosis of aorta
44021|Atherosclerosis of native arteries of the extremities with intermittent claudication
4412|Thoracic aneurysm without mention of rupture
4414|Abdominal aneurysm without mention of rupture
4439|Peripheral vascular disease, unspecified
45341|Acute venous embolism and thrombosis of deep vessels of proximal lower extremity
4560|Esophageal varices with bleeding
4580|Orthostatic hypotension
45829|Other iatrogenic hypotension
4589|Hypotension, unspecified
486|Pneumonia, organism unspecified
4821|Pneumonia due to Pseudomonas
48241|Methicillin susceptible pneumonia due to Staphylococcus aureus
49121|Obstructive chronic bronchitis with (acute) exacerbation
49390|Asthma, unspecified type, unspecified
496|Chronic airway obstruction, not elsewhere classified
5070|Pneumonitis due to inhalation of food or vomitus
5119|Unspecified pleural effusion
5180|Pulmonary collapse
51881|Acute respiratory failure
51882|Other pulmonary insufficiency, not elsewhere classified
51883|Chronic respiratory failure
51884|Acute and chronic respiratory failure
53081|Esophageal reflux
5570|Acute vascular insufficiency of intestine
5589|Other and unspecified noninfectious gastroenteritis and colitis
5609|Unspecified intestinal obstruction
570|Acute and subacute necrosis of liver
5712|Alcoholic cirrhosis of liver
5715|Cirrhosis of liver without mention of alcohol
5722|Hepatic encephalopathy
5723|Portal hypertension
5724|Hepatorenal syndrome
5733|Hepatitis, unspecified
5770|Acute pancreatitis
5780|Hematemesis
5781|Blood in stool
5789|Hemorrhage of gastrointestinal tract, unspecified
5845|Acute kidney failure with lesion of tubular necrosis
5849|Acute kidney failure, unspecified
5853|Chronic kidney disease, Stage III (moderate)
5854|Chronic kidney disease, Stage IV (severe)
5856|End stage renal disease
5859|Chronic kidney disease, unspecified
5990|Urinary tract infection, site not specified
60000|Hypertrophy (benign) of prostate without urinary obstruction
6826|Cellulitis and abscess of leg, except foot
70703|Pressure ulcer, lower back
71590|Osteoarthrosis, unspecified whether generalized or localized, site unspecified
73300|Osteoporosis, unspecified
7706|Transitory tachypnea of newborn
7742|Neonatal jaundice associated with preterm delivery
76518|Other preterm infants, 2000-2,499 grams
7802|Syncope and collapse
78039|Other convulsions
78060|Fever, unspecified
78097|Altered mental status
7823|Edema
78551|Cardiogenic shock
78552|Septic shock
78559|Other shock without mention of trauma
78650|Chest pain, unspecified
78791|Diarrhea
78820|Retention of urine, unspecified
78900|Abdominal pain, unspecified site
78959|Other ascites
7907|Bacteremia
79902|Hypoxemia
8052|Closed fracture of dorsal [thoracic] vertebra without mention of spinal cord injury
8054|Closed fracture of lumbar vertebra without mention of spinal cord injury
80702|Closed fracture of two ribs
80703|Closed fracture of three ribs
8208|Closed fracture of unspecified part of neck of femur
85200|Subarachnoid hemorrhage following injury without mention of open intracranial wound, unspecified state of consciousness
85220|Subdural hemorrhage following injury without mention of open intracranial wound, unspecified state of consciousness
8600|Traumatic pneumothorax without mention of open wound into thorax
9961|Mechanical complication of other vascular device, implant, and graft
99591|Sepsis
99592|Severe sepsis
99662|Infection and inflammatory reaction due to other vascular device, implant, and graft
9971|Cardiac complications
9975|Urinary complications
99811|Hemorrhage complicating a procedure
99812|Hematoma complicating a procedure
99859|Other postoperative infection
V053|Need for prophylactic vaccination and inoculation against viral hepatitis
V090|Infection with microorganisms resistant to penicillins
V103|Personal history of malignant neoplasm of breast
V1046|Personal history of malignant neoplasm of prostate
V1251|Personal history of venous thrombosis and embolism
V1254|Personal history of transient ischemic attack (TIA), and cerebral infarction without residual deficits
V1582|Personal history of tobacco use
V290|Observation for suspected infectious condition
V3000|Single liveborn, born in hospital, delivered without mention of cesarean section
V3001|Single liveborn, born in hospital, delivered by cesarean section
V433|Heart valve replaced by other means
V440|Tracheostomy status
V4501|Cardiac pacemaker in situ
V4511|Renal dialysis status
V4581|Aortocoronary bypass status
V4582|Percutaneous transluminal coronary angioplasty status
V4986|Do not resuscitate status
V5861|Long-term (current) use of anticoagulants
V5866|Long-term (current) use of aspirin
V5867|Long-term (current) use of insulin
V667|Encounter for palliative care
E8120|Other motor vehicle traffic accident involving collision with motor vehicle injuring driver of motor vehicle other than motorcycle
E8490|Home accidents
E8497|Accidents occurring in residential institution
E8499|Accident occurring in unspecified place
E8782|Surgical operation with implant of artificial internal device causing abnormal patient reaction
E8788|Other specified surgical operations and procedures causing abnormal patient reaction
E8798|Other specified procedures as the cause of abnormal reaction of patient
E8859|Fall from other slipping, tripping, or stumbling
E8889|Unspecified fall
E9320|Adrenal cortical steroids causing adverse effects in therapeutic use
E9331|Antineoplastic and immunosuppressive drugs causing adverse effects in therapeutic use
E9342|Anticoagulants causing adverse effects in therapeutic use
"""

_PROCEDURES_TEXT = """
0014|Injection or infusion of oxazolidinone class of antibiotics
0017|Infusion of vasopressor agent
0040|Procedure on single vessel
0041|Procedure on two vessels
0045|Insertion of one vascular stent
0046|Insertion of two vascular stents
0066|Percutaneous transluminal coronary angioplasty [PTCA]
0124|Other craniotomy
0131|Incision of cerebral meninges
0331|Spinal tap
311|Temporary tracheostomy
3129|Other permanent tracheostomy
3322|Fiber-optic bronchoscopy
3324|Closed [endoscopic] biopsy of bronchus
3404|Insertion of intercostal catheter for drainage
3491|Thoracentesis
3521|Open and other replacement of aortic valve with tissue graft
3606|Insertion of non-drug-eluting coronary artery stent(s)
3607|Insertion of drug-eluting coronary artery stent(s)
3612|Aortocoronary bypass of two coronary arteries
3613|Aortocoronary bypass of three coronary arteries
3615|Single internal mammary-coronary artery bypass
3722|Left heart cardiac catheterization
3723|Combined right and left heart cardiac catheterization
3761|Implant of pulsation balloon
3778|Insertion of temporary transvenous pacemaker system
3844|Resection of vessel with replacement, aorta, abdominal
3891|Arterial catheterization
3893|Venous catheterization, not elsewhere classified
3895|Venous catheterization for renal dialysis
3950|Angioplasty of other non-coronary vessel(s)
3961|Extracorporeal circulation auxiliary to open heart surgery
3971|Endovascular implantation of other graft in abdominal aorta
3995|Hemodialysis
4311|Percutaneous [endoscopic] gastrostomy [PEG]
4443|Endoscopic control of gastric or duodenal bleeding
4513|Other endoscopy of small intestine
4516|Esophagogastroduodenoscopy [EGD] with closed biopsy
4523|Colonoscopy
4573|Open and other right hemicolectomy
5110|Endoscopic retrograde cholangiopancreatography [ERCP]
5123|Laparoscopic cholecystectomy
5411|Exploratory laparotomy
5491|Percutaneous abdominal drainage
7935|Open reduction of fracture with internal fixation, femur
8151|Total hip replacement
8622|Excisional debridement of wound, infection, or burn
8628|Nonexcisional debridement of wound, infection or burn
8703|Computerized axial tomography of head
8741|Computerized axial tomography of thorax
8853|Angiocardiography of left heart structures
8856|Coronary arteriography using two catheters
8872|Diagnostic ultrasound of heart
8891|Magnetic resonance imaging of brain and brain stem
8962|Central venous pressure monitoring
8964|Pulmonary artery wedge monitoring
9390|Non-invasive mechanical ventilation
9604|Insertion of endotracheal tube
966|Enteral infusion of concentrated nutritional substances
9670|Continuous invasive mechanical ventilation of unspecified duration
9671|Continuous invasive mechanical ventilation for less than 96 consecutive hours
9672|Continuous invasive mechanical ventilation for 96 consecutive hours or more
9904|Transfusion of packed cells
9905|Transfusion of platelets
9907|Transfusion of other serum
9915|Parenteral infusion of concentrated nutritional substances
9955|Prophylactic administration of vaccine against other diseases
9960|Cardiopulmonary resuscitation, not otherwise specified
9962|Other electric countershock of heart
9983|Other phototherapy
"""


def _parse_codes(text: str) -> tuple[list[str], list[str]]:
    rows = [line.split("|", 1) for line in text.strip().splitlines()]
    return [r[0] for r in rows], [r[1] for r in rows]


BUILTIN_DIAGNOSES, _DIAG_TITLES = _parse_codes(_DIAGNOSES_TEXT)
# MIMIC's own dictionary lacks a few codes that DIAGNOSES_ICD uses (e.g. 0414); so does ours,
# so staging must not inner-join codes to D_ICD_DIAGNOSES.
_NOT_IN_DICTIONARY = {"0414"}
BUILTIN_PROCEDURES, _PROC_TITLES = _parse_codes(_PROCEDURES_TEXT)

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
# CSV writing (shared with decoder.py)
# ---------------------------------------------------------------------------------------------

_NEEDS_QUOTE = r'[",\r\n]'


def _quote_strings(arr: pa.Array, quote_all: bool) -> pa.Array:
    """CSV-quote a string array: every value (full release) or only where needed (demo)."""
    if isinstance(arr.type, pa.DictionaryType):
        # quote the (small) dictionary once, then expand
        return pc.take(_quote_strings(arr.dictionary, quote_all), arr.indices)
    if len(arr) == 0:
        return arr
    has_quote = pc.any(pc.match_substring(arr, '"')).as_py()
    escaped = pc.replace_substring(arr, '"', '""') if has_quote else arr
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    if quote_all:
        return quoted
    needs = pc.match_substring_regex(arr, _NEEDS_QUOTE)
    if not pc.any(needs).as_py():
        return arr
    return pc.if_else(needs, quoted, arr)


def _csv_lines(columns: list[pa.Array], kinds: list[str], quote_all: bool) -> pa.Array:
    """One CSV line (with trailing newline) per row, nulls as empty fields (pure arrow)."""
    formatted = [_quote_strings(a, quote_all) if k == STR else pc.cast(a, pa.string())
                 for a, k in zip(columns, kinds)]
    joined = pc.binary_join_element_wise(
        *formatted, ",", null_handling="replace", null_replacement=""
    )
    return pc.binary_join_element_wise(joined, "", "\n")


def _string_array_bytes(arr: pa.Array) -> memoryview:
    """The contiguous UTF-8 payload of a string array without nulls (zero copy)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)
    start, end = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    return memoryview(arr.buffers()[2])[start:end]


def csv_body(columns: list[pa.Array], kinds: list[str], quote_all: bool) -> memoryview:
    """CSV rows (no header) as bytes: the full release style quotes every string value, the
    demo style only values holding a quote, comma or line break."""
    return _string_array_bytes(_csv_lines(columns, kinds, quote_all))


def header_line(table: str, header_case: str) -> bytes:
    if header_case not in ("lower", "upper"):
        raise ValueError(f"header_case must be 'lower' or 'upper', got {header_case!r}")
    names = table_columns(table)
    if header_case == "upper":
        return (",".join(f'"{n.upper()}"' for n in names) + "\n").encode()
    return (",".join(names) + "\n").encode()


def _to_arrow_column(values, kind: str, table: str, column: str) -> pa.Array:
    """Coerce numpy / pandas / arrow values to the arrow type a column kind is written from."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    try:
        if isinstance(values, pa.Array):
            arr = values
        elif kind == TS and isinstance(values, pd.Series) and not pd.api.types.is_datetime64_any_dtype(values):
            arr = pa.array(pd.to_datetime(values), from_pandas=True)
        else:
            arr = pa.array(values, from_pandas=True)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{table}.{column}: cannot convert the values for a {kind} column ({exc})") from exc
    t = arr.type
    ok = {
        INT: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t),
        FLOAT: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t),
        TS: pa.types.is_timestamp(t) or pa.types.is_integer(t) or pa.types.is_null(t),
        STR: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
        or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)),
    }[kind]
    if not ok:
        hint = " (codes must stay strings to keep leading zeros)" if kind == STR else ""
        raise ValueError(f"{table}.{column}: expected a {kind} column, got arrow type {t}{hint}")
    try:
        if kind == INT:
            if pa.types.is_floating(t):
                arr = pc.round(arr)
            return pc.cast(arr, pa.int64())
        if kind == FLOAT:
            return pc.cast(arr, pa.float64())
        if kind == TS:
            if pa.types.is_integer(t):  # epoch seconds
                return pc.cast(pc.cast(arr, pa.int64()), pa.timestamp("s"))
            if pa.types.is_timestamp(t) and t.unit != "s":
                arr = pc.floor_temporal(arr, unit="second")
                arr = pc.cast(arr, pa.timestamp("s", tz=t.tz), safe=False)
            return pc.cast(arr, pa.timestamp("s"))
        if pa.types.is_dictionary(t):
            return arr
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{table}.{column}: cannot write arrow type {t} as a {kind} column ({exc})") from exc


_WRITE_SLICE_ROWS = 250_000  # bounds the formatted text held per step (and keeps int32 offsets safe)


class MimicTableWriter:
    """Streams one MIMIC table to `path` (CSV or gzip CSV), chunk by chunk.

    Formatting and compression run in two worker threads (arrow and zlib free the GIL), so
    the caller generates chunk k+1 while chunk k is formatted and chunk k-1 compressed. At
    most one chunk waits at each stage, which keeps memory bounded. Output is deterministic:
    the gzip header carries no timestamp or file name.
    """

    def __init__(self, path: Path, table: str, *, header_case: str = "lower",
                 compress: bool = True, gzip_level: int = 1):
        if table not in MIMIC_SCHEMAS:
            raise ValueError(f"unknown MIMIC table {table!r}; expected one of {HOSPITAL_TABLES}")
        self.path = Path(path)
        self.table = table
        self.columns = MIMIC_SCHEMAS[table]
        self.quote_all = header_case == "upper"
        self.rows = 0
        self._file = open(self.path, "wb")
        self._zip = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if compress else None
        self._formatter = ThreadPoolExecutor(max_workers=1)
        self._sinker = ThreadPoolExecutor(max_workers=1)
        self._formatting: Future | None = None
        self._sinking: Future | None = None
        self._queue_sink(header_line(table, header_case))

    def _sink(self, payload) -> None:
        self._file.write(self._zip.compress(payload) if self._zip else payload)

    def _queue_sink(self, payload) -> None:
        if self._sinking is not None:
            self._sinking.result()
        self._sinking = self._sinker.submit(self._sink, payload)

    def _format_and_sink(self, arrays: list[pa.Array]) -> None:
        # the memoryview keeps the arrow buffer alive until the sink has consumed it
        self._queue_sink(csv_body(arrays, [k for _, k in self.columns], self.quote_all))

    def write(self, data: Mapping | pd.DataFrame | pa.Table) -> int:
        """Append rows; `data` maps every column name to an array of equal length."""
        names = [name for name, _ in self.columns]
        if isinstance(data, pa.Table):
            data = {name: data.column(name) for name in data.column_names}
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"{self.table}: missing column(s) {missing}; expected {names}")
        arrays = [_to_arrow_column(data[name], kind, self.table, name) for name, kind in self.columns]
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            raise ValueError(f"{self.table}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if n == 0:
            return 0
        for start in range(0, n, _WRITE_SLICE_ROWS):
            piece = [a.slice(start, _WRITE_SLICE_ROWS) for a in arrays]
            if self._formatting is not None:
                self._formatting.result()
            self._formatting = self._formatter.submit(self._format_and_sink, piece)
        self.rows += n
        return n

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            if self._formatting is not None:
                self._formatting.result()  # it queues the last sink, so wait for it first
            if self._sinking is not None:
                self._sinking.result()
            if self._zip is not None:
                self._file.write(self._zip.flush())
        finally:
            self._formatter.shutdown(wait=True)
            self._sinker.shutdown(wait=True)
            self._file.close()

    def __enter__(self) -> "MimicTableWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def atomic_table_dir(out_dir: Path, compress: bool) -> Iterator[Path]:
    """Yield a private temp dir; on success move its files into `out_dir`, else delete it.

    A failed write leaves `out_dir` as it was. When a table is replaced, the other
    compression variant of it (TABLE.csv vs TABLE.csv.gz) is removed so a directory never
    holds two versions of one table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for produced in sorted(tmp.iterdir()):
        table = produced.name.split(".", 1)[0]
        other = out_dir / table_filename(table, not compress)
        if other.exists():
            other.unlink()
        os.replace(produced, out_dir / produced.name)
    tmp.rmdir()


def write_frame(path: Path, table: str, frame: pd.DataFrame | Mapping, *, header_case: str = "lower",
                compress: bool = True) -> int:
    """Write one whole table in one go; returns the row count."""
    with MimicTableWriter(path, table, header_case=header_case, compress=compress) as writer:
        return writer.write(frame)


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


def _dict_array(indices: np.ndarray, dictionary: list[str | None]) -> pa.Array:
    """Strings from small integer codes; a negative code or a None entry is a null."""
    indices = np.asarray(indices)
    null_entries = np.array([d is None for d in dictionary], dtype=bool)
    mask = indices < 0
    if null_entries.any():
        mask = mask | null_entries[np.clip(indices, 0, None)]
    dictionary = ["" if d is None else d for d in dictionary]
    idx = pa.array(np.where(mask, 0, indices).astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(idx, pa.array(dictionary, type=pa.string()))


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
# Code universe
# ---------------------------------------------------------------------------------------------

@dataclass
class _CodeUniverse:
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


def _code_universe(dictionary_dir) -> _CodeUniverse:
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
    return _CodeUniverse(dx_codes, dx_short, dx_long, px_codes, px_short, px_long, n_dx, n_px)


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
               universe: _CodeUniverse) -> _Structure:
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
# Item lookups used by the event generators
# ---------------------------------------------------------------------------------------------

TEXT_VALUES: list[str] = []
_TEXT_CODE: dict[tuple[str, int], int] = {}
for _map_name, _entries in TEXT_MAPS.items():
    for _score, _text in _entries.items():
        _TEXT_CODE[(_map_name, _score)] = len(TEXT_VALUES)
        TEXT_VALUES.append(_text)

_MAX_ITEMID = max(item.itemid for item in ITEMS) + 1
_ITEM_DECIMALS = np.zeros(_MAX_ITEMID, dtype=np.int64)
_ITEM_SCALE = np.ones(_MAX_ITEMID)
_ITEM_OFFSET = np.zeros(_MAX_ITEMID)
_UOM_VALUES: list[str | None] = [None]
_ITEM_UOM = np.zeros(_MAX_ITEMID, dtype=np.int64)
for _item in ITEMS:
    _ITEM_DECIMALS[_item.itemid] = _item.decimals
    _ITEM_SCALE[_item.itemid] = _item.scale
    _ITEM_OFFSET[_item.itemid] = _item.offset
    if _item.valueuom is not None:
        if _item.valueuom not in _UOM_VALUES:
            _UOM_VALUES.append(_item.valueuom)
        _ITEM_UOM[_item.itemid] = _UOM_VALUES.index(_item.valueuom)


def text_codes(map_name: str, scores: np.ndarray) -> np.ndarray:
    """Global text codes (indices into TEXT_VALUES) for integer scores of one text map."""
    lookup = np.full(max(TEXT_MAPS[map_name]) + 1, -1, dtype=np.int64)
    for score in TEXT_MAPS[map_name]:
        lookup[score] = _TEXT_CODE[(map_name, score)]
    return lookup[np.asarray(scores, dtype=np.int64)]


def round_values(values: np.ndarray, itemids: np.ndarray) -> np.ndarray:
    """Round to each item's decimals, as MIMIC stores them (shortest decimal text)."""
    scale = 10.0 ** _ITEM_DECIMALS[itemids]
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
    num_text = fixed_decimals_text(num, _ITEM_DECIMALS[itemids])
    if has_text.any():
        txt = pc.take(pa.array(TEXT_VALUES, type=pa.string()),
                      pa.array(np.where(has_text, text, 0).astype(np.int32)))
        value = pc.if_else(pa.array(has_text), txt, num_text)
    else:
        value = num_text
    uom = _dict_array(_ITEM_UOM[itemids], _UOM_VALUES)
    return value, num, uom


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

    raw = canonical * _ITEM_SCALE[itemid] + _ITEM_OFFSET[itemid]
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
        "resultstatus": _dict_array(np.where(mv_rows, -1, status), _RESULTSTATUS),
        "stopped": _dict_array(np.where(mv_rows, -1, stopped), _STOPPED),
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
# reference ranges for the 'abnormal' flag (shared with decoder.py)
LAB_REFERENCE_RANGES: dict[int, tuple[float, float]] = {
    51006: (6, 20), 50912: (.5, 1.2), 50931: (70, 100), 50971: (3.3, 5.1), 50902: (96, 108),
    50882: (22, 32), 50868: (8, 20), 50983: (133, 145), 50893: (8.4, 10.3), 50970: (2.7, 4.5),
    50960: (1.6, 2.6), 51301: (4, 11), 51222: (12, 16), 51221: (34, 45), 51265: (150, 440),
    51279: (4.2, 5.4), 51250: (82, 98), 51256: (50, 70), 51244: (18, 42), 51254: (2, 11),
    51146: (0, 2), 50861: (0, 40), 50878: (0, 40), 50863: (39, 117), 50885: (0, 1.5),
    50862: (3.5, 5.2), 51274: (10.4, 13.4), 51237: (.9, 1.1), 50820: (7.35, 7.45),
    50818: (35, 45), 50821: (85, 105), 50813: (.5, 2), 50809: (70, 105), 50822: (3.5, 5.3),
    50817: (95, 100),
}


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
    lo = np.zeros(_MAX_ITEMID)
    hi = np.zeros(_MAX_ITEMID)
    for item, (a, b) in LAB_REFERENCE_RANGES.items():
        lo[item], hi[item] = a, b
    flag = np.where((valuenum < lo[itemid]) | (valuenum > hi[itemid]), 0, -1)
    # a few results are text only ("UNABLE TO REPORT" ...), with no valuenum and no flag
    text_only = rng.random(n_rows) < .003
    text = np.where(text_only, rng.integers(0, len(_LAB_TEXT), n_rows), -1)
    valuenum = np.where(text_only, np.nan, valuenum)
    flag = np.where(text_only, -1, flag)
    num = pa.array(valuenum, type=pa.float64(), from_pandas=True)
    value = pc.if_else(pa.array(text_only), _dict_array(text, _LAB_TEXT).cast(pa.string()),
                       fixed_decimals_text(num, _ITEM_DECIMALS[itemid]))
    uom = _dict_array(_ITEM_UOM[itemid], _UOM_VALUES)
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
        "flag": _dict_array(flag, ["abnormal"]),
    }


# ---------------------------------------------------------------------------------------------
# Structural tables as writer input
# ---------------------------------------------------------------------------------------------

def _null_ts(seconds: np.ndarray) -> pa.Array:
    seconds = np.asarray(seconds, dtype=np.int64)
    return _ts(seconds, mask=seconds == NO_TIME)


def _structure_tables(S: _Structure, universe: _CodeUniverse, offsets: dict[str, int]) -> dict[str, dict]:
    n, m, q = len(S.subject_id), len(S.hadm_id), len(S.icustay_id)
    rid = lambda table, k: np.arange(offsets[table] + 1, offsets[table] + k + 1)  # noqa: E731
    patients = {
        "row_id": rid("PATIENTS", n),
        "subject_id": S.subject_id,
        "gender": _dict_array(S.male.astype(np.int64), ["F", "M"]),
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
        "admission_type": _dict_array(S.a_type, _ADMISSION_TYPES),
        "admission_location": _dict_array(S.a_location, _ADM_LOCATIONS),
        "discharge_location": _dict_array(S.d_location, _DISCH_LOCATIONS),
        "insurance": _dict_array(S.insurance, _INSURANCE),
        "language": _dict_array(S.language, _LANGUAGES),
        "religion": _dict_array(S.religion, _RELIGIONS),
        "marital_status": _dict_array(S.marital, _MARITAL),
        "ethnicity": _dict_array(S.ethnicity[S.a_patient], _ETHNICITIES),
        "edregtime": _null_ts(S.ed_in),
        "edouttime": _null_ts(S.ed_out),
        "diagnosis": _dict_array(S.diagnosis_idx, S.diagnosis),
        "hospital_expire_flag": S.died.astype(np.int64),
        "has_chartevents_data": (S.n_stays > 0).astype(np.int64),
    }
    los_days = np.round((S.outtime - S.intime) / 86400.0, 4)
    icustays = {
        "row_id": rid("ICUSTAYS", q),
        "subject_id": S.subject_id[S.a_patient[S.s_adm_index]],
        "hadm_id": S.hadm_id[S.s_adm_index],
        "icustay_id": S.icustay_id,
        "dbsource": _dict_array(np.where(S.carevue[S.a_patient[S.s_adm_index]], 0, 1), _DBSOURCES),
        "first_careunit": _dict_array(S.first_cu, _CAREUNITS),
        "last_careunit": _dict_array(S.last_cu, _CAREUNITS),
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
            "icd9_code": _dict_array(code, universe_codes),
        }

    return {
        "PATIENTS": patients,
        "ADMISSIONS": admissions,
        "ICUSTAYS": icustays,
        "DIAGNOSES_ICD": codes("DIAGNOSES_ICD", S.dx_adm, S.dx_code, universe.dx_codes),
        "PROCEDURES_ICD": codes("PROCEDURES_ICD", S.px_adm, S.px_code, universe.px_codes),
    }


def dictionary_tables(universe: _CodeUniverse | None = None) -> dict[str, pd.DataFrame]:
    """D_ITEMS, D_LABITEMS, D_ICD_DIAGNOSES, D_ICD_PROCEDURES for the catalogue and code universe."""
    universe = universe or _code_universe(None)
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
        frame = frame[~frame["icd9_code"].isin(_NOT_IN_DICTIONARY)].reset_index(drop=True)
        frame.insert(0, "row_id", np.arange(1, len(frame) + 1))
        return frame

    return {
        "D_ITEMS": d_items,
        "D_LABITEMS": d_lab,
        "D_ICD_DIAGNOSES": d_icd(universe.dx_codes, universe.dx_short, universe.dx_long),
        "D_ICD_PROCEDURES": d_icd(universe.px_codes, universe.px_short, universe.px_long),
    }


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------

def _plan(config: HospitalConfig, universe: _CodeUniverse) -> tuple[float, int, float]:
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
    universe = _code_universe(config.code_dictionary_dir)
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
