"""Export a marts-shaped cohort as a MEDS 0.4 dataset: the staged real cohort (the dbt marts,
`REAL_MARTS`) or a synthetic one (`MedsSource.in_schema("synthetic")`), through the same code.

Layout (https://github.com/Medical-Event-Data-Standard/meds, schema of release 0.4):

    <out_dir>/data/0000.parquet ...        events, sorted by (subject_id, time); a subject never spans shards
    <out_dir>/metadata/codes.parquet       one row per code in the data
    <out_dir>/metadata/subject_splits.parquet
    <out_dir>/metadata/dataset.json

All event rows are built by one DuckDB query over the marts and streamed (Arrow record batches) into
the shards; nothing is materialised in Python. Code conventions: docs/meds.md.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import meds
from filelock import FileLock, Timeout

from synehrgy_assets.core.cohort import SEEDS_DIR

MEDS_VERSION = meds.__version__
ETL_NAME = "synehrgy.meds"
DEFAULT_DATASET_NAME = "MIMIC-III (synehrgy staging)"

# The MEDS 0.4 schemas, from the `meds` package itself. `meds.DataSchema.schema()` leaves every field
# nullable; the package declares subject_id and code non-null (its validation rejects nulls there), so the
# files say so too.
_NON_NULL = {"subject_id", "code", "split"}


def _meds_schema(schema_cls) -> pa.Schema:
    return pa.schema([f.with_nullable(f.name not in _NON_NULL) for f in schema_cls.schema()])


DATA_SCHEMA = _meds_schema(meds.DataSchema)
CODES_SCHEMA = _meds_schema(meds.CodeMetadataSchema)
SUBJECT_SPLITS_SCHEMA = _meds_schema(meds.SubjectSplitSchema)
# The only events the export writes without a time: facts of the person, not of a visit.
STATIC_FAMILIES = ("GENDER",)

# Our patient_split names → the MEDS sentinel split names.
SPLIT_NAMES = {"train": "train", "val": "tuning", "test": "held_out"}

MART_COLUMNS: dict[str, tuple[str, ...]] = {
    "visits": ("subject_id", "hadm_id", "icustay_id", "intime", "outtime", "age_years", "age_is_capped", "gender",
               "ethnicity_group", "insurance", "admission_type", "first_careunit", "mortality_inhospital"),
    "visit_codes": ("subject_id", "icustay_id", "code_type", "icd9_code", "seq_num"),
    "visit_phenotypes": ("subject_id", "icustay_id", "phenotype"),
    "measurements": ("subject_id", "icustay_id", "hours", "variable", "value", "value_text"),
}


@dataclass(frozen=True)
class MedsSource:
    """Where `export_meds` reads a cohort: four marts-shaped tables (docs/architecture.md), the split
    table (None = every subject in `all_split`) and optional ICD-9 dictionaries for descriptions.

    Names are DuckDB relation names as written in SQL (`schema.table`, quoted where needed).
    """

    visits: str = "main.visits"
    visit_codes: str = "main.visit_codes"
    visit_phenotypes: str = "main.visit_phenotypes"
    measurements: str = "main.measurements"
    split_table: str | None = "synehrgy.patient_split"
    all_split: str = "train"
    icd_titles: tuple[tuple[str, str], ...] = (
        ("diagnosis", "main.stg_mimic__d_icd_diagnoses"), ("procedure", "main.stg_mimic__d_icd_procedures"))
    origin: str = "the dbt model"

    @classmethod
    def in_schema(cls, schema: str, *, dictionaries_schema: str | None = None, all_split: str = "train",
                  origin: str = "the synthetic cohort table") -> "MedsSource":
        """Marts-shaped tables `<schema>.visits` ... without a split table (a synthetic cohort), with ICD
        titles from `<dictionaries_schema>."D_ICD_DIAGNOSES"` / `"D_ICD_PROCEDURES"` when given."""
        titles = () if dictionaries_schema is None else (
            ("diagnosis", f'{dictionaries_schema}."D_ICD_DIAGNOSES"'),
            ("procedure", f'{dictionaries_schema}."D_ICD_PROCEDURES"'))
        return cls(visits=f"{schema}.visits", visit_codes=f"{schema}.visit_codes",
                   visit_phenotypes=f"{schema}.visit_phenotypes", measurements=f"{schema}.measurements",
                   split_table=None, all_split=all_split, icd_titles=titles, origin=origin)

    def mart(self, name: str) -> str:
        return getattr(self, name)

    def required(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """table -> (columns read here, what writes it)."""
        out = {self.mart(m): (cols, f"{self.origin} `{m}`") for m, cols in MART_COLUMNS.items()}
        if self.split_table is not None:
            out[self.split_table] = (("subject_id", "split"), "the asset `patient_split`")
        return out


REAL_MARTS = MedsSource()
# The real cohort's names, kept for readers of the old constants.
SPLIT_TABLE = REAL_MARTS.split_table
REQUIRED_TABLES = REAL_MARTS.required()
ICD_TITLE_VIEWS = dict(REAL_MARTS.icd_titles)

MICROSECONDS_PER_HOUR = 3_600_000_000
MICROSECONDS_PER_YEAR = 31_556_952_000_000  # 365.2425 days, the year staging uses for age_years
AGE_CAPPED_TEXT = "AGE_CAPPED_AT_90"
STREAM_BATCH_ROWS = 262_144

# Events of one subject at the same time are written in this order (then seq_num, code, value), so
# an export is byte-for-byte reproducible and reads chronologically (admission before discharge).
_EVENTS_TEMPLATE = """
with v as (
    select subject_id, hadm_id, icustay_id, intime, outtime, age_years, age_is_capped, gender, ethnicity_group,
           insurance, admission_type, first_careunit, mortality_inhospital
    from {visits}
),
first_visit as (
    select * from v qualify row_number() over (partition by subject_id order by intime, icustay_id) = 1
),
admission as (
    -- admission-level facts live on every ICU stay of the admission: take them once per admission
    select subject_id, hadm_id,
           min(intime) as first_intime,
           max(outtime) as last_outtime,
           arg_min(insurance, (intime, icustay_id)) as insurance,
           arg_min(admission_type, (intime, icustay_id)) as admission_type,
           arg_min(ethnicity_group, (intime, icustay_id)) as ethnicity_group
    from v group by subject_id, hadm_id
),
admission_codes as (
    -- visit_codes repeats the admission's codes on each of its ICU stays: one event per recorded row
    select distinct c.subject_id, v.hadm_id, c.code_type, c.icd9_code, c.seq_num
    from {visit_codes} c join v using (icustay_id)
),
admission_phenotypes as (
    select distinct p.subject_id, v.hadm_id, p.phenotype
    from {visit_phenotypes} p join v using (icustay_id)
),
events as (
    select subject_id, cast(null as timestamp) as time, 'GENDER//' || gender as code,
           cast(null as float) as numeric_value, cast(null as varchar) as text_value,
           0 as priority, cast(null as bigint) as seq
    from (select distinct subject_id, gender from v where gender is not null)
  union all
    select subject_id,
           intime - to_microseconds(cast(round(age_years * {us_per_year}) as bigint)),
           'MEDS_BIRTH', null, case when age_is_capped then '{capped}' end, 1, null
    from first_visit
  union all
    select subject_id, first_intime, 'HOSPITAL_ADMISSION//' || admission_type, null, null, 2, null
    from admission where admission_type is not null
  union all
    select subject_id, first_intime, 'INSURANCE//' || insurance, null, null, 3, null
    from admission where insurance is not null
  union all
    select subject_id, first_intime, 'ETHNICITY//' || ethnicity_group, null, null, 4, null
    from admission where ethnicity_group is not null
  union all
    select subject_id, intime, 'ICU_ADMISSION//' || first_careunit, null, null, 5, null
    from v where first_careunit is not null
  union all
    select m.subject_id, v.intime + to_microseconds(cast(round(m.hours * {us_per_hour}) as bigint)),
           'MEASUREMENT//' || m.variable, cast(m.value as float), m.value_text, 6, null
    from {measurements} m join v using (icustay_id)
  union all
    select subject_id, outtime, 'ICU_DISCHARGE', null, null, 7, null from v
  union all
    select c.subject_id, a.last_outtime,
           case c.code_type when 'diagnosis' then 'ICD9CM//' else 'ICD9PROC//' end || c.icd9_code,
           null, null, case c.code_type when 'diagnosis' then 8 else 9 end, c.seq_num
    from admission_codes c join admission a using (subject_id, hadm_id)
  union all
    select p.subject_id, a.last_outtime, 'PHENOTYPE//' || p.phenotype, null, null, 10, null
    from admission_phenotypes p join admission a using (subject_id, hadm_id)
  union all
    select subject_id, max(outtime), 'MEDS_DEATH', null, null, 11, null
    from v where mortality_inhospital = 1 group by subject_id
)
"""


def events_sql(source: MedsSource = REAL_MARTS) -> str:
    """The `with ... events as (...)` prefix of every query, over `source`'s tables."""
    return _EVENTS_TEMPLATE.format(
        visits=source.visits, visit_codes=source.visit_codes, visit_phenotypes=source.visit_phenotypes,
        measurements=source.measurements, us_per_year=MICROSECONDS_PER_YEAR, us_per_hour=MICROSECONDS_PER_HOUR,
        capped=AGE_CAPPED_TEXT)


EVENTS_SQL = events_sql(REAL_MARTS)
ORDER_BY = "subject_id, time nulls first, priority, seq nulls first, code, numeric_value nulls first, text_value nulls first"


class MedsExportError(ValueError):
    """The marts or the output folder are not what the export needs (the message says which)."""


@dataclass
class MedsSummary:
    """Aggregate figures of one export (no patient rows)."""

    out_dir: Path
    events: int
    subjects: int
    shards: int
    codes: int
    events_by_family: dict[str, int]
    subjects_by_split: dict[str, int]
    shard_rows: int
    max_shard_events: int
    births_age_capped: int
    icd_descriptions_from: list[str] = field(default_factory=list)
    dataset_version: str = ""

    def families_markdown(self) -> str:
        lines = ["| code family | events |", "|---|---:|"]
        lines += [f"| `{k}` | {v:,} |" for k, v in sorted(self.events_by_family.items())]
        return "\n".join(lines)


def export_meds(
    con,
    out_dir: Path,
    *,
    shard_rows: int = 1_000_000,
    dataset_name: str = DEFAULT_DATASET_NAME,
    variables_csv: Path = SEEDS_DIR / "variables.csv",
    source: MedsSource = REAL_MARTS,
) -> MedsSummary:
    """Write the marts-shaped tables of `source` on `con` (a DuckDB connection) as a MEDS 0.4 dataset
    at `out_dir`: by default the real marts and `synehrgy.patient_split`.

    Shards hold about `shard_rows` events each: a shard is closed at the first subject boundary at or
    after each multiple of `shard_rows`, so one subject is never split. Everything is written to a
    sibling temp folder first and moved into place at the end; on any error `out_dir` is untouched.
    """
    if shard_rows < 1:
        raise MedsExportError(f"export_meds: shard_rows must be >= 1, got {shard_rows}")
    out_dir = Path(out_dir).expanduser().resolve()
    _check_inputs(con, source)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _export_lock(out_dir):
        tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            (tmp / "data").mkdir(parents=True)
            (tmp / "metadata").mkdir()
            summary = _write_export(con, tmp, shard_rows=shard_rows, dataset_name=dataset_name,
                                    variables_csv=Path(variables_csv), source=source)
            from synehrgy_assets.core.meds_checks import check_meds_dir

            check = check_meds_dir(tmp)
            if not check.passed:
                raise MedsExportError("export_meds: the written dataset fails its checks: " + "; ".join(check.problems))
            _swap_into_place(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    summary.out_dir = out_dir
    return summary


# ---------------------------------------------------------------------------------------- checks


def _existing_relations(con) -> set[str]:
    rows = con.sql(
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_catalog = current_database()"
    ).fetchall()
    return {r[0] for r in rows}


def _split_name(qualified: str) -> tuple[str, str]:
    """`schema.table` (either part may be double-quoted) -> (schema, table) as stored."""
    schema, name = qualified.split(".", 1)
    return schema.strip('"'), name.strip('"')


def _exists(existing: set[str], qualified: str) -> bool:
    return ".".join(_split_name(qualified)) in existing


def _check_inputs(con, source: MedsSource) -> None:
    existing = _existing_relations(con)
    required = source.required()
    missing = [f"{t} (written by {origin})" for t, (_, origin) in required.items() if not _exists(existing, t)]
    if missing:
        hint = (" Build the dbt marts and materialize `patient_split` first." if source == REAL_MARTS
                else " Write the cohort's marts-shaped tables first.")
        raise MedsExportError("export_meds: missing table(s) " + "; ".join(missing) + "." + hint)
    problems = []
    for table, (columns, _) in required.items():
        schema, name = _split_name(table)
        found = {
            r[0]
            for r in con.execute(
                "select column_name from information_schema.columns "
                "where table_catalog = current_database() and table_schema = ? and table_name = ?",
                [schema, name],
            ).fetchall()
        }
        lacking = [c for c in columns if c not in found]
        if lacking:
            problems.append(f"{table} lacks column(s) {lacking} (found {sorted(found)})")
    if problems:
        raise MedsExportError("export_meds: " + "; ".join(problems))
    if con.sql(f"select count(*) from {source.visits}").fetchall()[0][0] == 0:
        raise MedsExportError(f"export_meds: {source.visits} is empty; nothing to export")
    _check_times(con, source)


def _check_times(con, source: MedsSource) -> None:
    """Every non-static event's time comes from `visits.intime` / `outtime` (plus `measurements.hours`):
    a NULL there would give untimed events, which MEDS readers cannot order, so refuse up front."""
    n, no_in, no_out = con.sql(
        f"select count(*), count(*) - count(intime), count(*) - count(outtime) from {source.visits}").fetchall()[0]
    no_hours = con.sql(f"select count(*) - count(hours) from {source.measurements}").fetchall()[0][0]
    problems = [f"{k} of {n} rows of {source.visits} have a NULL {c}" for k, c in ((no_in, "intime"),
                                                                                  (no_out, "outtime")) if k]
    if no_hours:
        problems.append(f"{no_hours} rows of {source.measurements} have a NULL hours")
    if problems:
        raise MedsExportError(
            "export_meds: " + "; ".join(problems) + ". Every event but gender is timed from the ICU stay's "
            "intime/outtime; an export with untimed events loses their order (MEDS readers and task "
            "extractors cannot use it)")


def _check_replaceable(out_dir: Path) -> None:
    """Only ever replace an earlier MEDS export (never an unrelated folder someone pointed us at)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise MedsExportError(f"export_meds: {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "metadata" / "dataset.json").is_file():
        raise MedsExportError(
            f"export_meds: {out_dir} is not empty and holds no metadata/dataset.json, so it is not an earlier "
            "MEDS export; refusing to replace it"
        )


@contextmanager
def _export_lock(out_dir: Path) -> Iterator[None]:
    """One export per folder at a time; leftovers of a crashed export are removed under the lock."""
    lock_path = out_dir.with_name(f".{out_dir.name}.lock")
    try:
        lock = FileLock(lock_path, timeout=0).acquire()
    except Timeout:
        raise MedsExportError(f"export_meds: another export is writing {out_dir} (lock {lock_path})") from None
    with lock:
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in out_dir.parent.glob(f".{out_dir.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Two renames in one folder (`output_dirs.swap_in`): readers see the old export, briefly none,
    then the new one; never a mix."""
    from synehrgy_assets.core.output_dirs import swap_in

    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:12]}")
    swap_in(tmp, out_dir, old)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------- writing


def _write_export(con, root: Path, *, shard_rows: int, dataset_name: str, variables_csv: Path,
                  source: MedsSource) -> MedsSummary:
    sql = events_sql(source)
    # One aggregate pass gives the events per subject (for sharding) and per code (for codes.parquet).
    counts = con.sql(
        f"""{sql}
        select subject_id, code, count(*) as n, grouping(subject_id) = 0 as is_subject_row from events
        group by grouping sets ((subject_id), (code))"""
    ).to_arrow_table()
    by_subject = counts.filter(counts["is_subject_row"]).sort_by("subject_id")
    by_code = counts.filter(pc.invert(counts["is_subject_row"]))
    subject_ids = by_subject["subject_id"].to_numpy()
    subject_events = by_subject["n"].to_numpy().astype(np.int64)
    code_names = by_code["code"].to_pylist()
    if None in code_names:
        raise MedsExportError(
            f"export_meds: some events have a NULL code; a NULL value in {source.measurements}.variable, "
            f"{source.visit_codes}.icd9_code/code_type or {source.visit_phenotypes}.phenotype"
        )
    code_counts = dict(zip(code_names, by_code["n"].to_pylist()))
    _check_measurements_attached(con, code_counts, source)

    shard_of_subject = _assign_shards(subject_events, shard_rows)
    n_shards = int(shard_of_subject[-1]) + 1
    expected_per_shard = np.bincount(shard_of_subject, weights=subject_events, minlength=n_shards).astype(np.int64)
    last_subject_of_shard = subject_ids[np.r_[np.flatnonzero(np.diff(shard_of_subject)), len(subject_ids) - 1]]
    width = max(4, len(str(n_shards - 1)))
    shard_paths = [root / "data" / f"{k:0{width}d}.parquet" for k in range(n_shards)]
    written = _stream_shards(con, shard_paths, last_subject_of_shard, sql)
    if not np.array_equal(written, expected_per_shard):
        raise RuntimeError(
            f"export_meds: wrote {int(written.sum())} events but counted {int(expected_per_shard.sum())}; "
            "the marts changed during the export?"
        )

    subjects_by_split = _write_subject_splits(con, subject_ids, root / "metadata" / "subject_splits.parquet", source)
    from synehrgy_assets.core.meds_codes import write_codes

    icd_sources = write_codes(con, code_names, variables_csv, root / "metadata" / "codes.parquet", source)

    families: dict[str, int] = {}
    for code, n in code_counts.items():
        fam = code.split("//", 1)[0]
        families[fam] = families.get(fam, 0) + int(n)
    version = _content_version(shard_paths + [root / "metadata" / "codes.parquet",
                                              root / "metadata" / "subject_splits.parquet"])
    dataset = {
        "dataset_name": dataset_name,
        "dataset_version": version,
        "etl_name": ETL_NAME,
        "etl_version": _etl_version(),
        "meds_version": MEDS_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    (root / "metadata" / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")

    capped = con.sql(
        f"{sql} select count(*) from events where code = 'MEDS_BIRTH' and text_value = '{AGE_CAPPED_TEXT}'"
    ).fetchall()[0][0]
    return MedsSummary(
        out_dir=root,
        events=int(subject_events.sum()),
        subjects=int(len(subject_ids)),
        shards=n_shards,
        codes=len(code_names),
        events_by_family=families,
        subjects_by_split=subjects_by_split,
        shard_rows=shard_rows,
        max_shard_events=int(expected_per_shard.max()),
        births_age_capped=int(capped),
        icd_descriptions_from=icd_sources,
        dataset_version=version,
    )


def _check_measurements_attached(con, code_counts: dict[str, int], source: MedsSource) -> None:
    exported = sum(n for c, n in code_counts.items() if c.startswith("MEASUREMENT//"))
    total = con.sql(f"select count(*) from {source.measurements}").fetchall()[0][0]
    if exported != total:
        raise MedsExportError(
            f"export_meds: {total - exported} of {total} rows of {source.measurements} have an icustay_id that is "
            f"not in {source.visits} (the dbt relationships test should have caught this)"
        )


def _assign_shards(subject_events: np.ndarray, shard_rows: int) -> np.ndarray:
    """Shard index per subject (subjects sorted by id): cut at the first boundary at/after k·shard_rows."""
    start = np.cumsum(subject_events) - subject_events
    raw = start // shard_rows
    # A subject larger than shard_rows makes `raw` jump; renumber so shard indices are contiguous.
    return np.unique(raw, return_inverse=True)[1].astype(np.int64)


def _stream_shards(con, shard_paths: list[Path], last_subject_of_shard: np.ndarray, sql: str) -> np.ndarray:
    """Stream the sorted events once and cut them into shards at subject boundaries."""
    written = np.zeros(len(shard_paths), dtype=np.int64)
    reader = con.sql(
        f"{sql} select subject_id, time, code, numeric_value, text_value from events order by {ORDER_BY}"
    ).to_arrow_reader(STREAM_BATCH_ROWS)
    writer: pq.ParquetWriter | None = None
    current = -1
    try:
        for batch in reader:
            if batch.num_rows == 0:
                continue
            batch = _to_meds_batch(batch)
            shard = np.searchsorted(last_subject_of_shard, batch.column("subject_id").to_numpy(), side="left")
            cuts = np.r_[0, np.flatnonzero(np.diff(shard)) + 1, len(shard)]
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                k = int(shard[lo])
                if k != current:
                    if writer is not None:
                        writer.close()
                    writer = pq.ParquetWriter(shard_paths[k], DATA_SCHEMA, compression="zstd")
                    current = k
                writer.write_batch(batch.slice(lo, hi - lo))
                written[k] += hi - lo
    finally:
        if writer is not None:
            writer.close()
        reader.close()
    return written


def _to_meds_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    for name in ("subject_id", "code"):
        if batch.column(name).null_count:
            raise MedsExportError(f"export_meds: NULL {name} in the events built from the marts")
    return pa.RecordBatch.from_arrays(
        [batch.column(f.name).cast(f.type) for f in DATA_SCHEMA], schema=DATA_SCHEMA
    )


def _write_subject_splits(con, subject_ids: np.ndarray, path: Path, source: MedsSource) -> dict[str, int]:
    split_table = source.split_table
    if split_table is None:
        if source.all_split not in SPLIT_NAMES.values():
            raise MedsExportError(f"export_meds: all_split must be one of {sorted(SPLIT_NAMES.values())}, "
                                  f"got {source.all_split!r}")
        table = pa.table({"subject_id": pa.array(subject_ids, pa.int64()),
                          "split": pa.array([source.all_split] * len(subject_ids), pa.string())})
        pq.write_table(table.cast(SUBJECT_SPLITS_SCHEMA), path, compression="zstd")
        return {source.all_split: int(len(subject_ids))} if len(subject_ids) else {}
    bad = con.sql(
        f"select distinct split from {split_table} where split is null or split not in ('train', 'val', 'test')"
    ).fetchall()
    if bad:
        raise MedsExportError(
            f"export_meds: {split_table}.split holds {sorted(map(str, (b[0] for b in bad)))}; expected train/val/test"
        )
    dup = con.sql(f"select count(*) - count(distinct subject_id) from {split_table}").fetchall()[0][0]
    if dup:
        raise MedsExportError(f"export_meds: {split_table} lists {dup} subject(s) more than once")
    wanted = pa.table({"subject_id": pa.array(subject_ids, pa.int64())})
    con.register("_meds_subjects", wanted)
    try:
        table = con.sql(
            f"""select w.subject_id,
                       case s.split when 'train' then '{SPLIT_NAMES['train']}' when 'val' then '{SPLIT_NAMES['val']}'
                                    when 'test' then '{SPLIT_NAMES['test']}' end as split
                from _meds_subjects w left join {split_table} s using (subject_id)
                order by w.subject_id"""
        ).to_arrow_table()
    finally:
        con.unregister("_meds_subjects")
    unsplit = table["split"].null_count
    if unsplit:
        raise MedsExportError(
            f"export_meds: {unsplit} subject(s) of {source.visits} have no row in {split_table}; "
            "re-materialize `patient_split` after rebuilding the marts"
        )
    table = table.cast(SUBJECT_SPLITS_SCHEMA)
    pq.write_table(table, path, compression="zstd")
    names, n = np.unique(table["split"].to_numpy(zero_copy_only=False), return_counts=True)
    return {str(a): int(b) for a, b in zip(names, n)}


def _content_version(paths: list[Path]) -> str:
    """A short hash of the exported files: the same marts give the same version."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _etl_version() -> str:
    from synehrgy_assets import __version__

    return __version__
