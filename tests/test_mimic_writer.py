"""Round trip: marts-shaped cohort -> MIMIC-III tables -> the cohort's facts read back."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.mimic_writer import cohort_to_mimic_tables, write_mimic_tables
from synehrgy_assets.core.mimic_dictionaries import CANONICAL_ITEMS, TEXT_MAPS, text_to_score
from synehrgy_assets.core.mimic_tables import table_columns

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_VARIABLES = pd.read_csv(REPO_ROOT / "dbt_mimic" / "seeds" / "variables.csv")
YEAR_S = 365.2425 * 86400
CATEGORY_RANGE = {"gcs_eye_opening": (1, 4), "gcs_motor_response": (1, 6), "gcs_verbal_response": (1, 5),
                  "gcs_total": (3, 15), "capillary_refill_rate": (0, 1)}
CODES = {"diagnosis": ["4280", "0389", "5849", "25000", "V4581", "E8788", "0414", "99591"],
         "procedure": ["0066", "0040", "9604", "3893", "9671", "966", "0131"]}


def make_cohort(n_patients: int = 25, seed: int = 0) -> StagedCohort:
    """A small random marts-shaped cohort covering every variable, code type and edge case."""
    rng = np.random.default_rng(seed)
    n_visits = rng.integers(1, 4, n_patients)
    subject = np.repeat(np.arange(500, 500 + n_patients) * 3, n_visits)  # arbitrary input ids
    visit_index = np.concatenate([np.arange(k) for k in n_visits])
    n = len(subject)
    age0 = rng.uniform(18, 88, n_patients)
    capped0 = rng.random(n_patients) < .15
    los = rng.uniform(12, 200, n)
    gap = np.where(visit_index == 0, np.nan, rng.uniform(24, 5000, n))
    age = np.repeat(age0, n_visits) + np.nan_to_num(gap) / 8766  # roughly consistent ages
    capped = np.repeat(capped0, n_visits)
    last = np.r_[subject[1:] != subject[:-1], True]
    visits = pd.DataFrame({
        "subject_id": subject, "hadm_id": 9_000 + np.arange(n), "icustay_id": 70_000 + np.arange(n) * 7,
        "visit_index": visit_index, "intime": pd.NaT, "outtime": pd.NaT, "los_hours": los,
        "hours_since_previous_visit": gap, "age_years": np.where(capped, 90.0, age), "age_is_capped": capped,
        "gender": rng.choice(["M", "F"], n), "ethnicity_group": rng.choice(["WHITE", "BLACK", "ASIAN", "UNKNOWN"], n),
        "insurance": rng.choice(["Medicare", "Private"], n), "admission_type": rng.choice(["EMERGENCY", "ELECTIVE"], n),
        "first_careunit": rng.choice(["MICU", "SICU", "CCU"], n),
        "mortality_inhospital": (last & (rng.random(n) < .3)).astype(int),
    })
    visits = visits.sample(frac=1, random_state=seed).reset_index(drop=True)  # order must not matter
    code_rows = []
    for v in visits.itertuples():
        for code_type, pool in CODES.items():
            picks = rng.choice(pool, rng.integers(0, 5), replace=False)
            for seq, code in enumerate(picks, start=1):
                code_rows.append((v.subject_id, v.icustay_id, code_type, str(code), seq))
    codes = pd.DataFrame(code_rows, columns=["subject_id", "icustay_id", "code_type", "icd9_code", "seq_num"])
    meas_rows = []
    for v in visits.itertuples():
        for variable, kind in zip(SEED_VARIABLES["variable"], SEED_VARIABLES["kind"]):
            for _ in range(int(rng.integers(0, 3))):
                hours = float(rng.uniform(-4, v.los_hours))
                if kind == "categorical":
                    lo, hi = CATEGORY_RANGE[variable]
                    score = int(rng.integers(lo, hi + 1))
                    text = str(score)
                    if variable == "gcs_verbal_response" and score == 1 and rng.random() < .5:
                        text = "ET/Trach"
                    meas_rows.append((v.subject_id, v.icustay_id, hours, variable, float(score), text))
                else:
                    low = SEED_VARIABLES.set_index("variable").loc[variable, "valid_low"]
                    value = float(low + rng.uniform(.1, 3.0))
                    meas_rows.append((v.subject_id, v.icustay_id, hours, variable, value, None))
    measurements = pd.DataFrame(meas_rows, columns=["subject_id", "icustay_id", "hours", "variable", "value",
                                                    "value_text"])
    phenotypes = pd.DataFrame({"subject_id": visits["subject_id"][:3], "icustay_id": visits["icustay_id"][:3],
                               "phenotype": "Septicemia (except in labor)"})
    return StagedCohort(visits, codes, phenotypes, measurements)


@pytest.fixture(scope="module")
def cohort() -> StagedCohort:
    return make_cohort()


@pytest.fixture(scope="module")
def tables(cohort) -> dict[str, pd.DataFrame]:
    return cohort_to_mimic_tables(cohort, seed=1)


@pytest.fixture(scope="module")
def links(cohort, tables) -> pd.DataFrame:
    """Input visit -> decoded ids and times (visits and ICU stays are written in the same order)."""
    visits = cohort.visits.sort_values(["subject_id", "visit_index"]).reset_index(drop=True)
    stays = tables["ICUSTAYS"].reset_index(drop=True)
    return pd.concat([visits, stays[["subject_id", "hadm_id", "icustay_id", "intime", "outtime"]]
                      .add_prefix("new_")], axis=1)


def _secs(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype="datetime64[s]").astype(np.int64)


def test_tables_have_mimic_columns_and_fresh_ids(tables, cohort):
    for name, frame in tables.items():
        assert list(frame.columns) == table_columns(name), name
    assert tables["PATIENTS"]["subject_id"].min() == 1_000_000
    assert len(tables["PATIENTS"]) == cohort.visits["subject_id"].nunique()
    assert len(tables["ICUSTAYS"]) == len(tables["ADMISSIONS"]) == len(cohort.visits)
    old = set(cohort.visits["icustay_id"]) | set(cohort.visits["hadm_id"]) | set(cohort.visits["subject_id"])
    for table, column in (("ICUSTAYS", "icustay_id"), ("ADMISSIONS", "hadm_id"), ("PATIENTS", "subject_id")):
        assert tables[table][column].is_unique
        assert not set(tables[table][column]) & old


def test_ids_are_consistent_across_tables(tables):
    patients = set(tables["PATIENTS"]["subject_id"])
    adm = tables["ADMISSIONS"].set_index("hadm_id")["subject_id"]
    stays = tables["ICUSTAYS"].set_index("icustay_id")
    assert set(adm) == patients
    assert (stays["subject_id"] == stays["hadm_id"].map(adm)).all()
    chart = tables["CHARTEVENTS"]
    assert (chart["hadm_id"].to_numpy() == chart["icustay_id"].map(stays["hadm_id"]).to_numpy()).all()
    assert (chart["subject_id"].to_numpy() == chart["icustay_id"].map(stays["subject_id"]).to_numpy()).all()
    for table in ("LABEVENTS", "DIAGNOSES_ICD", "PROCEDURES_ICD"):
        frame = tables[table]
        assert (frame["subject_id"].to_numpy() == frame["hadm_id"].map(adm).to_numpy()).all(), table
    assert "icustay_id" not in tables["LABEVENTS"].columns


def test_intime_order_gaps_and_los_follow_the_cohort(links):
    intime, outtime = _secs(links["new_intime"]), _secs(links["new_outtime"])
    assert np.allclose((outtime - intime) / 3600, links["los_hours"], atol=1 / 3600)
    same = links["subject_id"].to_numpy()[1:] == links["subject_id"].to_numpy()[:-1]
    gaps = (intime[1:] - outtime[:-1])[same] / 3600
    assert np.allclose(gaps, links["hours_since_previous_visit"].to_numpy()[1:][same], atol=2 / 3600)
    assert (intime[1:][same] > intime[:-1][same]).all()
    years = links["new_intime"].dt.year
    assert years.between(2100, 2200).all()


def test_admissions_wrap_stays_without_overlap(tables):
    stays = tables["ICUSTAYS"].merge(tables["ADMISSIONS"], on=["subject_id", "hadm_id"])
    assert (stays["admittime"] <= stays["intime"]).all() and (stays["outtime"] <= stays["dischtime"]).all()
    adm = tables["ADMISSIONS"].sort_values(["subject_id", "admittime"])
    prev = adm.groupby("subject_id")["dischtime"].shift()
    assert (adm["admittime"][prev.notna()] >= prev.dropna()).all()


def test_ages_are_recovered_from_dob(links, tables):
    dob = tables["PATIENTS"].set_index("subject_id")["dob"]
    age = (_secs(links["new_intime"]) - _secs(links["new_subject_id"].map(dob))) / YEAR_S
    first = links["visit_index"] == 0
    plain = first & ~links["age_is_capped"]
    assert np.abs(age[plain] - links.loc[plain, "age_years"]).max() < 1.01 / 365.2425
    capped = links["age_is_capped"].to_numpy()
    assert (age[capped] >= 299).all() and (age[capped] < 302).all()  # MIMIC's > 89 shift
    assert (tables["PATIENTS"]["dob"].dt.normalize() == tables["PATIENTS"]["dob"]).all()


def test_mortality_sets_deathtime_and_dod(links, tables):
    adm = tables["ADMISSIONS"].set_index("hadm_id")
    died = links["mortality_inhospital"].to_numpy() == 1
    flags = adm.loc[links["new_hadm_id"], "hospital_expire_flag"].to_numpy()
    assert (flags == died).all()
    assert adm.loc[links["new_hadm_id"][died], "deathtime"].notna().all()
    assert adm.loc[links["new_hadm_id"][~died], "deathtime"].isna().all()
    dead_subjects = set(links.loc[died, "new_subject_id"])
    patients = tables["PATIENTS"].set_index("subject_id")
    assert (patients["expire_flag"] == patients.index.isin(dead_subjects)).all()
    assert patients.loc[list(dead_subjects), "dod"].notna().all()


def test_codes_are_preserved_as_strings(cohort, links, tables):
    new_hadm = links.set_index("icustay_id")["new_hadm_id"]
    for code_type, table in (("diagnosis", "DIAGNOSES_ICD"), ("procedure", "PROCEDURES_ICD")):
        src = cohort.visit_codes[cohort.visit_codes["code_type"] == code_type]
        expected = sorted(zip(src["icustay_id"].map(new_hadm), src["icd9_code"], src["seq_num"]))
        got = sorted(zip(tables[table]["hadm_id"], tables[table]["icd9_code"], tables[table]["seq_num"]))
        assert got == expected, table
    assert {"0066", "0040", "0131"} <= set(tables["PROCEDURES_ICD"]["icd9_code"])


def test_measurements_are_all_written_once(cohort, tables, links):
    m = cohort.measurements
    chart, lab = tables["CHARTEVENTS"], tables["LABEVENTS"]
    assert len(chart) + len(lab) == len(m)
    item_to_var = {item.itemid: var for var, item in CANONICAL_ITEMS.items()}
    written = pd.concat([chart["itemid"], lab["itemid"]]).map(item_to_var).value_counts().sort_index()
    assert written.equals(m["variable"].value_counts().sort_index().rename_axis(written.index.name).rename(written.name))
    # every chart row sits at intime + hours of its visit
    intime = links.set_index("new_icustay_id")["new_intime"]
    hours = (_secs(chart["charttime"]) - _secs(chart["icustay_id"].map(intime))) / 3600
    src = m[m["variable"].map(lambda v: CANONICAL_ITEMS[v].table == "chartevents")]
    assert np.allclose(np.sort(hours), np.sort(src["hours"].to_numpy()), atol=1 / 3600)


def test_values_parse_back(cohort, tables):
    m = cohort.measurements
    chart, lab = tables["CHARTEVENTS"], tables["LABEVENTS"]
    scores = text_to_score()
    # categorical: the text written parses back to the original score
    for variable in CATEGORY_RANGE:
        item = CANONICAL_ITEMS[variable]
        rows = chart[chart["itemid"] == item.itemid]
        src = np.sort(m.loc[m["variable"] == variable, "value"].to_numpy())
        if item.text_map:
            assert set(rows["value"]) <= set(TEXT_MAPS[item.text_map].values())
            parsed = np.sort(rows["value"].map(lambda t: scores[(variable, t)]).to_numpy(dtype=float))
        else:
            parsed = np.sort(rows["valuenum"].to_numpy(dtype=float))
        assert np.array_equal(parsed, src), variable
    verbal = chart[chart["itemid"] == CANONICAL_ITEMS["gcs_verbal_response"].itemid]
    ett_in = (m["value_text"] == "ET/Trach").sum()
    assert (verbal["value"] == "No Response-ETT").sum() == ett_in > 0
    # continuous: canonical unit, rounded like MIMIC
    for variable in ("heart_rate", "temperature", "creatinine", "ph", "fraction_inspired_oxygen", "inr"):
        item = CANONICAL_ITEMS[variable]
        rows = (lab if item.table == "labevents" else chart)
        got = np.sort(rows.loc[rows["itemid"] == item.itemid, "valuenum"].to_numpy(dtype=float))
        src = np.sort(m.loc[m["variable"] == variable, "value"].to_numpy())
        assert np.allclose(got, src, atol=0.5 * 10.0 ** -item.decimals + 1e-9), variable
        assert rows.loc[rows["itemid"] == item.itemid, "value"].notna().all()


def test_same_seed_same_tables_and_other_start_id(cohort, tables):
    again = cohort_to_mimic_tables(cohort, seed=1)
    for name in tables:
        pd.testing.assert_frame_equal(again[name], tables[name])
    shifted = cohort_to_mimic_tables(cohort, seed=1, start_subject_id=5)
    assert shifted["PATIENTS"]["subject_id"].min() == 5


def _read(path: Path) -> str:
    raw = path.read_bytes()
    return gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()


@pytest.mark.parametrize("header_case,compress", [("lower", True), ("upper", False)])
def test_written_files_read_back(tmp_path, tables, header_case, compress):
    paths = write_mimic_tables(tables, tmp_path, header_case=header_case, compress=compress)
    assert set(paths) == set(tables)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for name, path in paths.items():
        text = _read(path)
        header = text.split("\n", 1)[0]
        names = table_columns(name)
        assert header == (",".join(f'"{n.upper()}"' for n in names) if header_case == "upper" else ",".join(names))
        back = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        assert len(back) == len(tables[name]), name
    procedures = _read(paths["PROCEDURES_ICD"])
    assert ("\"0066\"" if header_case == "upper" else ",0066\n") in procedures
    back = pd.read_csv(io.StringIO(procedures), dtype=str)
    back.columns = [c.lower() for c in back.columns]
    assert sorted(back["icd9_code"]) == sorted(tables["PROCEDURES_ICD"]["icd9_code"])
    adm = pd.read_csv(io.StringIO(_read(paths["ADMISSIONS"])), dtype=str)
    adm.columns = [c.lower() for c in adm.columns]
    assert pd.to_datetime(adm["admittime"], format="%Y-%m-%d %H:%M:%S").notna().all()


def test_failed_write_leaves_nothing(tmp_path, tables):
    broken = dict(tables)
    broken["LABEVENTS"] = tables["LABEVENTS"].assign(valuenum="not a number")
    with pytest.raises(ValueError, match="LABEVENTS.valuenum"):
        write_mimic_tables(broken, tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="columns"):
        write_mimic_tables({"PATIENTS": tables["PATIENTS"].iloc[:, 1:]}, tmp_path)


def test_bad_cohorts_raise_clear_errors(cohort):
    bad = StagedCohort(cohort.visits, cohort.visit_codes, cohort.visit_phenotypes,
                       cohort.measurements.assign(variable="heart_rhythm"))
    with pytest.raises(ValueError, match="heart_rhythm"):
        cohort_to_mimic_tables(bad)
    int_codes = cohort.visit_codes.assign(icd9_code=66)
    with pytest.raises(ValueError, match="icd9_code"):
        cohort_to_mimic_tables(StagedCohort(cohort.visits, int_codes, cohort.visit_phenotypes, cohort.measurements))
    eye = cohort.measurements.copy()
    eye.loc[eye["variable"] == "gcs_eye_opening", "value"] = 9.0
    eye.loc[eye["variable"] == "gcs_eye_opening", "value_text"] = "wide awake"
    with pytest.raises(ValueError, match="gcs_eye_opening"):
        cohort_to_mimic_tables(StagedCohort(cohort.visits, cohort.visit_codes, cohort.visit_phenotypes, eye))
    with pytest.raises(ValueError, match="lacks column"):
        cohort_to_mimic_tables(StagedCohort(cohort.visits.drop(columns="los_hours"), cohort.visit_codes,
                                            cohort.visit_phenotypes, cohort.measurements))


def test_category_text_alone_is_enough(cohort):
    m = cohort.measurements.copy()
    gcs = m["variable"] == "gcs_motor_response"
    m.loc[gcs, "value_text"] = m.loc[gcs, "value"].map(lambda s: TEXT_MAPS["gcs_motor_mv"][int(s)])
    m.loc[gcs, "value"] = np.nan
    out = cohort_to_mimic_tables(StagedCohort(cohort.visits, cohort.visit_codes, cohort.visit_phenotypes, m))
    rows = out["CHARTEVENTS"][out["CHARTEVENTS"]["itemid"] == 223901]
    assert np.array_equal(np.sort(rows["valuenum"].to_numpy()), np.sort(cohort.measurements.loc[gcs, "value"]))


def test_dictionaries_cover_every_code(tables):
    for d_table, table in (("D_ICD_DIAGNOSES", "DIAGNOSES_ICD"), ("D_ICD_PROCEDURES", "PROCEDURES_ICD")):
        assert set(tables[table]["icd9_code"]) <= set(tables[d_table]["icd9_code"])
    items = set(tables["D_ITEMS"]["itemid"]) | set(tables["D_LABITEMS"]["itemid"])
    assert set(tables["CHARTEVENTS"]["itemid"]) | set(tables["LABEVENTS"]["itemid"]) <= items
