"""MEDS 0.4 export of the staged cohort, on a tiny hand-made marts database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import meds
import pytest

from synehrgy_assets.core.meds import MedsExportError, export_meds
from synehrgy_assets.core.meds_checks import check_meds_dir
from tests.helpers.meds_marts import ALL_TABLES, MEASUREMENTS, T0, VISITS, build_marts

@pytest.fixture
def marts(tmp_path) -> Path:
    return build_marts(tmp_path / "warehouse.duckdb")


def export(db: Path, out: Path, **kw):
    with duckdb.connect(str(db), read_only=True) as con:
        return export_meds(con, out, **kw)


def read_data(out: Path) -> tuple[list[Path], pa.Table]:
    shards = sorted((out / "data").glob("*.parquet"))
    return shards, pa.concat_tables([pq.read_table(p) for p in shards])


def test_schemas_are_meds_0_4(marts, tmp_path):
    out = tmp_path / "meds"
    summary = export(marts, out, shard_rows=10)
    shards, _ = read_data(out)
    assert len(shards) == summary.shards > 1
    for p in shards:
        schema = pq.read_schema(p)
        assert schema.names == ["subject_id", "time", "code", "numeric_value", "text_value"]
        assert schema.field("subject_id").type == pa.int64() and not schema.field("subject_id").nullable
        assert schema.field("time").type == pa.timestamp("us") and schema.field("time").type.tz is None
        assert schema.field("code").type == pa.string() and not schema.field("code").nullable
        assert schema.field("numeric_value").type == pa.float32()
        assert schema.field("text_value").type == pa.large_string()
    codes = pq.read_schema(out / "metadata" / "codes.parquet")
    assert codes.names[:3] == ["code", "description", "parent_codes"]
    assert codes.field("description").type == pa.string()
    assert codes.field("parent_codes").type.equals(pa.list_(pa.string()))
    splits = pq.read_schema(out / "metadata" / "subject_splits.parquet")
    assert splits.names == ["subject_id", "split"]
    assert splits.field("subject_id").type == pa.int64() and splits.field("split").type == pa.string()
    meta = json.loads((out / "metadata" / "dataset.json").read_text())
    assert meta["meds_version"] == meds.__version__ and meds.__version__.startswith("0.4.")
    assert meta["dataset_name"] == "MIMIC-III (synehrgy staging)"
    assert {"dataset_version", "etl_name", "etl_version", "created_at"} <= meta.keys()
    datetime.fromisoformat(meta["created_at"])


def test_sorted_and_sharded_by_subject(marts, tmp_path):
    out = tmp_path / "meds"
    summary = export(marts, out, shard_rows=10)
    shards, data = read_data(out)
    sid = data["subject_id"].to_numpy()
    assert np.all(np.diff(sid) >= 0)
    # Within a subject: static (null time) first, then non-decreasing time.
    times = data["time"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    null = data["time"].is_null().to_numpy(zero_copy_only=False)
    key = np.where(null, np.iinfo(np.int64).min, times)
    for s in np.unique(sid):
        assert np.all(np.diff(key[sid == s]) >= 0), f"subject {s} not in time order"
    seen = {}
    for k, p in enumerate(shards):
        t = pq.read_table(p)
        subjects = set(t["subject_id"].to_pylist())
        for s in subjects:
            assert s not in seen, f"subject {s} split across shards {seen[s]} and {k}"
            seen[s] = k
        assert t.num_rows <= 10 or len(subjects) == 1 or t.num_rows < 10 + max(
            int(np.sum(sid == s)) for s in subjects)
    assert summary.events == data.num_rows == sum(summary.events_by_family.values())
    assert summary.subjects == 4
    # One big shard gives the same rows in the same order.
    single = tmp_path / "meds_single"
    export(marts, single)
    _, data1 = read_data(single)
    assert data1.equals(data)


def test_subject_splits_cover_every_subject(marts, tmp_path):
    out = tmp_path / "meds"
    summary = export(marts, out)
    _, data = read_data(out)
    splits = pq.read_table(out / "metadata" / "subject_splits.parquet").to_pydict()
    assert sorted(splits["subject_id"]) == sorted(set(data["subject_id"].to_pylist()))
    assert set(splits["split"]) <= {"train", "tuning", "held_out"}
    assert dict(zip(splits["subject_id"], splits["split"])) == {1: "train", 2: "tuning", 3: "held_out", 4: "train"}
    assert summary.subjects_by_split == {"train": 2, "tuning": 1, "held_out": 1}


def test_codes_metadata_covers_data(marts, tmp_path):
    out = tmp_path / "meds"
    summary = export(marts, out)
    _, data = read_data(out)
    codes = pq.read_table(out / "metadata" / "codes.parquet").to_pydict()
    assert len(codes["code"]) == len(set(codes["code"])) == summary.codes
    assert set(data["code"].to_pylist()) == set(codes["code"])
    meta = {c: (d, p) for c, d, p in zip(codes["code"], codes["description"], codes["parent_codes"])}
    assert all(d for d, _ in meta.values())
    assert meta["ICD9CM//4019"][0].startswith("Unspecified essential hypertension")
    assert meta["ICD9CM//4019"][1] == ["ICD9CM/401.9"]
    assert meta["ICD9CM//E8790"][1] == ["ICD9CM/E879.0"]
    assert meta["ICD9CM//V4581"][1] == ["ICD9CM/V45.81"]
    assert meta["ICD9PROC//0066"][1] == ["ICD9Proc/00.66"]
    assert meta["ICD9PROC//0066"][0].startswith("ICD-9-CM procedure 0066")  # no procedures dictionary
    assert meta["MEASUREMENT//heart_rate"][0] == "Heart rate (bpm)"
    assert "text_value = category" in meta["MEASUREMENT//gcs_eye_opening"][0]
    assert summary.icd_descriptions_from == ["main.stg_mimic__d_icd_diagnoses"]


def test_measurements_preserved(marts, tmp_path):
    out = tmp_path / "meds"
    export(marts, out)
    _, data = read_data(out)
    rows = data.to_pylist()
    got = sorted(
        (r["subject_id"], r["time"], r["code"].removeprefix("MEASUREMENT//"), r["numeric_value"], r["text_value"])
        for r in rows if r["code"].startswith("MEASUREMENT//")
    )
    intime = {v[2]: (v[0], v[4]) for v in VISITS}
    want = sorted(
        (intime[i][0], intime[i][1] + timedelta(hours=h), var, float(np.float32(x)), t)
        for (i, h, var, x, t) in MEASUREMENTS
    )
    assert got == want
    gcs = [r for r in rows if r["code"] == "MEASUREMENT//gcs_verbal_response"]
    assert gcs[0]["numeric_value"] == 1.0 and gcs[0]["text_value"] == "No Response-ETT"


def test_icd_codes_keep_zeros_are_typed_and_once_per_admission(marts, tmp_path):
    out = tmp_path / "meds"
    export(marts, out)
    _, data = read_data(out)
    rows = data.to_pylist()
    p1 = [r for r in rows if r["subject_id"] == 1]
    codes1 = [r["code"] for r in p1]
    assert "ICD9PROC//0066" in codes1 and "ICD9CM//0066" in codes1
    assert not any(c in codes1 for c in ("ICD9PROC//66", "ICD9PROC//066", "ICD9CM//66"))
    # Admission 100 had two ICU stays: each code once, at the later stay's outtime.
    last_out = T0 + timedelta(hours=50 + 20)
    for code in ("ICD9CM//4019", "ICD9CM//0066", "ICD9PROC//0066", "ICD9PROC//3893", "PHENOTYPE//Essential hypertension"):
        hits = [r for r in p1 if r["code"] == code]
        assert len(hits) == 1, code
        assert hits[0]["time"] == last_out
    icd = [r["code"] for r in p1 if r["code"].startswith("ICD9CM//") and r["time"] == last_out]
    assert icd == ["ICD9CM//4019", "ICD9CM//0066"]  # MIMIC priority (seq_num) kept


def test_static_birth_death_and_visit_events(marts, tmp_path):
    out = tmp_path / "meds"
    summary = export(marts, out)
    _, data = read_data(out)
    rows = data.to_pylist()
    static = [r for r in rows if r["time"] is None]
    assert sorted((r["subject_id"], r["code"]) for r in static) == [
        (1, "GENDER//M"), (2, "GENDER//F"), (3, "GENDER//F"), (4, "GENDER//M")]
    first = {v[0]: v for v in reversed(VISITS)}  # the first visit of each subject
    for s, v in first.items():
        (birth,) = [r for r in rows if r["subject_id"] == s and r["code"] == "MEDS_BIRTH"]
        age = (v[4] - birth["time"]).total_seconds() / (365.2425 * 86400)
        assert age == pytest.approx(v[6], abs=1e-6)
        assert birth["text_value"] == ("AGE_CAPPED_AT_90" if v[7] else None)
    assert summary.births_age_capped == 1
    deaths = [r for r in rows if r["code"] == "MEDS_DEATH"]
    assert [(r["subject_id"], r["time"]) for r in deaths] == [(2, T0 + timedelta(days=3, hours=72))]
    p1 = [r["code"] for r in rows if r["subject_id"] == 1]
    assert p1.count("HOSPITAL_ADMISSION//EMERGENCY") == 1 and p1.count("ETHNICITY//WHITE") == 1
    assert p1.count("ETHNICITY//BLACK") == 1 and p1.count("INSURANCE//Private") == 1
    assert p1.count("ICU_DISCHARGE") == 3
    assert [c for c in p1 if c.startswith("ICU_ADMISSION//")] == ["ICU_ADMISSION//MICU", "ICU_ADMISSION//SICU",
                                                                   "ICU_ADMISSION//CSRU"]
    # The measurement charted before ICU intime precedes the ICU admission event.
    p3 = [r["code"] for r in rows if r["subject_id"] == 3 and r["time"] is not None]
    assert p3.index("MEASUREMENT//heart_rate") < p3.index("ICU_ADMISSION//CCU")
    fam = summary.events_by_family
    assert fam["MEASUREMENT"] == len(MEASUREMENTS)
    assert fam["ICD9CM"] == 5 and fam["ICD9PROC"] == 3 and fam["PHENOTYPE"] == 2
    assert fam["GENDER"] == 4 and fam["MEDS_BIRTH"] == 4 and fam["MEDS_DEATH"] == 1


def test_reexport_replaces_atomically_and_failure_keeps_old(marts, tmp_path):
    out = tmp_path / "meds"
    first = export(marts, out, shard_rows=10)
    (out / "data" / "stale.parquet").write_bytes(b"old")
    second = export(marts, out, shard_rows=1_000)
    assert not (out / "data" / "stale.parquet").exists()
    assert second.shards == 1 < first.shards
    assert second.dataset_version != first.dataset_version  # different sharding, different files
    assert sorted(p.name for p in tmp_path.iterdir()) == [".meds.lock", "meds", "warehouse.duckdb"]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with duckdb.connect(str(marts)) as con:
        con.execute("drop table main.visit_phenotypes")
    with pytest.raises(MedsExportError, match=r"main\.visit_phenotypes"):
        export(marts, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".meds.lock", "meds", "warehouse.duckdb"]


def test_same_marts_same_version(marts, tmp_path):
    a = export(marts, tmp_path / "a", shard_rows=10)
    b = export(marts, tmp_path / "b", shard_rows=10)
    assert a.dataset_version == b.dataset_version


@pytest.mark.parametrize("table", ALL_TABLES)
def test_missing_table_is_named(marts, tmp_path, table):
    with duckdb.connect(str(marts)) as con:
        con.execute(f"drop table {table}")
    with pytest.raises(MedsExportError, match=table.replace(".", r"\.")):
        export(marts, tmp_path / "meds")
    assert not (tmp_path / "meds").exists()


def test_missing_column_and_bad_splits_are_named(marts, tmp_path):
    with duckdb.connect(str(marts)) as con:
        con.execute("alter table main.measurements drop column value_text")
    with pytest.raises(MedsExportError, match=r"main\.measurements lacks column\(s\) \['value_text'\]"):
        export(marts, tmp_path / "meds")
    with duckdb.connect(str(marts)) as con:
        con.execute("alter table main.measurements add column value_text varchar")
        con.execute("delete from synehrgy.patient_split where subject_id = 3")
    with pytest.raises(MedsExportError, match=r"1 subject\(s\) .* no row in synehrgy\.patient_split"):
        export(marts, tmp_path / "meds")
    with duckdb.connect(str(marts)) as con:
        con.execute("insert into synehrgy.patient_split values (3, 'validation')")
    with pytest.raises(MedsExportError, match=r"\['validation'\]"):
        export(marts, tmp_path / "meds")
    assert not (tmp_path / "meds").exists()


def test_refuses_to_replace_a_foreign_folder(marts, tmp_path):
    out = tmp_path / "meds"
    out.mkdir()
    (out / "notes.txt").write_text("not an export")
    with pytest.raises(MedsExportError, match="refusing to replace"):
        export(marts, out)
    assert (out / "notes.txt").read_text() == "not an export"
    with pytest.raises(MedsExportError, match="shard_rows"):
        export(marts, tmp_path / "x", shard_rows=0)


@pytest.mark.integration
def test_asset_materializes_into_private_folder(tmp_path):
    import dagster as dg

    from synehrgy_assets.defs.meds import meds_export
    from synehrgy_assets.resources import WorkspaceResource

    workspace = WorkspaceResource(home=str(tmp_path / "home"))
    workspace.ensure()
    build_marts(workspace.layout.duckdb)
    result = dg.materialize(
        [meds_export], resources={"workspace": workspace},
        run_config={"ops": {"meds_export": {"config": {"shard_rows": 10}}}},
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("meds_export")
    meta = {k: v.value for k, v in mat.metadata.items()}
    out = workspace.layout.private / "meds"
    shards, data = read_data(out)
    assert meta["path"] == str(out)
    assert meta["events"] == data.num_rows and meta["shards"] == len(shards) > 1 and meta["subjects"] == 4
    assert "| `MEASUREMENT` | 49 |" in meta["events_by_code_family"]
    assert meta["subjects/tuning"] == 1

    from synehrgy_assets.defs.meds import meds_export_readable

    def run_check():
        result = dg.materialize([meds_export, meds_export_readable], resources={"workspace": workspace},
                                selection=dg.AssetSelection.checks(meds_export_readable))
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    good = run_check()
    assert good.passed and good.metadata["untimed_non_static_events"].value == 0
    assert good.metadata["events"].value == data.num_rows
    _rewrite_first_shard(out, lambda t: t.set_column(1, "time", pa.nulls(t.num_rows, pa.timestamp("us"))))
    bad = run_check()
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert bad.metadata["untimed_non_static_events"].value > 0 and "have no time" in bad.description


def test_export_passes_the_meds_package_and_its_own_checks(marts, tmp_path):
    out = tmp_path / "meds"
    export(marts, out, shard_rows=10)
    for p in sorted((out / "data").glob("*.parquet")):
        meds.DataSchema.validate(pq.read_table(p))
    meds.CodeMetadataSchema.validate(pq.read_table(out / "metadata" / "codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(out / "metadata" / "subject_splits.parquet"))
    meds.DatasetMetadataSchema.validate(json.loads((out / "metadata" / "dataset.json").read_text()))
    check = check_meds_dir(out)
    assert check.passed, check.problems
    assert check.untimed == 0 and check.out_of_order_rows == 0 and check.shards > 1 and check.subjects == 4
    assert check.subjects_with_several_genders == 0


def _rewrite_first_shard(out: Path, change) -> None:
    first = sorted((out / "data").glob("*.parquet"))[0]
    pq.write_table(change(pq.read_table(first)), first)


def test_check_fails_on_an_untimed_event(marts, tmp_path):
    out = tmp_path / "meds"
    export(marts, out)

    def untime_icu_admission(t: pa.Table) -> pa.Table:
        times = t["time"].to_pylist()
        k = t["code"].to_pylist().index("ICU_ADMISSION//MICU")
        times[k] = None
        return t.set_column(1, pa.field("time", pa.timestamp("us")), pa.array(times, pa.timestamp("us")))

    _rewrite_first_shard(out, untime_icu_admission)
    check = check_meds_dir(out)
    assert not check.passed and check.untimed_events == {"ICU_ADMISSION": 1}
    assert any("1 non-static events have no time" in p for p in check.problems)
    assert check.out_of_order_rows == 1  # an untimed row after timed ones also breaks the order


def test_check_fails_on_events_out_of_time_order(marts, tmp_path):
    out = tmp_path / "meds"
    export(marts, out)

    def swap_first_two_distinct_times(t: pa.Table) -> pa.Table:
        times = t["time"].to_pylist()
        k = next(i for i in range(1, len(times) - 1) if times[i] is not None and times[i] < times[i + 1])
        return pa.concat_tables([t.slice(0, k), t.slice(k + 1, 1), t.slice(k, 1), t.slice(k + 2)])

    _rewrite_first_shard(out, swap_first_two_distinct_times)
    check = check_meds_dir(out)
    assert check.untimed == 0 and check.out_of_order_rows == 1 and not check.passed


def test_check_fails_on_a_subject_in_two_shards_and_a_wrong_type(marts, tmp_path):
    out = tmp_path / "meds"
    export(marts, out)
    only = sorted((out / "data").glob("*.parquet"))[0]
    t = pq.read_table(only)
    pq.write_table(t.slice(0, 3), only)
    pq.write_table(t.slice(3), out / "data" / "0001.parquet")
    check = check_meds_dir(out)
    assert check.subjects_in_several_shards == 1 and not check.passed
    female = t.slice(0, 1).set_column(2, pa.field("code", pa.string(), nullable=False),
                                       pa.array(["GENDER//F"], pa.string()))
    pq.write_table(pa.concat_tables([female, t]), only)
    (out / "data" / "0001.parquet").unlink()
    assert check_meds_dir(out).subjects_with_several_genders == 1
    pq.write_table(t.set_column(3, "numeric_value", t["numeric_value"].cast(pa.float64())), only)
    check = check_meds_dir(out)
    assert any("data/0000.parquet does not match meds.DataSchema" in p for p in check.problems)


@pytest.mark.parametrize("column", ["intime", "outtime"])
def test_visits_without_times_are_refused(marts, tmp_path, column):
    with duckdb.connect(str(marts)) as con:
        con.execute(f"update main.visits set {column} = null where icustay_id = (select min(icustay_id) from main.visits)")
    with pytest.raises(MedsExportError, match=rf"1 of {len(VISITS)} rows of main\.visits have a NULL {column}"):
        export(marts, tmp_path / "meds")
    assert not (tmp_path / "meds").exists()


def test_an_untimed_birth_fails_the_export(marts, tmp_path):
    with duckdb.connect(str(marts)) as con:
        con.execute("update main.visits set age_years = null where subject_id = 2")
    with pytest.raises(MedsExportError, match=r"fails its checks: 1 non-static events have no time .*MEDS_BIRTH"):
        export(marts, tmp_path / "meds")
    assert not (tmp_path / "meds").exists()


def test_a_second_export_into_a_folder_being_written_is_refused_at_once(tmp_path):
    from synehrgy_assets.core.meds import _export_lock

    with _export_lock(tmp_path / "meds"):
        with pytest.raises(MedsExportError, match="another export is writing"):
            with _export_lock(tmp_path / "meds"):
                pass
    with _export_lock(tmp_path / "meds"):  # released with the first
        pass
