"""What patient consistency costs: the same trained generator sampled with and without the masks.

Runs on a workspace built by README command 1 (or the demo): its checkpoint and vocabulary in
`artifacts/`, its real marts and patient split in `warehouse.duckdb`. For each setting it samples
`-n` patients with the same seed, times the sampling, decodes, and prints side by side

* patients/s and tokens/s of sampling,
* the quality targets (metrics.evaluate against real train with the real-test baseline),
* the patient rule table (core/patient_rules.py) beside the real test patients' shares.

    .venv/bin/python benchmarks/bench_consistency.py --home .synehrgy -n 500

Only aggregates are printed (shares over >= 10 patients; no patient rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import cpu_model  # noqa: E402


def _latest_checkpoint(home: Path) -> tuple[Path, Path]:
    from synehrgy_assets.core.generation import find_generator_files

    return find_generator_files(home / "artifacts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".synehrgy"))
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import duckdb
    import torch

    from synehrgy_assets.core import patient_rules
    from synehrgy_assets.core.cohort import StagedCohort, load_staged_cohort
    from synehrgy_assets.core.exports import MART_TABLES
    from synehrgy_assets.core.generation import Generator, SamplingParams
    from synehrgy_assets.core.metrics import evaluate
    from synehrgy_assets.core.quality_targets import quality_targets

    torch.set_num_threads(args.threads)
    ckpt, vocab_file = _latest_checkpoint(args.home)
    generator = Generator.from_files(ckpt, vocab_file, device="cpu")
    with duckdb.connect(str(args.home / "warehouse.duckdb"), read_only=True) as con:
        split = {}
        for name in ("train", "test"):
            ids = con.sql(f"select subject_id from synehrgy.patient_split where split = '{name}' "
                          "order by subject_id").fetchnumpy()["subject_id"]
            split[name] = (ids, load_staged_cohort(con, ids))
        real_rules = patient_rules.rule_counts(patient_rules.load_raw_tables(con, split["test"][0]),
                                               "real test patients")
    rows, rules = {}, {}
    for consistency in (True, False):
        params = SamplingParams(seed=args.seed, device="cpu", consistency=consistency)
        out = generator.generate(args.n, params)
        seconds = out.stats["sample_seconds"]
        cohort = StagedCohort(*(out.marts[name] for name in MART_TABLES))
        report = evaluate(split["train"][1], split["test"][1], cohort, seed=args.seed)
        n_seq = out.stats["valid_sequences"] + out.stats["invalid_sequences"]
        targets = quality_targets(report.metrics, {"forced_closure_rate": out.stats["forced_closures"] / n_seq,
                                                   "validity_rate": out.stats["valid_sequences"] / n_seq})
        label = "masks on" if consistency else "masks off"
        rows[label] = {
            "patients/s": args.n / seconds,
            "sample seconds": seconds,
            "tokens/s": out.stats["tokens_per_second"],
            "targets met": f"{int(targets['met'].sum())}/{len(targets)}",
            **{r.target: round(float(r.measured), 3) for r in targets.itertuples()},
        }
        tables = {k.upper(): v for k, v in out.mimic_tables.items()}
        rules[label] = patient_rules.rule_counts(tables, f"synthetic ({label})").set_index("rule")["share"]
    table = pd.DataFrame(rows)
    rule_table = pd.DataFrame(rules)
    rule_table["real test"] = real_rules.set_index("rule")["share"]
    n_real = int(real_rules["n_patients"].max())
    print(json.dumps({"machine": cpu_model(), "threads": args.threads, "n": args.n, "seed": args.seed,
                      "real_test_patients": n_real}))
    print(table.to_markdown())
    print()
    if n_real < 10:
        rule_table["real test"] = None  # fewer than 10 real patients: their shares stay in the workspace
    print((rule_table * 100).round(1).to_markdown())


if __name__ == "__main__":
    main()
