"""Exports of a synthetic cohort in the formats users read: Parquet, the MIMIC-III CSV layout and
MEDS 0.4. Shared by the release (`defs/release.py`) and the `generate` CLI (`synehrgy_assets/consumer.py`).

A cohort is given as two sets of frames: the marts-shaped tables (`visits`, `visit_codes`,
`visit_phenotypes`, `measurements`; docs/architecture.md) and the MIMIC-III-shaped tables of
`decoder.cohort_to_mimic_tables`. Every writer is all-or-nothing (the folder is replaced whole, or
not at all) and refuses a folder holding real MIMIC tables or anything we did not write
(`core/output_dirs.py`; `overwrite=True` replaces an earlier output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from synehrgy_assets.core.output_dirs import replaced_dir

FORMATS = ("parquet", "mimic-csv", "mimic-csv-plain", "meds")
MART_TABLES = ("visits", "visit_codes", "visit_phenotypes", "measurements")
SYNTHETIC_DATASET_NAME = "synehrgy synthetic cohort"


@dataclass
class ExportResult:
    """What one export wrote: the folder, and rows per file (path relative to the folder)."""

    format: str
    out_dir: Path
    rows: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"{self.format}: {self.out_dir}"]
        lines += [f"  {name:<40} {n:>12,} rows" for name, n in sorted(self.rows.items())]
        return "\n".join(lines)


def _check_marts(marts: Mapping[str, pd.DataFrame]) -> None:
    missing = [t for t in MART_TABLES if t not in marts]
    if missing:
        raise ValueError(f"synthetic cohort: missing marts-shaped table(s) {missing}; expected {list(MART_TABLES)}")


def write_parquet(tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *,
                  overwrite: bool = False) -> ExportResult:
    """One `<name>.parquet` per table in `out_dir` (`output_dirs.replaced_dir`: all at once)."""
    rows = {}
    with replaced_dir(out_dir, overwrite=overwrite, what="parquet") as work:
        for name, frame in tables.items():
            frame.to_parquet(work / f"{name}.parquet", index=False)
            rows[f"{name}.parquet"] = int(len(frame))
    return ExportResult("parquet", Path(out_dir), rows)


def write_mimic_csv(mimic_tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *,
                    header_case: str = "upper", compress: bool = True, overwrite: bool = False) -> ExportResult:
    """The MIMIC-III v1.4 CSV layout as the full release ships it: `TABLE.csv.gz` (`compress=False`: plain
    `TABLE.csv`, what mimic3-benchmarks opens), UPPERCASE quoted headers and quoted strings
    (`header_case="lower"`: the demo's style), all 26 tables, those the cohort has no rows for (OUTPUTEVENTS,
    INPUTEVENTS_*, NOTEEVENTS, ...) header-only. `core/mimic_layout.resolve_mimic_dir` and the dbt staging
    read it like a real MIMIC folder."""
    from synehrgy_assets.core.mimic_tables import MIMIC_TABLES, table_columns, write_mimic_tables

    unknown = sorted(set(mimic_tables) - set(MIMIC_TABLES))
    if unknown:
        raise ValueError(f"mimic-csv: unknown MIMIC-III table(s) {unknown}; expected names from {list(MIMIC_TABLES)}")
    empty = {t: pd.DataFrame({c: pd.Series([], dtype=object) for c in table_columns(t)}) for t in MIMIC_TABLES}
    tables = {t: mimic_tables[t] if t in mimic_tables else empty[t] for t in MIMIC_TABLES}
    with replaced_dir(out_dir, overwrite=overwrite, what="mimic-csv") as work:
        paths = write_mimic_tables(tables, work, header_case=header_case, compress=compress)
    rows = {paths[t].name: int(len(frame)) for t, frame in tables.items()}
    return ExportResult("mimic-csv", Path(out_dir), rows,
                        details={"header_only": sorted(t for t in MIMIC_TABLES if t not in mimic_tables)})


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as plain strings (DuckDB would make them ENUMs, which `||` does not concatenate)."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.CategoricalDtype):
            out[column] = out[column].astype("str").where(out[column].notna(), None)
    return out


def visits_with_times(visits: pd.DataFrame, mimic_tables: Mapping[str, pd.DataFrame] | None) -> pd.DataFrame:
    """`visits` with `intime` / `outtime`: as given when every visit has them, else the ICU stay times the
    MIMIC-shaped tables of the same cohort hold (its `ICUSTAYS`, which mimic_writer writes one per visit, in
    (subject_id, visit_index) order, under fresh ids). The pairing is checked (the same visits per patient,
    in the same order, with the same length of stay); where it cannot be made, a ValueError says why, so a
    MEDS export never gets untimed events."""
    if visits["intime"].notna().all() and visits["outtime"].notna().all():
        return visits
    lacking = int((visits["intime"].isna() | visits["outtime"].isna()).sum())
    why = f"synthetic cohort: {lacking} of {len(visits)} rows of `visits` have no intime/outtime"
    stays = (mimic_tables or {}).get("ICUSTAYS")
    if stays is None:
        raise ValueError(f"{why}, and no ICUSTAYS table was given to take them from; MEDS needs a time on every "
                         "event")
    ordered = visits.sort_values(["subject_id", "visit_index"], kind="stable")
    stays = stays.sort_values(["subject_id", "intime", "icustay_id"], kind="stable")
    per_visit = ordered.groupby("subject_id", sort=True).size().to_numpy()
    per_stay = stays.groupby("subject_id", sort=True).size().to_numpy()
    if len(stays) != len(visits) or list(per_visit) != list(per_stay):
        raise ValueError(f"{why}, and ICUSTAYS ({len(stays)} stays of {len(per_stay)} patients) does not pair with "
                         f"them ({len(visits)} visits of {len(per_visit)} patients)")
    intime = pd.to_datetime(stays["intime"]).to_numpy()
    outtime = pd.to_datetime(stays["outtime"]).to_numpy()
    if pd.isna(intime).any() or pd.isna(outtime).any():
        raise ValueError(f"{why}, and ICUSTAYS has NULL intime/outtime too")
    los = pd.to_numeric(ordered["los_hours"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    stay_hours = (outtime - intime) / np.timedelta64(1, "h")
    # The decoder rounds times to the second and replaces a missing or non-positive length of stay.
    off = (los > 0) & (np.abs(stay_hours - los) > 1 / 60)
    if off.any():
        raise ValueError(f"{why}, and ICUSTAYS does not pair with them: {int(off.sum())} stays differ from "
                         "`visits.los_hours` by more than a minute")
    out = ordered.copy()
    out["intime"] = pd.Series(intime, index=out.index).astype("datetime64[us]")
    out["outtime"] = pd.Series(outtime, index=out.index).astype("datetime64[us]")
    return out.loc[visits.index]


def write_meds(marts: Mapping[str, pd.DataFrame], out_dir: str | Path, *,
               mimic_tables: Mapping[str, pd.DataFrame] | None = None,
               dataset_name: str = SYNTHETIC_DATASET_NAME, shard_rows: int = 1_000_000,
               overwrite: bool = False) -> ExportResult:
    """MEDS 0.4 of a synthetic cohort through the same exporter as the real one (`core/meds.export_meds`),
    read from an in-memory DuckDB: every subject in split `train`, ICD descriptions from the cohort's
    D_ICD_* tables when `mimic_tables` holds them."""
    import duckdb
    import pyarrow.parquet as pq

    from synehrgy_assets.core.meds import MedsSource, export_meds

    _check_marts(marts)
    marts = dict(marts, visits=visits_with_times(marts["visits"], mimic_tables))
    con = duckdb.connect()
    try:
        con.execute("create schema synthetic")
        for name in MART_TABLES:
            con.register("_frame", _plain(marts[name]))
            con.execute(f"create table synthetic.{name} as select * from _frame")
            con.unregister("_frame")
        dictionaries = None
        if mimic_tables and {"D_ICD_DIAGNOSES", "D_ICD_PROCEDURES"} <= set(mimic_tables):
            dictionaries = "synthetic_mimic"
            con.execute("create schema synthetic_mimic")
            for name in ("D_ICD_DIAGNOSES", "D_ICD_PROCEDURES"):
                con.register("_frame", _plain(mimic_tables[name]))
                con.execute(f'create table synthetic_mimic."{name}" as select * from _frame')
                con.unregister("_frame")
        source = MedsSource.in_schema("synthetic", dictionaries_schema=dictionaries)
        with replaced_dir(out_dir, overwrite=overwrite, what="meds") as work:
            summary = export_meds(con, work, shard_rows=shard_rows, dataset_name=dataset_name, source=source)
            rows = {str(p.relative_to(work)): int(pq.read_metadata(p).num_rows) for p in sorted(work.rglob("*.parquet"))}
    finally:
        con.close()
    return ExportResult("meds", Path(out_dir), rows, details={
        "dataset_version": summary.dataset_version, "events": summary.events, "subjects": summary.subjects,
        "codes": summary.codes, "shards": summary.shards})


def export_cohort(fmt: str, out_dir: str | Path, marts: Mapping[str, pd.DataFrame],
                  mimic_tables: Mapping[str, pd.DataFrame], *, overwrite: bool = False, **kwargs) -> ExportResult:
    """Write a cohort in one of FORMATS: `parquet` (the marts- and MIMIC-shaped tables, one file each, as
    in the release's `tables/`), `mimic-csv` (the MIMIC-III CSV layout of the full release, `TABLE.csv.gz`),
    `mimic-csv-plain` (the same as plain `TABLE.csv`) or `meds` (MEDS 0.4)."""
    if fmt == "parquet":
        _check_marts(marts)
        return write_parquet({**mimic_tables, **{t: marts[t] for t in MART_TABLES}}, out_dir, overwrite=overwrite)
    if fmt == "mimic-csv":
        return write_mimic_csv(mimic_tables, out_dir, overwrite=overwrite, **kwargs)
    if fmt == "mimic-csv-plain":
        return write_mimic_csv(mimic_tables, out_dir, compress=False, overwrite=overwrite, **kwargs)
    if fmt == "meds":
        return write_meds(marts, out_dir, mimic_tables=mimic_tables, overwrite=overwrite, **kwargs)
    raise ValueError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")


def read_parquet_cohort(tables_dir: str | Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """(marts, MIMIC tables) from a folder of `<name>.parquet` files (a release's `tables/`)."""
    tables_dir = Path(tables_dir)
    frames = {p.stem: pd.read_parquet(p) for p in sorted(tables_dir.glob("*.parquet"))}
    marts = {t: frames.pop(t) for t in MART_TABLES if t in frames}
    _check_marts(marts)
    return marts, frames
