"""Writing a whole hospital: a cheap pilot sizes the chunks, then each chunk of patients is drawn
on its own random stream (seed, chunk index) and streamed to the eleven table files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from synehrgy_assets.core.mimic_dictionaries import CodeUniverse, code_universe, dictionary_tables
from synehrgy_assets.core.mimic_tables import HOSPITAL_TABLES, MimicTableWriter, atomic_table_dir, table_filename
from synehrgy_assets.core.synthetic_hospital.chartevents import _chart_events
from synehrgy_assets.core.synthetic_hospital.config import (
    _ROWS_PER_TICK,
    DEFAULT_CHART_DENSITY,
    HospitalConfig,
    HospitalSummary,
)
from synehrgy_assets.core.synthetic_hospital.labevents import _lab_events
from synehrgy_assets.core.synthetic_hospital.structure import _structure
from synehrgy_assets.core.synthetic_hospital.tables import _structure_tables


def _plan(config: HospitalConfig, universe: CodeUniverse) -> tuple[float, int, float]:
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
    universe = code_universe(config.code_dictionary_dir)
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

