"""The built-in synthetic hospital: layout, determinism and the structure worth learning."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core import mimic_dictionaries as md
from synehrgy_assets.core import mimic_tables as mt
from synehrgy_assets.core import synthetic_hospital as sh
from synehrgy_assets.core.mimic_tables import HOSPITAL_TABLES, table_columns
from synehrgy_assets.core.synthetic_hospital import HospitalConfig, generate_hospital

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = Path(os.environ.get("SYNEHRGY_MIMIC_DEMO_DIR", REPO_ROOT.parent / "shared" / "data" / "mimic-iii-demo"))
VARIABLES_CSV = REPO_ROOT / "dbt_mimic" / "seeds" / "variables.csv"

# The real MIMIC-III strings (CareVue and MetaVision) for the GCS and capillary refill items,
# written out here independently of the module under test.
REAL_TEXT = {
    220739: {"Spontaneously", "To Speech", "To Pain", "None"},
    223901: {"Obeys Commands", "Localizes Pain", "Flex-withdraws", "Abnormal Flexion",
             "Abnormal extension", "No response"},
    223900: {"Oriented", "Confused", "Inappropriate Words", "Incomprehensible sounds", "No Response",
             "No Response-ETT"},
    184: {"4 Spontaneously", "3 To speech", "2 To pain", "1 No Response"},
    454: {"6 Obeys Commands", "5 Localizes Pain", "4 Flex-withdraws", "3 Abnorm flexion",
          "2 Abnorm extensn", "1 No Response"},
    723: {"5 Oriented", "4 Confused", "3 Inapprop words", "2 Incomp sounds", "1 No Response", "1.0 ET/Trach"},
    3348: {"Normal <3 secs", "Abnormal >3 secs"},
    115: {"Normal <3 secs", "Abnormal >3 secs"},
    8377: {"Normal <3 secs", "Abnormal >3 secs"},
    223951: {"Normal <3 Seconds", "Abnormal >3 Seconds"},
}


def _path(directory: Path, table: str) -> Path:
    for name in (f"{table}.csv.gz", f"{table}.csv"):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"{directory} has no {table}.csv(.gz)")


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()


def read_table(directory: Path, table: str) -> pd.DataFrame:
    """A table with every field as a string (empty field -> NaN), lowercase column names."""
    frame = pd.read_csv(io.StringIO(_text(_path(directory, table))), dtype=str,
                        keep_default_na=False, na_values=[""])
    frame.columns = [c.lower() for c in frame.columns]
    return frame


def _ts(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, format="%Y-%m-%d %H:%M:%S").astype("datetime64[s]")


@pytest.fixture(scope="module")
def small_lower(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hospital_lower")
    generate_hospital(out, HospitalConfig(n_patients=60, seed=11))
    return out


@pytest.fixture(scope="module")
def small_upper(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hospital_upper")
    generate_hospital(out, HospitalConfig(n_patients=60, seed=11, header_case="upper", compress=False))
    return out


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> tuple[Path, dict[str, pd.DataFrame]]:
    """2,000 patients at a low charting density: big enough for rates, still fast."""
    out = tmp_path_factory.mktemp("hospital_large")
    summary = generate_hospital(out, HospitalConfig(n_patients=2000, seed=3, chart_rows_per_stay_hour=1.5))
    assert summary.n_patients == 2000
    tables = {t: read_table(out, t) for t in ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "DIAGNOSES_ICD",
                                               "PROCEDURES_ICD", "CHARTEVENTS", "LABEVENTS")}
    return out, tables


def _ages_at_intime(tables) -> pd.DataFrame:
    stays = tables["ICUSTAYS"].merge(tables["PATIENTS"][["subject_id", "dob"]], on="subject_id")
    stays["age"] = (_ts(stays["intime"]) - _ts(stays["dob"])).dt.total_seconds() / (365.2425 * 86400)
    return stays


# --- layout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["small_lower", "small_upper"])
def test_every_table_is_written_with_its_header(layout, request):
    directory = request.getfixturevalue(layout)
    upper = layout == "small_upper"
    for table in HOSPITAL_TABLES:
        path = _path(directory, table)
        assert path.name == (f"{table}.csv" if upper else f"{table}.csv.gz")
        header = _text(path).split("\n", 1)[0]
        names = table_columns(table)
        expected = ",".join(f'"{n.upper()}"' for n in names) if upper else ",".join(names)
        assert header == expected, table
        assert len(read_table(directory, table)) > 0, table


@pytest.mark.demo
def test_headers_match_the_mimic_demo(small_lower, small_upper):
    if not DEMO_DIR.is_dir():
        pytest.skip(f"MIMIC-III demo not found at {DEMO_DIR} (set SYNEHRGY_MIMIC_DEMO_DIR)")
    for table in HOSPITAL_TABLES:
        with gzip.open(DEMO_DIR / f"{table}.csv.gz", "rt") as fh:
            demo = fh.readline().strip().replace('"', "").lower().split(",")
        for directory in (small_lower, small_upper):
            ours = _text(_path(directory, table)).split("\n", 1)[0].replace('"', "").lower().split(",")
            assert ours == demo, f"{table} header differs from the demo"


def test_upper_layout_quotes_strings_not_numbers(small_upper):
    lines = _text(_path(small_upper, "DIAGNOSES_ICD")).splitlines()[1:6]
    for line in lines:
        row_id, subject, hadm, seq, code = line.split(",")
        assert row_id.isdigit() and subject.isdigit() and hadm.isdigit() and seq.isdigit()
        assert re.fullmatch(r'"[0-9VE]\d+"', code), line
    chart = _text(_path(small_upper, "CHARTEVENTS")).splitlines()[1]
    fields = chart.split(",")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", fields[5])  # timestamps unquoted
    assert fields[8].startswith('"') and fields[8].endswith('"')  # value is a string column


def test_lower_layout_quotes_only_where_needed(small_lower, large):
    body = _text(_path(large[0], "CHARTEVENTS"))
    assert '"Gluteal, Left"' in body or '"Gluteal, Right"' in body
    assert '"Spontaneously"' not in body and ",Spontaneously," in body
    frame = large[1]["CHARTEVENTS"]
    assert frame["value"].str.contains(",", regex=False).any()  # read back as one field


def test_same_seed_gives_byte_identical_files(tmp_path, small_lower):
    again = tmp_path / "again"
    generate_hospital(again, HospitalConfig(n_patients=60, seed=11))
    for table in HOSPITAL_TABLES:
        assert (again / f"{table}.csv.gz").read_bytes() == (small_lower / f"{table}.csv.gz").read_bytes(), table
    other = tmp_path / "other"
    generate_hospital(other, HospitalConfig(n_patients=60, seed=12))
    assert (other / "CHARTEVENTS.csv.gz").read_bytes() != (small_lower / "CHARTEVENTS.csv.gz").read_bytes()


# The digest of a fixed draw (300 patients, seed 3, plain CSV, chunks of 120): it pins the hospital's
# output, so a refactoring that changes a single draw or its order fails here. Change it only with a
# change of the model that is meant to change the rows.
PINNED_DRAW_SHA256 = "ce44f8529b2585776d7dd475df529e275365af550c169eb2b767598aabaffd13"


def test_a_fixed_seed_writes_the_pinned_bytes(tmp_path):
    generate_hospital(tmp_path, HospitalConfig(n_patients=300, seed=3, compress=False, chunk_patients=120))
    digest = hashlib.sha256()
    for path in sorted(tmp_path.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    assert digest.hexdigest() == PINNED_DRAW_SHA256


def test_gzip_and_plain_layouts_hold_the_same_rows(small_lower, small_upper):
    for table in ("ADMISSIONS", "CHARTEVENTS", "DIAGNOSES_ICD"):
        pd.testing.assert_frame_equal(read_table(small_lower, table), read_table(small_upper, table))


# --- codes -------------------------------------------------------------------------------------

def test_procedure_codes_keep_leading_zeros(large):
    directory, tables = large
    raw = _text(_path(directory, "PROCEDURES_ICD"))
    zero_led = re.findall(r",(0\d{2,3})\n", raw)
    assert zero_led, "no procedure code with a leading zero in the file"
    codes = tables["PROCEDURES_ICD"]["icd9_code"]
    assert set(zero_led) <= set(codes)
    dictionary = set(read_table(directory, "D_ICD_PROCEDURES")["icd9_code"])
    assert set(codes.dropna()) <= dictionary
    assert {"0066", "0040", "9604", "3893", "9671"} & set(codes) == {"0066", "0040", "9604", "3893", "9671"}


def test_diagnosis_codes_are_real_icd9_strings_that_co_occur(large):
    _, tables = large
    dx = tables["DIAGNOSES_ICD"].dropna(subset=["icd9_code"])
    assert dx["icd9_code"].str.fullmatch(r"(\d{3,5}|V\d{2,4}|E\d{3,4})").all()
    assert {"4280", "0389", "5849", "25000", "V4581", "E8788"} <= set(dx["icd9_code"])
    by_adm = dx.groupby("hadm_id")["icd9_code"].apply(set)
    sepsis = by_adm.map(lambda s: "0389" in s)
    renal = by_adm.map(lambda s: "5849" in s)
    # comorbidity clusters: acute renal failure is much more common with septicemia
    assert renal[sepsis].mean() > 1.5 * renal[~sepsis].mean()
    seq = tables["DIAGNOSES_ICD"].groupby("hadm_id")["seq_num"].apply(lambda s: sorted(s.astype(int)))
    assert all(s == list(range(1, len(s) + 1)) for s in seq)


@pytest.mark.demo
def test_builtin_codes_exist_in_the_demo_dictionary():
    if not DEMO_DIR.is_dir():
        pytest.skip(f"MIMIC-III demo not found at {DEMO_DIR}")
    dx = set(pd.read_csv(DEMO_DIR / "D_ICD_DIAGNOSES.csv.gz", dtype=str)["icd9_code"])
    px = set(pd.read_csv(DEMO_DIR / "D_ICD_PROCEDURES.csv.gz", dtype=str)["icd9_code"])
    assert set(md.BUILTIN_DIAGNOSES) - dx <= md.NOT_IN_DICTIONARY
    assert set(md.BUILTIN_PROCEDURES) <= px


@pytest.mark.demo
def test_code_dictionary_dir_widens_the_code_universe(tmp_path):
    if not DEMO_DIR.is_dir():
        pytest.skip(f"MIMIC-III demo not found at {DEMO_DIR}")
    generate_hospital(tmp_path, HospitalConfig(n_patients=300, seed=5, chart_rows_per_stay_hour=.5,
                                               code_dictionary_dir=DEMO_DIR))
    d_icd = read_table(tmp_path, "D_ICD_DIAGNOSES")
    assert len(d_icd) > 10_000
    used = set(read_table(tmp_path, "DIAGNOSES_ICD")["icd9_code"].dropna())
    assert used - set(d_icd["icd9_code"]) <= md.NOT_IN_DICTIONARY
    assert len(used - set(md.BUILTIN_DIAGNOSES)) > 20  # long tail drawn from the dictionary


# --- structure ---------------------------------------------------------------------------------

def test_patients_have_several_admissions_and_stays(large):
    _, tables = large
    stays = tables["ICUSTAYS"]
    per_patient = stays.groupby("subject_id").size()
    share = (per_patient >= 2).mean()
    assert 0.08 <= share <= 0.30, share
    assert (stays.groupby("hadm_id").size() >= 2).sum() > 10  # some admissions hold two stays
    assert (tables["ADMISSIONS"]["has_chartevents_data"] == "0").any()  # and some none
    transfers = (stays["first_careunit"] != stays["last_careunit"]) | (stays["first_wardid"] != stays["last_wardid"])
    assert 0 < transfers.mean() < 0.15


def test_times_are_consistent(large):
    _, tables = large
    stays = tables["ICUSTAYS"].merge(tables["ADMISSIONS"], on=["subject_id", "hadm_id"])
    intime, outtime = _ts(stays["intime"]), _ts(stays["outtime"])
    assert (intime >= _ts(stays["admittime"])).all()
    assert (outtime <= _ts(stays["dischtime"])).all()
    los_h = (outtime - intime).dt.total_seconds() / 3600
    assert los_h.min() >= 12 - 1e-6 and los_h.max() <= 240 + 1e-6
    assert np.allclose(stays["los"].astype(float), los_h / 24, atol=1e-4)
    years = intime.dt.year
    assert years.between(2100, 2210).all()
    adm = tables["ADMISSIONS"].assign(a=lambda f: _ts(f["admittime"]), d=lambda f: _ts(f["dischtime"]))
    adm = adm.sort_values(["subject_id", "a"])
    prev_disch = adm.groupby("subject_id")["d"].shift()
    assert (adm["a"][prev_disch.notna()] > prev_disch.dropna()).all()  # admissions never overlap
    chart = tables["CHARTEVENTS"].merge(tables["ICUSTAYS"][["icustay_id", "intime", "outtime"]], on="icustay_id")
    ct = _ts(chart["charttime"])
    assert ((ct >= _ts(chart["intime"])) & (ct <= _ts(chart["outtime"]))).all()


def test_ages_include_adults_shifted_elderly_and_a_few_minors(large):
    _, tables = large
    age = _ages_at_intime(tables)["age"]
    assert 0.002 < (age < 18).mean() < 0.04
    elderly = (age >= 299).mean()
    assert 0.03 < elderly < 0.08
    adults = age[(age >= 18) & (age < 299)]
    assert adults.max() < 91 and 55 < adults.mean() < 70
    dob = tables["PATIENTS"]["dob"]
    assert dob.str.endswith("00:00:00").all()


def test_mortality_rate_and_its_drivers(large):
    _, tables = large
    adm = tables["ADMISSIONS"]
    died = adm["hospital_expire_flag"].astype(int)
    assert 0.06 <= died.mean() <= 0.15, died.mean()
    assert (adm["deathtime"].notna() == (died == 1)).all()
    assert (adm.loc[died == 1, "discharge_location"] == "DEAD/EXPIRED").all()
    dead_patients = set(adm.loc[died == 1, "subject_id"])
    patients = tables["PATIENTS"].set_index("subject_id")
    assert patients.loc[list(dead_patients), "dod"].notna().all()
    assert (patients.loc[list(dead_patients), "expire_flag"] == "1").all()
    # older patients die more often
    ages = adm.merge(tables["PATIENTS"][["subject_id", "dob"]], on="subject_id")
    age = (_ts(ages["admittime"]) - _ts(ages["dob"])).dt.total_seconds() / (365.2425 * 86400)
    dflag = ages["hospital_expire_flag"].astype(int)
    assert dflag[age >= 75].mean() > 1.5 * dflag[(age >= 18) & (age < 50)].mean()
    # sicker admissions (high lactate, septic shock codes) die more often
    labs = tables["LABEVENTS"]
    lactate = labs[labs["itemid"] == "50813"].assign(v=lambda f: f["valuenum"].astype(float))
    peak = lactate.groupby("hadm_id")["v"].max()
    rate = adm.set_index("hadm_id")["hospital_expire_flag"].astype(int)
    assert rate[peak[peak > 4].index].mean() > 2 * rate[peak[peak < 2].index].mean()
    shock = set(tables["DIAGNOSES_ICD"].query("icd9_code == '78552'")["hadm_id"])
    assert rate[rate.index.isin(shock)].mean() > 2 * rate[~rate.index.isin(shock)].mean()


def test_latent_severity_moves_vitals_together(large):
    _, tables = large
    chart = tables["CHARTEVENTS"]
    chart = chart[chart["error"].fillna("0") == "0"].assign(v=lambda f: pd.to_numeric(f["valuenum"]))
    def per_stay(items, low, high):
        part = chart[chart["itemid"].isin(items) & chart["v"].between(low, high)]
        return part.groupby("icustay_id")["v"].mean()
    hr = per_stay(["211", "220045"], 20, 250)
    mbp = per_stay(["52", "456", "220052", "220181"], 20, 200)
    rr = per_stay(["618", "220210"], 2, 80)
    both = pd.concat({"hr": hr, "mbp": mbp, "rr": rr}, axis=1).dropna()
    corr = both.corr()
    assert corr.loc["hr", "mbp"] < -0.2
    assert corr.loc["hr", "rr"] > 0.1
    stays = tables["ICUSTAYS"].merge(tables["ADMISSIONS"][["hadm_id", "hospital_expire_flag"]], on="hadm_id")
    dead = set(stays.loc[stays["hospital_expire_flag"] == "1", "icustay_id"])
    assert hr[hr.index.isin(dead)].mean() > hr[~hr.index.isin(dead)].mean() + 5


# --- events ------------------------------------------------------------------------------------

def test_gcs_and_capillary_refill_use_real_mimic_strings(large):
    _, tables = large
    chart = tables["CHARTEVENTS"]
    for itemid, real in REAL_TEXT.items():
        values = set(chart.loc[chart["itemid"] == str(itemid), "value"])
        assert values, f"no rows for itemid {itemid}"
        assert values <= real, (itemid, values - real)
    cv_eye = chart[chart["itemid"] == "184"]
    assert (cv_eye["value"].str[0] == cv_eye["valuenum"]).all()  # CareVue text leads with the score
    ett = chart[chart["value"] == "No Response-ETT"]
    assert (ett["valuenum"] == "1").all()
    assert chart.loc[chart["itemid"] == "3348", "valuenum"].isna().all()


@pytest.mark.demo
def test_category_strings_match_the_demo():
    if not DEMO_DIR.is_dir():
        pytest.skip(f"MIMIC-III demo not found at {DEMO_DIR}")
    demo = pd.read_csv(DEMO_DIR / "CHARTEVENTS.csv.gz", dtype=str, usecols=["itemid", "value"])
    for itemid in (220739, 223901, 223900, 184, 454, 723, 115, 223951):
        seen = set(demo.loc[demo["itemid"] == str(itemid), "value"].dropna())
        assert seen <= REAL_TEXT[itemid] and seen, itemid
        ours = {text for item in md.ITEMS if item.itemid == itemid for text in md.TEXT_MAPS[item.text_map].values()}
        assert seen <= ours, (itemid, seen - ours)


def test_units_are_the_real_ones(large):
    _, tables = large
    chart = tables["CHARTEVENTS"]
    chart = chart[chart["error"].fillna("0") == "0"]
    med = lambda item: pd.to_numeric(chart.loc[chart["itemid"] == item, "valuenum"]).median()  # noqa: E731
    assert 96 < med("223761") < 101 and 96 < med("678") < 101  # Fahrenheit
    assert 35.5 < med("223762") < 38.5  # Celsius
    assert 21 <= med("223835") <= 100  # FiO2 in percent
    assert 0.21 <= med("189") <= 1  # FiO2 as a fraction
    units = chart.groupby("itemid")["valueuom"].first()
    assert units["223761"] == "?F" and units["220045"] == "bpm"


def test_chartevents_give_staging_work(large):
    _, tables = large
    chart = tables["CHARTEVENTS"]
    stays = tables["ICUSTAYS"].set_index("icustay_id")["dbsource"]
    source = chart["icustay_id"].map(stays)
    mv, cv = chart[source == "metavision"], chart[source == "carevue"]
    assert mv["error"].notna().all() and set(mv["error"]) == {"0", "1"}
    assert 0 < (mv["error"] == "1").mean() < 0.01
    assert cv["error"].isna().all()  # CareVue rows have no error flag, as in MIMIC
    hr = pd.to_numeric(chart.loc[chart["itemid"].isin(["211", "220045"]), "valuenum"])
    assert ((hr > 350) | (hr <= 0)).sum() > 0  # garbage for range filtering
    assert (chart["itemid"] == "220048").any()  # distractor items staging must ignore


def test_labevents_have_no_icustay_and_some_fall_outside_the_stay(large):
    _, tables = large
    labs = tables["LABEVENTS"]
    assert "icustay_id" not in labs.columns
    assert labs["hadm_id"].isna().any()  # outpatient draws
    first_in = tables["ICUSTAYS"].assign(t=lambda f: _ts(f["intime"])).groupby("hadm_id")["t"].min()
    inpatient = labs.dropna(subset=["hadm_id"])
    before = _ts(inpatient["charttime"]) < inpatient["hadm_id"].map(first_in)
    assert 0.02 < before.mean() < 0.5
    assert {"51274", "51237"} <= set(labs["itemid"])  # PT seconds and INR stay separate
    pt = pd.to_numeric(labs.loc[labs["itemid"] == "51274", "valuenum"]).median()
    inr = pd.to_numeric(labs.loc[labs["itemid"] == "51237", "valuenum"]).median()
    assert 10 < pt < 20 and 0.8 < inr < 2
    assert labs["valuenum"].isna().any() and labs["value"].notna().all()  # text-only results
    creat = labs[labs["itemid"] == "50912"]["value"]
    assert creat.str.fullmatch(r"\d+\.\d").mean() > 0.95  # MIMIC keeps one decimal ('1.0')


# seed unit -> the MIMIC unit strings that denote it
UNIT_SPELLINGS = {"degC": {"?C"}, "ng/mL": {"ng/mL", "ng/ml"}, "fraction": {"torr"}, "mmHg": {"mmHg", "mm Hg"}, "bpm": {"bpm"},
                  "breaths/min": {"insp/min"}, "pH": {"units"}, "ratio": {None}, "score": {None, "points"},
                  "category": {None}}
CHARTED = {"heart_rate", "systolic_blood_pressure", "diastolic_blood_pressure", "mean_blood_pressure",
           "arterial_systolic_blood_pressure", "arterial_diastolic_blood_pressure",
           "arterial_mean_blood_pressure",
           "respiratory_rate", "oxygen_saturation", "temperature", "fraction_inspired_oxygen", "weight", "height"}


def test_every_variable_has_a_canonical_item_in_its_canonical_unit():
    md.check_catalogue(VARIABLES_CSV)
    seed = pd.read_csv(VARIABLES_CSV).set_index("variable")
    assert set(seed.index) == set(md.CANONICAL_ITEMS)
    for variable, item in md.CANONICAL_ITEMS.items():
        assert item.scale == 1.0 and item.offset == 0.0, variable  # canonical unit: no conversion
        unit = seed.loc[variable, "unit"]
        assert item.valueuom in UNIT_SPELLINGS.get(unit, {unit}), (variable, unit, item.valueuom)
        charted = variable in CHARTED or seed.loc[variable, "kind"] == "categorical"
        assert item.table == ("chartevents" if charted else "labevents"), variable
    assert md.CANONICAL_ITEMS["prothrombin_time"].itemid == 51274
    assert md.CANONICAL_ITEMS["inr"].itemid == 51237
    by_variable = md.item_catalogue().groupby("variable")["canonical"].sum()
    assert (by_variable == 1).all()  # exactly one canonical ITEMID per variable


# --- knobs, CLI, failure -----------------------------------------------------------------------

def test_density_knob_and_row_target(tmp_path):
    low = generate_hospital(tmp_path / "a", HospitalConfig(n_patients=150, seed=2, chart_rows_per_stay_hour=2))
    high = generate_hospital(tmp_path / "b", HospitalConfig(n_patients=150, seed=2, chart_rows_per_stay_hour=8))
    ratio = high.rows["CHARTEVENTS"] / low.rows["CHARTEVENTS"]
    assert 3.2 < ratio < 4.8
    stays = read_table(tmp_path / "b", "ICUSTAYS")
    per_hour = high.rows["CHARTEVENTS"] / (stays["los"].astype(float).sum() * 24)
    assert 6.5 < per_hour < 9.5
    target = generate_hospital(tmp_path / "c", HospitalConfig(n_patients=150, seed=2, chartevents_rows_target=40_000))
    assert 0.75 * 40_000 < target.rows["CHARTEVENTS"] < 1.25 * 40_000


def test_small_chunks_still_write_unique_ids(tmp_path):
    summary = generate_hospital(tmp_path, HospitalConfig(n_patients=250, seed=4, chunk_patients=100,
                                                         chart_rows_per_stay_hour=1))
    tables = {t: read_table(tmp_path, t) for t in ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "CHARTEVENTS")}
    assert tables["PATIENTS"]["subject_id"].is_unique and len(tables["PATIENTS"]) == 250
    assert tables["ADMISSIONS"]["hadm_id"].is_unique and tables["ICUSTAYS"]["icustay_id"].is_unique
    assert (tables["CHARTEVENTS"]["row_id"].astype(int).diff().dropna() == 1).all()
    assert summary.n_icustays == len(tables["ICUSTAYS"])
    assert set(tables["CHARTEVENTS"]["icustay_id"]) <= set(tables["ICUSTAYS"]["icustay_id"])


def test_cli_writes_the_tables(tmp_path, capsys):
    assert sh.main(["--out", str(tmp_path), "--patients", "25", "--seed", "1", "--upper", "--no-compress"]) == 0
    printed = capsys.readouterr().out
    assert "CHARTEVENTS" in printed and "rows/s" in printed
    assert _text(tmp_path / "PATIENTS.csv").startswith('"ROW_ID","SUBJECT_ID"')


def test_a_failed_run_leaves_the_directory_untouched(tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("x")
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr("synehrgy_assets.core.synthetic_hospital.generate._lab_events", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_hospital(tmp_path, HospitalConfig(n_patients=20))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="header_case"):
        generate_hospital(tmp_path, HospitalConfig(n_patients=5, header_case="title"))
    with pytest.raises(ValueError, match="n_patients"):
        generate_hospital(tmp_path, HospitalConfig(n_patients=0))


def test_writer_rejects_codes_that_are_not_strings(tmp_path):
    frame = pd.DataFrame({"row_id": [1], "subject_id": [2], "hadm_id": [3], "seq_num": [1], "icd9_code": [66]})
    with pytest.raises(ValueError, match="icd9_code"):
        mt.write_frame(tmp_path / "x.csv", "PROCEDURES_ICD", frame)
