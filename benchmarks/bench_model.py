"""Benchmark the GPT trainer and KV-cached sampler on the current device; prints one JSON line.

    PYTHONPATH=. python benchmarks/bench_model.py --n-layer 4 --n-embd 256 --n-ctx 512 --batch-size 16

Training runs the real `train()` on random-token windows (no validation); sampling runs the real
`sample()` on the untrained model, whose rows rarely emit eos, so every row runs to
`max_new_tokens` (the worst case, as in ~28% of the reference's rows). Warm-up runs are untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from synehrgy_assets.core.model import GPT, GPTConfig
from synehrgy_assets.core.sampler import sample
from synehrgy_assets.core.devices import resolve_device, resolve_precision
from synehrgy_assets.core.trainer import TrainConfig, train
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script

PAD, BOS, EOS = 0, 1, 2


def machine_info(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = info["cpu"]
    return info


def make_windows(n: int, n_ctx: int, vocab: int, mixed: bool, rng: np.random.Generator) -> list[np.ndarray]:
    if mixed:
        lengths = rng.integers(max(2, n_ctx // 4), n_ctx + 2, size=n)
    else:
        lengths = np.full(n, n_ctx + 1)
    return [np.concatenate([[BOS], rng.integers(3, vocab, size=int(L) - 1)]).astype(np.int64) for L in lengths]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab-size", type=int, default=5115)
    p.add_argument("--n-ctx", type=int, default=512)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps first")
    p.add_argument("--mixed-lengths", action="store_true", help="windows of n_ctx/4..n_ctx+1 tokens")
    p.add_argument("--sample-n", type=int, default=64)
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-sample", action="store_true")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    cfg = GPTConfig(vocab_size=args.vocab_size, n_ctx=args.n_ctx, n_layer=args.n_layer, n_head=args.n_head,
                    n_embd=args.n_embd, dropout=0.1)
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    rng = np.random.default_rng(0)
    report: dict = {
        "machine": machine_info(device),
        "precision": precision,
        "model": cfg.to_dict() | {"num_parameters": model.num_parameters()},
    }

    if not args.skip_train:
        n_windows = args.batch_size * max(args.train_steps, args.warmup_steps) * 2
        windows = make_windows(n_windows, args.n_ctx, args.vocab_size, args.mixed_lengths, rng)
        common = dict(batch_size=args.batch_size, device=str(device), precision=precision, warmup_steps=0,
                      log_every=10**9, compile=args.compile)
        if args.warmup_steps:
            train(model, windows, [], TrainConfig(max_steps=args.warmup_steps, **common), pad_id=PAD)
        result = train(model, windows, [], TrainConfig(max_steps=args.train_steps, **common), pad_id=PAD)
        report["train"] = {
            "batch_size": args.batch_size,
            "mixed_lengths": args.mixed_lengths,
            "steps": result.steps,
            "seconds": round(result.seconds, 4),
            "steps_per_second": round(result.steps / result.seconds, 3),
            "tokens_per_second": round(result.tokens_per_second, 1),
            "peak_memory_mb": round(result.peak_memory_bytes / 2**20, 1),
            "peak_memory_kind": result.peak_memory_kind,
        }

    if not args.skip_sample:
        max_new = min(args.max_new_tokens, args.n_ctx - 1)
        kwargs = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_tokens_per_patient=max_new, batch_size=args.sample_batch,
                      device=device, precision=precision)
        sample(model, min(args.sample_batch, 8), **{**kwargs, "max_tokens_per_patient": min(max_new, 16)})  # warm-up
        t0 = time.perf_counter()
        res = sample(model, args.sample_n, seed=1, **kwargs)
        wall = time.perf_counter() - t0
        report["sample"] = {
            "n_samples": args.sample_n,
            "batch_size": args.sample_batch,
            "max_new_tokens": max_new,
            "n_finished": res.n_finished,
            "tokens_generated": res.tokens_generated,
            "seconds": round(wall, 4),
            "patients_per_second": round(res.patients_per_second, 3),
            "tokens_per_second": round(res.tokens_per_second, 1),
        }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
