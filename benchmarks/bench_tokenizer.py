"""Tokenizer throughput: staged DuckDB marts → token arrays (the target: ≥ 20,000 patients/s on 2 cores).

Reads the marts of a staged warehouse (e.g. the full-scale synthetic hospital staged by
`bench_staging.py`, or a workspace's `warehouse.duckdb`), fits the vocabulary on a sample, then
times two things, each `--repeat` times (the median is reported):

* `encode_marts`: DuckDB marts → token arrays, reading and encoding blocks of patients on
  `--threads` threads (what the `token_sequences` asset runs);
* the two steps apart: `load_staged_cohort` (marts → pandas) and `encode` (pandas → tokens),
  the in-memory step the reference's ~1,900 patients/s figure describes.

Both must give identical arrays (checked).

    python benchmarks/bench_tokenizer.py --duckdb /tmp/synehrgy_bench/full46520.duckdb

Prints one JSON line and appends it to benchmarks/out/tokenizer.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main() -> None:
    from synehrgy_assets.core.cohort import load_staged_cohort
    from synehrgy_assets.core.tokens import TokenVocabulary, context_windows, encode, encode_marts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duckdb", required=True, help="a warehouse with the dbt_mimic marts")
    parser.add_argument("--patients", type=int, default=0, help="limit to the first N patients (0 = all)")
    parser.add_argument("--fit-patients", type=int, default=2000, help="patients the vocabulary is fitted on")
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    load_avg_start = os.getloadavg()[0]
    with duckdb.connect(args.duckdb, read_only=True) as con:
        con.execute(f"set threads = {args.threads}")
        ids = con.sql("select subject_id from main.cohort order by subject_id").fetchnumpy()["subject_id"]
        wanted = ids[: args.patients] if args.patients else None
        fit_ids = ids[np.linspace(0, len(ids) - 1, min(args.fit_patients, len(ids))).astype(int)]
        vocab = TokenVocabulary.fit(load_staged_cohort(con, fit_ids))
        encode_marts(con, vocab, ids[:50])  # warm-up (imports, caches)

        end_to_end = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            seqs = encode_marts(con, vocab, wanted, n_threads=args.threads)
            end_to_end.append(time.perf_counter() - t0)
        load_s, encode_s = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            cohort = load_staged_cohort(con, wanted)
            load_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            apart = encode(cohort, vocab, n_threads=args.threads)
            encode_s.append(time.perf_counter() - t0)
            del cohort
    for name in ("tokens", "offsets", "subject_ids", "visit_starts"):
        if not np.array_equal(getattr(seqs, name), getattr(apart, name)):
            raise SystemExit(f"encode_marts and load_staged_cohort+encode differ in {name}")
    windows_started = time.perf_counter()
    windows = context_windows(seqs, vocab, args.n_ctx)
    windows_s = time.perf_counter() - windows_started
    n = len(seqs)
    median = statistics.median
    result = {
        "benchmark": "tokenizer_encode",
        "duckdb": args.duckdb,
        "patients": n,
        "visits": int(len(seqs.visit_starts)),
        "tokens": int(len(seqs.tokens)),
        "tokens_per_patient": round(len(seqs.tokens) / max(n, 1), 1),
        "encode_marts_seconds": [round(x, 2) for x in end_to_end],
        "encode_marts_patients_per_second": round(n / median(end_to_end), 1),
        "encode_marts_tokens_per_second": round(len(seqs.tokens) / median(end_to_end), 1),
        "load_staged_cohort_seconds": [round(x, 2) for x in load_s],
        "encode_seconds": [round(x, 2) for x in encode_s],
        "encode_patients_per_second": round(n / median(encode_s), 1),
        "context_windows_seconds": round(windows_s, 2),
        "header_in_context_share": round(windows.header_in_context_share, 5),
        "history_in_context_share": round(windows.history_in_context_share, 5),
        "fraction_kept_by_plain_truncation": round(windows.stats["reference_fraction"], 5),
        "n_ctx": args.n_ctx,
        "threads": args.threads,
        "repeat": args.repeat,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "load_average_start": load_avg_start,
        "load_average_end": os.getloadavg()[0],
    }
    line = json.dumps(result)
    print(line)
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    with open(out / "tokenizer.jsonl", "a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
