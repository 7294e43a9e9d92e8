"""PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD and PROCEDURES_ICD of one chunk as writer input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from synehrgy_assets.core.mimic_dictionaries import CodeUniverse
from synehrgy_assets.core.mimic_tables import dict_array
from synehrgy_assets.core.synthetic_hospital.arrays import NO_TIME, _expand, _ts
from synehrgy_assets.core.synthetic_hospital.model import (
    _ADM_LOCATIONS,
    _ADMISSION_TYPES,
    _CAREUNITS,
    _DBSOURCES,
    _DISCH_LOCATIONS,
    _ETHNICITIES,
    _INSURANCE,
    _LANGUAGES,
    _MARITAL,
    _RELIGIONS,
)
from synehrgy_assets.core.synthetic_hospital.structure import _Structure


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

