"""The staging checks without dbt: the loss checks on audit counts, the structural scan and the
raw-file change detection (the battery with real staging runs is tests/test_bad_inputs.py)."""

from __future__ import annotations

import pytest


def test_a_raw_file_that_changes_while_staging_reads_it_is_named(tmp_path):
    """The staging asset compares each raw file's size and mtime before and after `dbt build`, and
    fails without publishing when one changed (a MIMIC_DIR being copied into during the run)."""
    from synehrgy_assets.core.staging_build import changed_files, file_stats, source_fingerprint

    files = {t: tmp_path / f"{t.upper()}.csv.gz" for t in ("patients", "icustays")}
    for path in files.values():
        path.write_bytes(b"x")
    before, fingerprint = file_stats(files), source_fingerprint(files)
    assert changed_files(before, files) == []
    files["icustays"].write_bytes(b"xy")
    assert changed_files(before, files) == [str(files["icustays"])]
    assert source_fingerprint(files) != fingerprint
    files["patients"].unlink()
    assert str(files["patients"]) in changed_files(before, files)


@pytest.mark.parametrize("name", ["stays_dropped_for_bad_data", "measurement_values_dropped", "valuenum_not_numeric",
                                  "measurement_rows_of_unknown_stays", "code_rows_dropped"])
def test_every_loss_check_passes_warns_and_errors(name):
    """Each loss check on audit counts: clean passes, a small loss warns, a large one is an error (by
    rows or by patients), with the default thresholds."""
    from synehrgy_assets.core.staging_checks import LOSS_DEFAULTS, evaluate_loss

    def audit(rows_lost: int, patients_lost: int) -> dict:
        a = {("icustays", "", "raw"): 1000, ("icustays", "", "patients_raw"): 1000,
             ("icustays", "", "dropped_dob_unparseable"): rows_lost,
             ("icustays", "", "patients_dropped_bad_data"): patients_lost,
             ("measurements", "heart_rate", "candidate"): 1000,
             ("measurements", "heart_rate", "dropped_unparseable"): rows_lost,
             ("measurements", "", "patients_with_candidates"): 1000,
             ("measurements", "", "patients_dropped_unparseable_or_out_of_range"): patients_lost,
             ("measurements", "", "valuenum_not_numeric"): rows_lost,
             ("measurements", "", "patients_valuenum_not_numeric"): patients_lost,
             ("measurements", "", "rows_of_unknown_stay"): rows_lost,
             ("measurements", "", "patients_with_rows_of_unknown_stay"): patients_lost,
             ("codes", "diagnosis", "raw"): 600, ("codes", "procedure", "raw"): 400,
             ("codes", "diagnosis", "dropped_null_code"): rows_lost,
             ("codes", "", "patients_raw"): 1000, ("codes", "", "patients_dropped"): patients_lost}
        return a

    t = LOSS_DEFAULTS[name]
    assert evaluate_loss(name, audit(0, 0), t).severity == "PASS"
    small = max(int(t.warn_row_share * 1000) + 1, 1)
    r = evaluate_loss(name, audit(small, 1), t)
    assert r.severity == "WARN" and r.rows_lost == small and f"{small:,} of 1,000 rows" in r.message()
    assert evaluate_loss(name, audit(int(t.error_row_share * 1000), 1), t).severity == "ERROR"
    assert evaluate_loss(name, audit(small, int(t.error_patient_share * 1000)), t).severity == "ERROR"


def test_check_structure_names_file_line_and_ids(tmp_path):
    """The structural scan alone (no dbt): repeated header, duplicate keys, bad bytes; a clean file passes."""
    from synehrgy_assets.core.staging_checks import MimicStructureError, check_structure

    good = tmp_path / "ICUSTAYS.csv"
    good.write_text("icustay_id,x\n1,a\n2,b\n")
    check_structure({"icustays": good})
    bad = tmp_path / "PATIENTS.csv"
    bad.write_text("SUBJECT_ID,X\n1,a\n2,b\nSUBJECT_ID,X\n2,c\n")
    with pytest.raises(MimicStructureError) as err:
        check_structure({"patients": bad, "icustays": good})
    text = str(err.value)
    assert f"{bad}: the header line is repeated inside the file at line(s) 4" in text
    assert "1 duplicated SUBJECT_ID value(s), expected each once: 2 (2 rows, lines 3, 5)" in text
    latin = tmp_path / "ADMISSIONS.csv"
    latin.write_bytes(b"hadm_id,insurance\n1,Medicare\n2,M\xe9dicaid\n")
    with pytest.raises(MimicStructureError, match=r"ADMISSIONS.csv: cannot be read as UTF-8 CSV: line 3: Invalid unicode"):
        check_structure({"admissions": latin})


def test_a_non_finite_value_always_warns():
    """One infinite value among 1,000 is under every share threshold, yet a WARN naming it."""
    from synehrgy_assets.core.staging_checks import LOSS_DEFAULTS, evaluate_loss

    audit = {("measurements", "heart_rate", "candidate"): 100_000, ("measurements", "", "patients_with_candidates"): 100,
             ("measurements", "heart_rate", "dropped_not_finite"): 1,
             ("measurements", "", "patients_dropped_unparseable_or_out_of_range"): 1}
    r = evaluate_loss("measurement_values_dropped", audit, LOSS_DEFAULTS["measurement_values_dropped"])
    assert r.severity == "WARN" and r.details["dropped_not_finite"] == 1
    assert "dropped_not_finite 1" in r.message()
