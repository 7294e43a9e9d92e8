"""Our trainer and sampler against a Hugging Face GPT-2 set up like the reference, side by side in one run.

    pip install -e ".[bench]"      # transformers, benchmark-only
    PYTHONPATH=. python benchmarks/bench_vs_huggingface.py                      # CPU, small sizes
    PYTHONPATH=. python benchmarks/bench_vs_huggingface.py --tokens-dir .synehrgy/artifacts/tokens \
        --train-steps 30 --train-batch 64 --gen-patients 1024 --gen-batch 256   # GPU, full scale

Training (tokens/s and MFU, same token windows, same shape: 4 layers, 4 heads, width 384, n_ctx 1024):
- ours: `trainer.train` (packed rows of n_ctx, block-diagonal fused SDPA attention, bf16 autocast
  and fused AdamW on CUDA, fp32 on CPU), `--train-batch` packed rows per step;
- baseline: `transformers.GPT2LMHeadModel`, fp32, every window padded to n_ctx (labels -100 on
  padding), torch AdamW, `--train-batch` windows per step, as the reference's HF Trainer feeds it.
  Its attention is transformers' default (`sdpa`), a stronger baseline than the reference's era.
Tokens/s counts supervised target tokens (no padding) per second of optimizer steps, after
untimed warm-up steps. MFU = (6 N + 12 L d T) x tokens/s / peak, N = weights in matmuls
(blocks + head), T = n_ctx (PaLM's accounting, the same formula for both); peak = `--peak-tflops`
or the device's bf16 dense peak when known (`_machine.gpu_bf16_peak`: H100 SXM 989, PCIe 756, NVL 835); on CPU the peak is a
measured fp32 matmul rate (`cpu_matmul_tflops`), so CPU MFU reads "share of this CPU's GEMM speed".

Generation (patients/s, from the same trained weights): our trained GPT (no outcome conditioning
or clocks, so it maps one to one onto GPT-2) is converted into a `GPT2LMHeadModel` (logits checked
equal); ours: `sampler.sample` (continuous batching, KV cache, grammar constraint, masks on the
model's device), HF: `generate(do_sample=True, top_k=50, max_length=..., eos=</s>)` with batches
of `<s>` prompts, as the reference does. Both: top-k 50, temperature 1, stop at `</s>`.

Token data: `--tokens-dir` (a `token_sequences` folder, e.g. the full-scale synthetic hospital's
`.synehrgy/artifacts/tokens` after command 1; real data stays on the machine, only timings print)
or, by default, the tests' synthetic cohort tokenized with a fitted vocabulary. Prints the command,
the machine, two tables and one JSON line (also appended to benchmarks/out/vs_huggingface.jsonl).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _machine import cpu_model, gpu_bf16_peak  # noqa: E402
from synehrgy_assets.core.model import GPT, GPTConfig  # noqa: E402
from synehrgy_assets.core.sampler import sample  # noqa: E402
from synehrgy_assets.core.tokens import GrammarConstraint, TokenVocabulary  # noqa: E402
from synehrgy_assets.core.devices import resolve_device, resolve_precision  # noqa: E402
from synehrgy_assets.core.trainer import TrainConfig, init_model, train  # noqa: E402

# ---------------------------------------------------------------- data


def load_token_data(args) -> tuple[TokenVocabulary, list[np.ndarray], np.ndarray]:
    """(vocabulary, train windows, context lengths): windows of at most n_ctx + 1 tokens."""
    if args.tokens_dir:
        from synehrgy_assets.core.tokens import ContextWindows, TokenSequences

        root = Path(args.tokens_dir)
        # the workspace layout: <home>/private/token_sequences and <home>/artifacts/vocabulary/
        vocab_path = Path(args.vocabulary) if args.vocabulary else \
            root.parent.parent / "artifacts" / "vocabulary" / "token_vocabulary.json"
        vocab = TokenVocabulary.from_json(vocab_path)
        seqs = TokenSequences.load(root / "train")
        cw = ContextWindows.load(root / "train" / "windows")
        windows, context = cw.arrays(seqs), np.asarray(cw.context_lengths, dtype=np.int64)
    else:
        from synehrgy_assets.core.tokens import VocabularyConfig, encode
        from tests.helpers.toy_cohort import synthetic_cohort

        cohort = synthetic_cohort(args.cohort_patients, seed=1, max_visits=4, rows_per_visit=40)
        vocab = TokenVocabulary.fit(cohort, VocabularyConfig())
        seqs = encode(cohort, vocab)
        # The reference's truncation: each patient's first n_ctx + 1 tokens (no context windows).
        windows = [seqs.patient(i)[: args.n_ctx + 1].astype(np.int64) for i in range(len(seqs))]
        context = np.zeros(len(windows), dtype=np.int64)
    too_long = [i for i, w in enumerate(windows) if not 2 <= len(w) <= args.n_ctx + 1]
    if too_long:
        raise ValueError(f"{len(too_long)} of {len(windows)} windows are not 2..{args.n_ctx + 1} tokens long "
                         f"(window {too_long[0]}: {len(windows[too_long[0]])}): encode the tokens with "
                         f"n_ctx={args.n_ctx} or pass the n_ctx they were made with (--n-ctx)")
    return vocab, windows, context


# ---------------------------------------------------------------- FLOPs and peak


def flops_per_token(n_layer: int, n_embd: int, vocab: int, n_ctx: int) -> float:
    n_matmul = n_layer * 12 * n_embd * n_embd + vocab * n_embd
    return 6.0 * n_matmul + 12.0 * n_layer * n_embd * n_ctx


def peak_flops(device: torch.device, args) -> tuple[float, str]:
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "--peak-tflops"
    if device.type == "cuda":
        return gpu_bf16_peak(torch.cuda.get_device_name(device))
    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        a @ b
        n += 1
    rate = n * 2 * 1024 ** 3 / (time.perf_counter() - start)
    return rate, f"measured fp32 1024^3 matmul ({rate / 1e12:.3f} TFLOP/s)"


# ---------------------------------------------------------------- training


def train_ours(windows, context, vocab, args, device) -> tuple[GPT, dict]:
    cfg = GPTConfig(vocab_size=vocab.size, n_ctx=args.n_ctx, n_layer=args.n_layer, n_head=args.n_head,
                    n_embd=args.n_embd, dropout=args.dropout)
    common = dict(epochs=1000, batch_size=args.train_batch, learning_rate=args.lr, warmup_steps=2, eval_every=0,
                  patience=None, device=str(device), precision="auto", checkpoint_every=0, seed=0)
    warm = init_model(cfg, 0)
    train(warm, windows, [], TrainConfig(max_steps=args.warmup_steps, log_every=args.warmup_steps, **common),
          pad_id=vocab.pad_id, train_context=context)
    model = init_model(cfg, 0)
    res = train(model, windows, [], TrainConfig(max_steps=args.train_steps, log_every=args.train_steps, **common),
                pad_id=vocab.pad_id, train_context=context)
    return model, {"tokens_per_s": res.tokens_per_second, "steps": res.steps, "tokens": res.tokens_seen,
                   "seconds": res.tokens_seen / res.tokens_per_second, "precision": res.precision,
                   "padding_fraction": res.padding_fraction, "final_loss": res.final_train_loss}


def hf_config(vocab, args):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab.size, n_positions=args.n_ctx, n_embd=args.n_embd, n_layer=args.n_layer,
                      n_head=args.n_head, resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=0.0,
                      activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=vocab.bos_id,
                      eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id, tie_word_embeddings=True)


def padded_batch(windows, context, idx, n_ctx, pad_id, device):
    ids = np.full((len(idx), n_ctx), pad_id, dtype=np.int64)
    labels = np.full((len(idx), n_ctx), -100, dtype=np.int64)
    mask = np.zeros((len(idx), n_ctx), dtype=np.int64)
    for r, i in enumerate(idx):
        w = windows[i][:n_ctx]
        ids[r, : len(w)] = w
        mask[r, : len(w)] = 1
        first = max(1, int(context[i]))
        labels[r, first: len(w)] = w[first:]  # HF shifts labels by one inside the model
    t = [torch.from_numpy(a).to(device) for a in (ids, labels, mask)]
    return t[0], t[1], t[2], int((labels[:, 1:] != -100).sum())


def train_hf(windows, context, vocab, args, device) -> dict:
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(hf_config(vocab, args)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    order = np.random.default_rng(0).permutation(len(windows))
    steps = args.warmup_steps + args.train_steps
    tokens, seconds, loss = 0, 0.0, float("nan")
    for step in range(steps):
        pick = order[(np.arange(args.train_batch) + step * args.train_batch) % len(order)]
        ids, labels, mask, n = padded_batch(windows, context, pick, args.n_ctx, vocab.pad_id, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss = float(out.loss.item())  # syncs, as the HF Trainer's logging does
        if step >= args.warmup_steps:
            seconds += time.perf_counter() - t0
            tokens += n
    positions = args.train_steps * args.train_batch * args.n_ctx
    return {"tokens_per_s": tokens / seconds, "steps": args.train_steps, "tokens": tokens, "seconds": seconds,
            "precision": "fp32", "padding_fraction": 1 - tokens / positions, "final_loss": loss}


# ---------------------------------------------------------------- generation


def to_hf(model: GPT, vocab, args):
    """Our GPT's weights in a GPT2LMHeadModel (Conv1D weights are the transposed Linear ones)."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(hf_config(vocab, args)).eval()
    src = model.state_dict()
    dst = {"transformer.wte.weight": src["tok_emb.weight"], "transformer.wpe.weight": src["pos_emb.weight"],
           "transformer.ln_f.weight": src["ln_f.weight"], "transformer.ln_f.bias": src["ln_f.bias"],
           "lm_head.weight": src["tok_emb.weight"]}
    for i in range(args.n_layer):
        s, d = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
            dst[d + theirs + ".weight"], dst[d + theirs + ".bias"] = src[s + ours + ".weight"], src[s + ours + ".bias"]
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                             ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            dst[d + theirs + ".weight"] = src[s + ours + ".weight"].t().contiguous()
            dst[d + theirs + ".bias"] = src[s + ours + ".bias"]
    missing, unexpected = hf.load_state_dict(dst, strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
    if missing or unexpected:
        raise RuntimeError(f"weight conversion: missing {missing}, unexpected {unexpected}")
    x = torch.randint(3, vocab.size, (2, 64))
    with torch.no_grad():
        diff = (hf(input_ids=x).logits - model.eval()(x)[0]).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"weight conversion: logits differ by {diff:.2e}")
    return hf, diff


def generate_ours(model: GPT, vocab, args, device) -> dict:
    model = model.to(device).eval()
    kw = dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id, top_k=50, temperature=1.0,
              batch_size=args.gen_batch, max_tokens_per_patient=args.max_length - 1, device=device)
    constraint = GrammarConstraint(vocab, device=device if device.type == "cuda" else None)
    sample(model, min(8, args.gen_patients), constraint=constraint, **{**kw, "batch_size": 8, "seed": 1})
    start = time.perf_counter()
    res = sample(model, args.gen_patients, constraint=constraint, seed=0, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    lengths = np.array([len(s) for s in res.sequences])
    return {"patients_per_s": args.gen_patients / seconds, "seconds": seconds, "tokens_mean": float(lengths.mean()),
            "finished": int(res.n_finished) - int(res.n_forced_closures), "forced_closures": int(res.n_forced_closures),
            "precision": res.precision}


def generate_hf(hf, vocab, args, device) -> dict:
    hf = hf.to(device).eval()
    kw = dict(do_sample=True, top_k=50, top_p=1.0, temperature=1.0, max_length=args.max_length,
              eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id)
    prompt = lambda n: torch.full((n, 1), vocab.bos_id, dtype=torch.long, device=device)  # noqa: E731
    with torch.no_grad():
        n = min(8, args.gen_patients)
        hf.generate(prompt(n), attention_mask=torch.ones((n, 1), dtype=torch.long, device=device), max_new_tokens=16,
                    **{k: v for k, v in kw.items() if k != "max_length"})
        torch.manual_seed(0)
        lengths, done = [], 0
        start = time.perf_counter()
        while done < args.gen_patients:
            n = min(args.gen_batch, args.gen_patients - done)
            out = hf.generate(prompt(n), attention_mask=torch.ones((n, 1), dtype=torch.long, device=device), **kw)
            ends = (out == vocab.eos_id).int().argmax(dim=1)
            has = (out == vocab.eos_id).any(dim=1)
            lengths += torch.where(has, ends + 1, torch.full_like(ends, out.shape[1])).tolist()
            done += n
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {"patients_per_s": args.gen_patients / seconds, "seconds": seconds,
            "tokens_mean": float(np.mean(lengths)), "finished": int(sum(1 for n in lengths if n < args.max_length)),
            "precision": "fp32"}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens-dir", default="", help="a token_sequences folder; default: the tests' synthetic cohort")
    p.add_argument("--vocabulary", default="", help="token_vocabulary.json (default: beside --tokens-dir)")
    p.add_argument("--cohort-patients", type=int, default=300)
    p.add_argument("--n-ctx", type=int, default=1024)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--train-batch", type=int, default=4, help="packed rows (ours) / padded windows (HF) per step")
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--gen-patients", type=int, default=64)
    p.add_argument("--gen-batch", type=int, default=64, help="the reference: 256")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per patient including <s> (the reference: 1024)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--skip", default="", help="comma list of parts to skip: train, generate")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    machine = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
    import transformers

    machine["transformers"] = transformers.__version__
    print(f"command: {command}")
    print("machine: " + json.dumps(machine))

    vocab, windows, context = load_token_data(args)
    lengths = np.array([len(w) for w in windows])
    print(f"data: {len(windows)} windows, mean {lengths.mean():.0f} tokens (max {lengths.max()}), vocab {vocab.size}")
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"command": command, "machine": machine, "windows": len(windows),
                 "window_tokens_mean": float(lengths.mean()), "precision_ours": resolve_precision("auto", device)}
    fpt = flops_per_token(args.n_layer, args.n_embd, vocab.size, args.n_ctx)
    peak, peak_source = peak_flops(device, args)
    out["peak_flops"], out["peak_source"] = peak, peak_source

    model = None
    if "train" not in skip:
        ours_model, ours = train_ours(windows, context, vocab, args, device)
        model = ours_model
        hf = train_hf(windows, context, vocab, args, device)
        for row in (ours, hf):
            row["mfu"] = fpt * row["tokens_per_s"] / peak if math.isfinite(peak) else float("nan")
        out["train"] = {"ours": ours, "hf": hf, "ratio": ours["tokens_per_s"] / hf["tokens_per_s"]}
        print("\n| training | precision | target tokens/s | padding | MFU | steps x batch |")
        print("|---|---|---:|---:|---:|---|")
        for name, row in (("ours (packed)", ours), ("HF GPT-2 (padded to n_ctx)", hf)):
            print(f"| {name} | {row['precision']} | {row['tokens_per_s']:,.0f} | {row['padding_fraction']:.1%} | "
                  f"{row['mfu']:.2%} | {row['steps']} x {args.train_batch} |")
        print(f"ratio ours / HF: {out['train']['ratio']:.2f}x (MFU peak: {peak_source})")
    if "generate" not in skip:
        if model is None:
            cfg = GPTConfig(vocab_size=vocab.size, n_ctx=args.n_ctx, n_layer=args.n_layer, n_head=args.n_head,
                            n_embd=args.n_embd, dropout=args.dropout)
            model = init_model(cfg, 0)
        model = model.cpu().float()
        hf_model, diff = to_hf(model, vocab, args)
        ours_g = generate_ours(model, vocab, args, device)
        hf_g = generate_hf(hf_model, vocab, args, device)
        out["generate"] = {"ours": ours_g, "hf": hf_g, "ratio": ours_g["patients_per_s"] / hf_g["patients_per_s"],
                           "logit_max_abs_diff": diff}
        print(f"\n| generation ({args.gen_patients} patients, batch {args.gen_batch}, top-k 50, max {args.max_length}) "
              "| patients/s | tokens/patient | emitted </s> itself |")
        print("|---|---:|---:|---:|")
        for name, row in (("ours (continuous batching, grammar)", ours_g), ("HF generate", hf_g)):
            print(f"| {name} | {row['patients_per_s']:.2f} | {row['tokens_mean']:.0f} | "
                  f"{row['finished']}/{args.gen_patients} |")
        print(f"ratio ours / HF: {out['generate']['ratio']:.2f}x (same weights; logits differ by {diff:.1e})")
    line = json.dumps(out)
    print(line)
    results = REPO / "benchmarks" / "out"
    results.mkdir(exist_ok=True)
    with open(results / "vs_huggingface.jsonl", "a") as f:
        f.write(line + "\n")
    return out


if __name__ == "__main__":
    main()
