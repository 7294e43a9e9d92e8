"""Checks of a MEDS dataset on disk, as a MEDS reader needs it: the `meds` package's own schemas, every
non-static event timed, the events of a subject contiguous, in one shard and in time order, and every
code and subject described in the metadata. Used by `export_meds` before it replaces an export, by the
asset check on `meds_export` and by the tests on the released synthetic export.

Only counts leave this module (no subject ids, times or values), so its results may go to metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import meds
import pyarrow.parquet as pq

from synehrgy_assets.core.meds import STATIC_FAMILIES


@dataclass
class MedsCheck:
    """What `check_meds_dir` found; `problems` is empty when the dataset passes."""

    root: Path
    events: int = 0
    subjects: int = 0
    shards: int = 0
    untimed_events: dict[str, int] = field(default_factory=dict)  # code family -> events without time
    out_of_order_rows: int = 0
    subjects_in_several_shards: int = 0
    # Reported, not judged here (the patient rules judge it): subjects with more than one GENDER code.
    subjects_with_several_genders: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def untimed(self) -> int:
        return sum(self.untimed_events.values())


def _validate(schema_cls, arg, what: str, problems: list[str]) -> None:
    try:
        schema_cls.validate(arg)
    except Exception as exc:  # noqa: BLE001 - flexible_schema raises several types; the message says which
        problems.append(f"{what} does not match meds.{schema_cls.__name__} ({exc})")


def check_meds_dir(root: str | Path) -> MedsCheck:
    """Check the MEDS dataset at `root` (data/*.parquet and metadata/) and count what breaks."""
    import duckdb

    root = Path(root)
    out = MedsCheck(root=root)
    shards, metadata = _check_files(root, out)
    if out.problems:
        return out
    files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in shards) + "]"
    con = duckdb.connect()
    try:
        con.execute(f"create view ev as select subject_id, time, code, filename, file_row_number "
                    f"from read_parquet({files}, filename = true, file_row_number = true)")
        _check_events(con, out, metadata)
    finally:
        con.close()
    return out


def _check_files(root: Path, out: MedsCheck) -> tuple[list[Path], dict[str, Path]]:
    """The shards and metadata files are there and match the MEDS schemas (problems into `out`)."""
    shards = sorted((root / "data").glob("*.parquet"))
    out.shards = len(shards)
    metadata = {name: root / "metadata" / name for name in ("codes.parquet", "subject_splits.parquet", "dataset.json")}
    missing = [str(p.relative_to(root)) for p in metadata.values() if not p.is_file()]
    if not shards:
        missing.insert(0, "data/*.parquet")
    if missing:
        out.problems.append(f"{root}: missing {', '.join(missing)}")
        return shards, metadata
    for p in shards:
        _validate(meds.DataSchema, pq.read_schema(p), f"data/{p.name}", out.problems)
    _validate(meds.CodeMetadataSchema, pq.read_table(metadata["codes.parquet"]), "metadata/codes.parquet", out.problems)
    _validate(meds.SubjectSplitSchema, pq.read_table(metadata["subject_splits.parquet"]),
              "metadata/subject_splits.parquet", out.problems)
    try:
        dataset = json.loads(metadata["dataset.json"].read_text())
    except ValueError as exc:
        out.problems.append(f"metadata/dataset.json is not JSON ({exc})")
    else:
        _validate(meds.DatasetMetadataSchema, dataset, "metadata/dataset.json", out.problems)
    return shards, metadata


def _check_events(con, out: MedsCheck, metadata: dict[str, Path]) -> None:
    """The events (view `ev`): ids and codes present, times where they must be, file order,
    one shard and one gender per subject, every code and subject described in the metadata."""
    static = ", ".join(f"'{f}'" for f in STATIC_FAMILIES)
    out.events, out.subjects, null_ids, null_codes = con.sql(
        "select count(*), count(distinct subject_id), count(*) - count(subject_id), count(*) - count(code) "
        "from ev").fetchall()[0]
    for what, n in (("subject_id", null_ids), ("code", null_codes)):
        if n:
            out.problems.append(f"{n} events with a NULL {what}")
    out.untimed_events = dict(con.sql(
        f"select split_part(code, '//', 1) as family, count(*) from ev "
        f"where time is null and split_part(code, '//', 1) not in ({static}) group by family order by family"
    ).fetchall())
    if out.untimed_events:
        out.problems.append(
            f"{out.untimed} non-static events have no time (by code family: {out.untimed_events}); only "
            f"{list(STATIC_FAMILIES)} may be untimed")
    # File order as written (shards by name, rows in place): a subject's rows must be contiguous,
    # static first, then in non-decreasing time.
    out.out_of_order_rows = con.sql(
        """select count(*) from (
               select subject_id, time,
                      lag(subject_id) over w as prev_subject, lag(time) over w as prev_time
               from ev window w as (order by filename, file_row_number))
           where prev_subject > subject_id
              or (prev_subject = subject_id and prev_time is not null and (time is null or time < prev_time))"""
    ).fetchall()[0][0]
    if out.out_of_order_rows:
        out.problems.append(f"{out.out_of_order_rows} events come before the previous row of the file order "
                            "(subjects must be sorted and contiguous, static events first, then time order)")
    out.subjects_in_several_shards = con.sql(
        "select count(*) from (select subject_id from ev group by subject_id having count(distinct filename) > 1)"
    ).fetchall()[0][0]
    if out.subjects_in_several_shards:
        out.problems.append(f"{out.subjects_in_several_shards} subjects span more than one shard")
    out.subjects_with_several_genders = con.sql(
        "select count(*) from (select subject_id from ev where code like 'GENDER//%' group by subject_id "
        "having count(distinct code) > 1)").fetchall()[0][0]
    codes = str(metadata["codes.parquet"]).replace("'", "''")
    undescribed = con.sql(f"select count(distinct code) from ev anti join read_parquet('{codes}') c using (code)"
                          ).fetchall()[0][0]
    if undescribed:
        out.problems.append(f"{undescribed} codes of the data are not in metadata/codes.parquet")
    splits = str(metadata["subject_splits.parquet"]).replace("'", "''")
    unsplit = con.sql(f"select count(distinct subject_id) from ev anti join read_parquet('{splits}') s "
                      "using (subject_id)").fetchall()[0][0]
    if unsplit:
        out.problems.append(f"{unsplit} subjects of the data have no row in metadata/subject_splits.parquet")
