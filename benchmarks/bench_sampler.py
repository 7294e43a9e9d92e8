"""Sampler throughput (CPU, or `--device cuda`): the old batch-synchronous sampler (commit
9051ca9) against the continuous-batching one, on the same model and vocabulary, side by side in one run.

    PYTHONPATH=. python benchmarks/bench_sampler.py

The model is a random-init small GPT (fixed seed) over a real token vocabulary (fitted on the
tests' synthetic cohort, or `--vocabulary token_vocabulary.json`), under the real grammar
constraint. A random model almost never closes a patient, so every row would run to the cap and
batching could not matter; `--closing-bias` adds a bias to the logits of the tokens that close a
row, a visit and a patient, which gives patients of varied lengths, as a trained model does.

Rows: the old sampler (cap n_ctx - 1, numpy masks), the new one with the same cap (numpy masks,
and torch masks as `generate_sequences` builds them), and the new one uncapped by n_ctx
(`--long-cap`, the window slides with `ContextFormat.roll`). Prints the command, the CPU model,
one table and one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _machine import cpu_model  # noqa: E402
from synehrgy_assets.core.model import GPT, GPTConfig  # noqa: E402
from synehrgy_assets.core.sampler import sample  # noqa: E402
from synehrgy_assets.core.devices import resolve_device  # noqa: E402
from synehrgy_assets.core.tokens import GrammarConstraint, TokenType, TokenVocabulary, VocabularyConfig  # noqa: E402

OLD_COMMIT = "9051ca9"


def load_old_sampler():
    """The sampler module as of OLD_COMMIT, imported from a temporary file."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:synehrgy_assets/core/sampler.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_sampler.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_sampler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def vocabulary(path: str | None) -> TokenVocabulary:
    if path:
        return TokenVocabulary.from_json(path)
    from tests.helpers.toy_cohort import synthetic_cohort

    return TokenVocabulary.fit(synthetic_cohort(400, seed=1), VocabularyConfig())


def build_model(vocab: TokenVocabulary, args) -> GPT:
    torch.manual_seed(args.seed)
    cfg = GPTConfig(vocab_size=vocab.size, n_ctx=args.n_ctx, n_layer=args.n_layer, n_head=args.n_head,
                    n_embd=args.n_embd, dropout=0.0, condition_table=vocab.condition_table())
    model = GPT(cfg).eval()
    if args.closing_bias:
        head = nn.Linear(cfg.n_embd, vocab.size, bias=True)
        head.weight = model.tok_emb.weight
        with torch.no_grad():
            head.bias.zero_()
            closing = np.isin(vocab.token_types, [TokenType.END_LABEL, TokenType.END_CODE, TokenType.END_TS,
                                                  TokenType.EOS])
            head.bias[torch.from_numpy(closing)] = args.closing_bias
        model.lm_head = head
    return model


def row(name: str, cap: int, res, seconds: float, n: int, lengths: np.ndarray, **extra) -> dict:
    return {
        "sampler": name, "cap": cap, "patients": n, "seconds": round(seconds, 2),
        "patients_per_s": round(n / seconds, 2), "tokens_per_s": round(float(lengths.sum() - n) / seconds, 1),
        "tokens_mean": round(float(lengths.mean()), 1), "tokens_p50": float(np.median(lengths)),
        "tokens_max": int(lengths.max()), **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--closing-bias", type=float, default=3.0)
    parser.add_argument("--long-cap", type=int, default=0, help="cap of the uncapped-by-n_ctx run; 0 = 4 * n_ctx")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a tiny model gains nothing from more, and OpenMP barriers make "
                        "timings noisy on a shared box); 0 = torch's default")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per sampler; the fastest is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (the masks live on this device too)")
    parser.add_argument("--vocabulary", default=None, help="a token_vocabulary.json; default: fit on the tests' cohort")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"command: {command}")
    print(f"cpu: {cpu_model()} ({torch.get_num_threads()} torch threads), torch {torch.__version__}")

    device = resolve_device(args.device)
    vocab = vocabulary(args.vocabulary)
    model = build_model(vocab, args)
    old = load_old_sampler()
    cap = args.n_ctx - 1
    long_cap = args.long_cap or 4 * args.n_ctx
    n = args.patients
    common = dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id, batch_size=args.batch_size,
                  seed=args.seed, top_k=args.top_k or None, device=device)
    try:
        from synehrgy_assets.core.tokens.context import ContextFormat

        roll, roll_name = ContextFormat(vocab, args.n_ctx).roll, "ContextFormat.roll"
    except ImportError:
        roll, roll_name = (lambda t: np.concatenate([t[:1], t[-args.n_ctx // 2:]])), "<s> + last n_ctx/2"

    # Warm-up (untimed): first calls allocate and JIT nothing, but the first torch ops are slow.
    sample(model, 2, max_tokens_per_patient=16, constraint=GrammarConstraint(vocab), **{**common, "batch_size": 2})
    rows = []

    def timed(fn):
        best = float("inf")
        for _ in range(max(args.repeats, 1)):
            start = time.perf_counter()
            res = fn()
            best = min(best, time.perf_counter() - start)
        return res, best

    res, s = timed(lambda: old.sample(model, n, max_new_tokens=cap, constraint=GrammarConstraint(vocab), **common))
    lengths = np.array([len(x) for x in res.sequences])
    reference = res.sequences
    rows.append(row(f"old ({OLD_COMMIT}), numpy masks", cap, res, s, n, lengths, forced=None, rolls=0,
                    row_util=None))
    variants = [
        ("new, numpy masks", cap, None, GrammarConstraint(vocab)),
        ("new, torch masks", cap, None, GrammarConstraint(vocab, device=device)),
        (f"new, torch masks, roll ({roll_name})", long_cap, roll, GrammarConstraint(vocab, device=device)),
    ]
    for name, c, r, constraint in variants:
        res, s = timed(lambda: sample(model, n, max_tokens_per_patient=c, constraint=constraint, roll=r, **common))
        lengths = np.array([len(x) for x in res.sequences])
        rows.append(row(name, c, res, s, n, lengths, forced=res.n_forced_closures, rolls=res.n_rolls,
                        row_util=round(res.row_utilization, 3)))

    keys = ["sampler", "cap", "patients", "seconds", "patients_per_s", "tokens_per_s", "tokens_mean", "tokens_p50",
            "tokens_max", "forced", "rolls", "row_util"]
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)))
    old_mean = float(np.mean([len(x) for x in reference]))
    print(f"(old sampler: the same model and seed; its mean length {old_mean:.1f} differs from the new one's only "
          "because patients draw from the generator in another order)")
    print(json.dumps({"bench": "sampler", "command": command, "cpu": cpu_model(),
                      "threads": torch.get_num_threads(), "vocab_size": vocab.size, "args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
