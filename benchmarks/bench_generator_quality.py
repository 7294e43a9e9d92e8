"""Generator quality ablation: train, generate and evaluate variants side by side on one staged cohort.

Measures what makes the generator learn how measurements depend on the outcome (a faithful
generator): model size and epochs, outcome conditioning, the mortality loss weight. Each variant
runs the pure core exactly as the graph does (vocabulary on train, context windows, packed
training with early stopping, sliding-window generation, decoding, `metrics.evaluate` against
real train with the real-test baseline) and prints the quality targets.

    # a warehouse staged by README command 1 (real marts + synehrgy.patient_split):
    python benchmarks/bench_generator_quality.py --duckdb .synehrgy/warehouse.duckdb \
        --variants default,no_conditioning --patients 500

Only aggregates are printed (no patient rows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import cpu_model  # noqa: E402

BASE = {
    "n_layer": 2, "n_head": 4, "n_embd": 128, "dropout": 0.1, "epochs": 12.0, "batch_size": 8,
    "learning_rate": 2e-3, "conditioning": True, "mortality_weight": 1.0, "n_ctx": 512, "clocks": True,
}
VARIANTS = {
    "default": {},
    "no_conditioning": {"conditioning": False},
    "no_clocks": {"clocks": False},
    "mortality_weight_10": {"mortality_weight": 10.0},
    "wider": {"n_embd": 192, "n_head": 6},
    "deeper": {"n_layer": 4},
    "epochs_4": {"epochs": 4.0},
    "epochs_16": {"epochs": 16.0},
}
HEADLINE = ("fidelity/mortality_rate_synthetic", "fidelity/mortality_rate_real", "utility/tstr_auroc",
            "utility/trtr_auroc", "utility/auroc_ratio", "fidelity/code_prevalence_pearson",
            "fidelity_baseline/code_prevalence_pearson")


def load(con):
    from synehrgy_assets.core.cohort import load_staged_cohort

    out = {}
    for split in ("train", "val", "test"):
        ids = con.sql(f"select subject_id from synehrgy.patient_split where split = '{split}' "
                      "order by subject_id").fetchnumpy()["subject_id"]
        out[split] = load_staged_cohort(con, ids)
    return out


def mortality_calibration(model, windows, vocab) -> dict:
    """Mean model P(MORTALITY//1) at every supervised MORTALITY target vs the observed share.

    Separates training from sampling: a model whose mean predicted probability matches the
    observed rate but whose sampled cohort has fewer deaths points at the sampler; a mean below
    the observed rate points at training. Aggregates only (over all target visits of a split).
    The logit gaps are those outcome calibration fits on (core/calibration.py).
    """
    from synehrgy_assets.core.calibration import outcome_logit_gaps

    gaps, labels = outcome_logit_gaps(model, windows.arrays(), windows.context_lengths, vocab.mortality_base,
                                      vocab.mortality_base + 1, vocab.pad_id)
    return {"mean_p_death": round(float(np.mean(1 / (1 + np.exp(-gaps)))), 4),
            "observed_death_share": round(float(labels.mean()), 4), "n_targets": len(labels)}


def run_variant(name: str, params: dict, cohorts: dict, n_patients: int, seed: int, threads: int,
                temperatures: tuple[float, ...] = (1.0,), calibrations: tuple[bool, ...] = (True,)) -> list[dict]:
    import torch

    from synehrgy_assets.core.calibration import calibrate_outcome
    from synehrgy_assets.core.generation import generate_sequences
    from synehrgy_assets.core.model import set_logit_bias
    from synehrgy_assets.core.metrics import evaluate
    from synehrgy_assets.core.model import GPTConfig
    from synehrgy_assets.core.quality_targets import quality_targets
    from synehrgy_assets.core.tokens import TokenVocabulary, decode, encode
    from synehrgy_assets.core.tokens.windows import context_windows
    from synehrgy_assets.core.trainer import TrainConfig, init_model, train

    torch.set_num_threads(threads)
    started = time.perf_counter()
    vocab = TokenVocabulary.fit(cohorts["train"])
    windows = {s: context_windows(encode(cohorts[s], vocab), vocab, params["n_ctx"]) for s in ("train", "val")}
    model_config = GPTConfig(
        vocab_size=vocab.size, n_ctx=params["n_ctx"], n_layer=params["n_layer"], n_head=params["n_head"],
        n_embd=params["n_embd"], dropout=params["dropout"],
        condition_table=vocab.condition_table() if params["conditioning"] else None,
        clocks=vocab.clocks() if params["clocks"] else None)
    model = init_model(model_config, seed)
    weights = np.ones(vocab.size, dtype=np.float32)
    weights[vocab.mortality_base:vocab.mortality_base + 2] = params["mortality_weight"]
    config = TrainConfig(epochs=params["epochs"], batch_size=params["batch_size"],
                         learning_rate=params["learning_rate"], seed=seed, device="cpu")
    def on_log(entry: dict) -> None:
        if entry.get("val_loss") is not None:
            print(f"  [{name}] step {entry['step']} train {entry['train_loss']:.3f} val {entry['val_loss']:.3f}",
                  file=sys.stderr, flush=True)

    result = train(model, windows["train"].arrays(), windows["val"].arrays(), config, pad_id=vocab.pad_id,
                   on_log=on_log,
                   train_context=windows["train"].context_lengths, val_context=windows["val"].context_lengths,
                   token_types=vocab.token_types,
                   loss_weights=None if params["mortality_weight"] == 1.0 else weights)
    trained = time.perf_counter()
    calibration = {s: mortality_calibration(model, windows[s], vocab) for s in ("train", "val")}
    print(f"  [{name}] mortality calibration {calibration}", file=sys.stderr, flush=True)
    lengths = np.diff(encode(cohorts["train"], vocab).offsets)
    cap = int(np.ceil(1.25 * np.percentile(lengths, 99.9) / 1024) * 1024)
    results = []
    shift = calibrate_outcome(model, windows["train"].arrays(), windows["train"].context_lengths,
                              vocab.mortality_base, vocab.mortality_base + 1, vocab.pad_id).logit_shift
    for calibrated, temperature in [(c, t) for c in calibrations for t in temperatures]:
        set_logit_bias(model, {vocab.mortality_base + 1: shift} if calibrated else {})
        began = time.perf_counter()
        sample = generate_sequences(model, vocab, n_patients, seed=seed, max_tokens_per_patient=cap,
                                    temperature=temperature)
        cohort, report = decode(sample.sequences, vocab, seed=seed)
        generated = time.perf_counter()
        ev = evaluate(cohorts["train"], cohorts["test"], cohort, seed=seed)
        targets = quality_targets(ev.metrics, {"forced_closure_rate": sample.forced_closure_rate,
                                               "validity_rate": report.validity_rate})
        out = {"variant": name, "temperature": temperature, "outcome_logit_shift": round(shift, 4) if calibrated else 0.0,
               **{k: v for k, v in params.items() if BASE.get(k) != v or k == "epochs"},
               "parameters": model.num_parameters(), "steps": result.steps, "best_val_loss": result.best_val_loss,
               "train_s": round(trained - started, 1), "generate_s": round(generated - began, 1),
               "train_tokens_per_s": round(result.tokens_per_second),
               "patients_per_s": round(sample.patients_per_second, 2),
               "targets_met": f"{int(targets['met'].sum())}/{len(targets)}",
               **{k.split("/")[-1] if "baseline" not in k else "baseline_" + k.split("/")[-1]:
                  round(ev.metrics.get(k, float("nan")), 4) for k in HEADLINE},
               "val_loss_by_type": {k: round(v, 3) for k, v in (result.val_loss_by_type or {}).items()},
               "unigram_by_type": {k: round(v, 3) for k, v in (result.unigram_baseline_by_type or {}).items()},
               "forced_closure_rate": sample.forced_closure_rate,
               "mortality_calibration": calibration,
               "mean_los_synthetic": round(float(cohort.visits["los_hours"].mean()), 1),
               "mean_los_real": round(float(cohorts["train"].visits["los_hours"].mean()), 1)}
        for row in targets.itertuples():
            out[f"target/{row.target}"] = (round(float(row.measured), 4), bool(row.met))
        results.append(out)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duckdb", required=True, help="warehouse staged by README command 1")
    parser.add_argument("--variants", default="default,no_conditioning", help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="override a base knob, e.g. epochs=4")
    parser.add_argument("--json", help="append one JSON line per variant to this file")
    parser.add_argument("--calibration", default="on", choices=("on", "off", "both"),
                        help="outcome calibration (core/calibration.py) before sampling; both = sample each way")
    parser.add_argument("--temperatures", default="1.0", help="comma list: sample the trained model at each")
    args = parser.parse_args()

    import duckdb

    base = dict(BASE)
    for item in args.set:
        key, value = item.split("=", 1)
        base[key] = type(BASE[key])(value) if not isinstance(BASE[key], bool) else value.lower() == "true"
    con = duckdb.connect(args.duckdb, read_only=True)
    cohorts = load(con)
    con.close()
    print(f"# {' '.join(sys.argv)}\n# machine: {cpu_model()}, {args.threads} torch threads")
    for name in args.variants.split(","):
        temperatures = tuple(float(x) for x in args.temperatures.split(","))
        for result in run_variant(name, {**base, **VARIANTS[name]}, cohorts, args.patients, args.seed,
                                  args.threads, temperatures,
                                  {"on": (True,), "off": (False,), "both": (False, True)}[args.calibration]):
            print(json.dumps(result, default=str))
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
