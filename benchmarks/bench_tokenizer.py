"""Tokenizer throughput: staged DuckDB marts → token arrays (issue: ≥ 20,000 patients/s on 2 cores).

Reads the marts of a staged warehouse (e.g. the one `bench_staging.py` builds from the
full-scale synthetic hospital, or a workspace's `warehouse.duckdb`), fits the vocabulary on a
sample, then times loading the marts from DuckDB and `encode` separately.

    python benchmarks/bench_tokenizer.py --duckdb /tmp/synehrgy_bench/warehouse.duckdb [--patients N]

Prints one JSON line and appends it to benchmarks/out/tokenizer.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import duckdb
import numpy as np
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script


def main() -> None:
    from synehrgy_assets.core.cohort import load_staged_cohort
    from synehrgy_assets.core.tokenizer import TokenVocabulary, context_windows, encode

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duckdb", required=True, help="a warehouse with the dbt_mimic marts")
    parser.add_argument("--patients", type=int, default=0, help="limit to the first N patients (0 = all)")
    parser.add_argument("--fit-patients", type=int, default=2000, help="patients the vocabulary is fitted on")
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    load_avg_start = os.getloadavg()[0]
    with duckdb.connect(args.duckdb, read_only=True) as con:
        con.execute(f"set threads = {args.threads}")
        ids = con.sql("select subject_id from main.cohort order by subject_id").fetchnumpy()["subject_id"]
        if args.patients:
            ids = ids[: args.patients]
        t0 = time.perf_counter()
        cohort = load_staged_cohort(con, ids)
        load_seconds = time.perf_counter() - t0
    fit_ids = ids[np.linspace(0, len(ids) - 1, min(args.fit_patients, len(ids))).astype(int)]
    vocab = TokenVocabulary.fit(cohort.subset(fit_ids))
    encode(cohort.subset(ids[:50]), vocab)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    seqs = encode(cohort, vocab, n_threads=args.threads)
    encode_seconds = time.perf_counter() - t0
    windows = context_windows(seqs, args.n_ctx)
    n = len(seqs)
    result = {
        "benchmark": "tokenizer_encode",
        "duckdb": args.duckdb,
        "patients": n,
        "visits": int(len(cohort.visits)),
        "measurement_rows": int(len(cohort.measurements)),
        "tokens": int(len(seqs.tokens)),
        "tokens_per_patient": round(len(seqs.tokens) / max(n, 1), 1),
        "load_marts_seconds": round(load_seconds, 2),
        "encode_seconds": round(encode_seconds, 2),
        "encode_patients_per_second": round(n / encode_seconds, 1),
        "end_to_end_patients_per_second": round(n / (encode_seconds + load_seconds), 1),
        "fraction_of_tokens_used": round(windows.fraction_of_tokens_used, 5),
        "fraction_kept_by_plain_truncation": round(windows.reference_fraction, 5),
        "n_ctx": args.n_ctx,
        "threads": args.threads,
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
