"""The stages of `benchmarks/gpu_check.sh`: every GPU figure of the project, ours against Hugging
Face GPT-2 on the same device in one run, each stage a process of its own that writes its JSON.

    PYTHONPATH=. python3 benchmarks/gpu_bench.py --stage preflight --out $OUT --work /tmp/gpu_check
    PYTHONPATH=. python3 benchmarks/gpu_bench.py --cpu-smoke --stage all --out /tmp/smoke --work /tmp/smoke

Runs with a bare image's python3 (torch, numpy, pandas, pyarrow, transformers; nothing installed):
dagster, mlflow, dbt and duckdb are made unimportable before anything else is imported, so the
core path that it exercises is the one that a GPU worker without them runs. The token data are
made on the spot: the tests' synthetic cohort (numpy only) through the real vocabulary fit and
encoder. `--cpu-smoke` runs every stage at toy sizes on the CPU in seconds (tests/test_gpu_check.py).

Stages (each writes <out>/<stage>.json, rewritten after every measurement so that a stage killed by
its timeout still leaves what it measured; "complete": true once it ends):
- preflight: device, CUDA, torch, transformers, the peak FLOP/s that MFU divides by, FlexAttention;
- data: the cohort, the vocabulary and the token sequences, saved under --work for the next stages;
- train_small / train_mid / train_10m: tokens/s, MFU and peak memory of ours (eager and compiled)
  and of HF GPT-2 (fp32, and bf16 autocast with TF32 matmuls), same windows, same optimizer step;
  train_10m also runs ours compiled with the dense SDPA mask, and profiles which attention kernels ran;
- generate: patients/s of our sampler against HF `generate` at batch 64, 256 and 1,024 (the model
  train_10m saved), and host syncs per decode step of ours.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

BLOCKED = ("dagster", "mlflow", "dbt", "duckdb")


class _Blocker(importlib.abc.MetaPathFinder):
    """Refuses the heavy stack: a GPU image has none of it, so nothing on this path may need it."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"gpu_bench: '{name}' is blocked (a bare GPU image has no {name.split('.')[0]})")
        return None


def block_heavy_imports() -> None:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    if loaded:
        tops = sorted({m.split(".")[0] for m in loaded})
        raise RuntimeError(f"gpu_bench: already imported before the blocker: {tops}")
    if not any(isinstance(f, _Blocker) for f in sys.meta_path):
        sys.meta_path.insert(0, _Blocker())


block_heavy_imports()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._dynamo  # noqa: E402

from _machine import cpu_model, gpu_bf16_peak  # noqa: E402
from synehrgy_assets.core import model as model_mod  # noqa: E402
from synehrgy_assets.core.model import GPTConfig, load_checkpoint, save_checkpoint  # noqa: E402
from synehrgy_assets.core.packing import collate_packed, epoch_rows  # noqa: E402
from synehrgy_assets.core.sampler import sample  # noqa: E402
from synehrgy_assets.core.tokens import GrammarConstraint, TokenVocabulary  # noqa: E402
from synehrgy_assets.core.devices import autocast_context  # noqa: E402
from synehrgy_assets.core.trainer import TrainConfig, init_model, train  # noqa: E402

STAGES = ("preflight", "data", "train_small", "train_mid", "train_10m", "generate")
# Three sizes that span the use: the CPU default (2 layers x 4 heads x width 128), 6 x 512, and about
# 10 M weights at context 1,024.
SIZES = {
    "train_small": dict(n_layer=2, n_head=4, n_embd=128, n_ctx=512),
    "train_mid": dict(n_layer=6, n_head=8, n_embd=512, n_ctx=512),
    "train_10m": dict(n_layer=6, n_head=6, n_embd=384, n_ctx=1024),
}
SMOKE_SIZE = dict(n_layer=1, n_head=2, n_embd=32, n_ctx=64)
GPU_PLAN = dict(patients=3000, rows_per_visit=24, batch=64, warm=5, steps=20, gen_batches=(64, 256, 1024),
                gen_max_length=1024, sync_patients=64, sync_tokens=128)
SMOKE_PLAN = dict(patients=60, rows_per_visit=6, batch=4, warm=1, steps=2, gen_batches=(4,),
                  gen_max_length=48, sync_patients=4, sync_tokens=16)
HOST_READS = {"item", "tolist", "__int__", "__float__", "__bool__", "__index__", "nonzero", "cpu"}


# ---------------------------------------------------------------- output


class Report:
    """One stage's JSON, rewritten whole (tmp + rename) after every measurement."""

    def __init__(self, out: Path, stage: str, plan: dict) -> None:
        self.path = out / f"{stage}.json"
        self.data: dict = {"stage": stage, "complete": False, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                           time.gmtime()), "plan": {k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in plan.items()}}
        self.t0 = time.perf_counter()
        self.write()

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        self.data["seconds"] = round(time.perf_counter() - self.t0, 2)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def guarded(report: Report, key: str, fn):
    """Run one measurement; a failure is recorded under its key and the stage goes on."""
    t0 = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:  # recorded, not hidden: the JSON says what failed and why
        value = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(f"[{report.data['stage']}] {key} FAILED: {value['error'][:300]}", flush=True)
    else:
        print(f"[{report.data['stage']}] {key}: {json.dumps(value, default=str)[:400]}", flush=True)
    if isinstance(value, dict):
        value.setdefault("wall_s", round(time.perf_counter() - t0, 2))
    report.put(key, value)
    return value


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- data


def build_data(work: Path, plan: dict) -> dict:
    from synehrgy_assets.core.tokens import VocabularyConfig, encode
    from tests.helpers.toy_cohort import synthetic_cohort

    cohort = synthetic_cohort(plan["patients"], seed=1, max_visits=4, rows_per_visit=plan["rows_per_visit"])
    vocab = TokenVocabulary.fit(cohort, VocabularyConfig())
    seqs = encode(cohort, vocab)
    patients = [np.asarray(seqs.patient(i), dtype=np.int64) for i in range(len(seqs))]
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "model_10m", ignore_errors=True)  # weights of an earlier run's vocabulary
    vocab.to_json(work / "vocabulary.json")
    lengths = np.array([len(p) for p in patients], dtype=np.int64)
    np.savez(work / "patients.npz", tokens=np.concatenate(patients), lengths=lengths)
    return {"patients": len(patients), "vocab_size": vocab.size, "tokens_mean": float(lengths.mean()),
            "tokens_p99": float(np.percentile(lengths, 99)), "tokens_max": int(lengths.max())}


def load_data(work: Path, n_ctx: int) -> tuple[TokenVocabulary, list[np.ndarray]]:
    """The vocabulary and each patient's first n_ctx + 1 tokens (the reference's truncation)."""
    vocab = TokenVocabulary.from_json(work / "vocabulary.json")
    arrays = np.load(work / "patients.npz")
    ends = np.cumsum(arrays["lengths"])
    windows = [arrays["tokens"][e - n: e][: n_ctx + 1] for e, n in zip(ends, arrays["lengths"])]
    return vocab, [w for w in windows if len(w) >= 2]


# ---------------------------------------------------------------- FLOPs


def flops_per_token(n_layer: int, n_embd: int, vocab: int, n_ctx: int) -> float:
    """PaLM's accounting: 6 x matmul weights + 12 L d T (attention), the same for ours and HF."""
    return 6.0 * (n_layer * 12 * n_embd * n_embd + vocab * n_embd) + 12.0 * n_layer * n_embd * n_ctx


def peak(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return gpu_bf16_peak(torch.cuda.get_device_name(device))
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        a @ b
        n += 1
    rate = n * 2 * 512 ** 3 / (time.perf_counter() - t0)
    return rate, f"measured fp32 512^3 matmul on this CPU ({rate / 1e12:.3f} TFLOP/s)"


# ---------------------------------------------------------------- training


def _throughput(records: list[dict]) -> tuple[float, int]:
    """Median tokens/s of the log windows after the first (which holds warm-up and compilation)."""
    timed = [r["tokens_per_second"] for r in records[1:]]
    return (float(np.median(timed)) if timed else float("nan")), len(timed)


def train_ours(cfg: GPTConfig, windows, vocab, plan, device, compile_: bool) -> dict:
    records: list[dict] = []
    config = TrainConfig(epochs=1000, max_steps=plan["warm"] + plan["steps"], batch_size=plan["batch"],
                         learning_rate=3e-4, warmup_steps=2, eval_every=0, patience=None, log_every=plan["warm"],
                         checkpoint_every=0, device=str(device), precision="auto", compile=compile_, seed=0)
    model = init_model(cfg, 0)
    res = train(model, windows, [], config, pad_id=vocab.pad_id, on_log=records.append)
    tps, windows_timed = _throughput(records)
    return {"tokens_per_s": tps, "log_windows_timed": windows_timed, "precision": res.precision,
            "compiled": compile_, "padding_fraction": res.padding_fraction, "final_loss": res.final_train_loss,
            "peak_memory_mib": res.peak_memory_bytes / 2 ** 20, "peak_memory_kind": res.peak_memory_kind,
            "attention": model_mod.packed_attention_backend(device), "_model": model}


def hf_model(cfg: GPTConfig, vocab):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(vocab_size=vocab.size, n_positions=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=0.0,
                        activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=vocab.bos_id,
                        eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id, tie_word_embeddings=True)
    return GPT2LMHeadModel(hf_cfg)


def train_hf(cfg: GPTConfig, windows, vocab, plan, device, bf16: bool) -> dict:
    """HF GPT-2 as the reference feeds it: every window padded to n_ctx, labels -100 on padding."""
    torch.set_float32_matmul_precision("high" if bf16 else "highest")  # TF32 matmuls with bf16 only
    try:
        torch.manual_seed(0)
        model = hf_model(cfg, vocab).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0, fused=device.type == "cuda")
        order = np.random.default_rng(0).permutation(len(windows))
        n_ctx, batch = cfg.n_ctx, plan["batch"]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tokens = 0
        loss = float("nan")
        for step in range(plan["warm"] + plan["steps"]):
            if step == plan["warm"]:
                sync(device)
                t0 = time.perf_counter()
            pick = order[(np.arange(batch) + step * batch) % len(order)]
            ids = np.full((batch, n_ctx), vocab.pad_id, dtype=np.int64)
            labels = np.full((batch, n_ctx), -100, dtype=np.int64)
            mask = np.zeros((batch, n_ctx), dtype=np.int64)
            for r, i in enumerate(pick):
                w = windows[i][:n_ctx]
                ids[r, : len(w)], labels[r, : len(w)], mask[r, : len(w)] = w, w, 1
            t = [torch.from_numpy(a).to(device) for a in (ids, labels, mask)]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(input_ids=t[0], attention_mask=t[2], labels=t[1])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss = float(out.loss.item())  # the HF Trainer's logging syncs as well
            if step >= plan["warm"]:
                tokens += int((labels[:, 1:] != -100).sum())
        sync(device)
        seconds = time.perf_counter() - t0
        peak_mem = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else float("nan")
        return {"tokens_per_s": tokens / seconds, "precision": "bf16 autocast + TF32" if bf16 else "fp32",
                "padding_fraction": 1 - tokens / (plan["steps"] * batch * n_ctx), "final_loss": loss,
                "peak_memory_mib": peak_mem, "attention": getattr(model.config, "_attn_implementation", "?")}
    finally:
        torch.set_float32_matmul_precision("high" if device.type == "cuda" else "highest")


def attention_kernels(cfg: GPTConfig, windows, vocab, device, compiled: bool) -> dict:
    """The GPU kernels of one training forward + backward (torch.profiler), the attention ones apart."""
    from torch.profiler import ProfilerActivity, profile

    model = init_model(cfg, 0).to(device).train()
    forward = torch.compile(model) if compiled else model
    lengths = np.array([len(w) for w in windows])
    rows = epoch_rows(lengths, cfg.n_ctx, 0, 0, 2048)[:8]
    batch = collate_packed(windows, np.zeros(len(windows), dtype=np.int64), rows, cfg.n_ctx, vocab.pad_id)
    t = {k: torch.from_numpy(v).to(device) for k, v in
         (("idx", batch.inputs), ("targets", batch.targets), ("positions", batch.positions),
          ("segments", batch.segments))}

    def step():
        with autocast_context(device, "bf16" if device.type == "cuda" else "fp32"):
            _, loss = forward(**t)
        loss.backward()

    step()  # compile / warm outside the trace
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        sync(device)
    rows_out = []
    for e in prof.key_averages():
        dev_us = getattr(e, "device_time_total", None)
        if dev_us is None:
            dev_us = getattr(e, "cuda_time_total", 0)
        rows_out.append((e.key, float(dev_us if device.type == "cuda" else e.cpu_time_total)))
    rows_out.sort(key=lambda r: -r[1])
    words = ("flash", "fmha", "attention", "attn", "flex", "sdpa", "cudnn", "efficient", "tem_fused")
    attn = [(k, round(us, 1)) for k, us in rows_out if any(w in k.lower() for w in words)]
    return {"backend": model_mod.packed_attention_backend(device), "compiled": compiled,
            "attention_kernels_us": attn[:12], "top_kernels_us": [(k, round(us, 1)) for k, us in rows_out[:12]]}


def stage_train(stage: str, args, report: Report, device: torch.device, plan: dict) -> None:
    size = SMOKE_SIZE if args.cpu_smoke else SIZES[stage]
    vocab, windows = load_data(Path(args.work), size["n_ctx"])
    cfg = GPTConfig(vocab_size=vocab.size, dropout=0.0, **size)
    fpt = flops_per_token(size["n_layer"], size["n_embd"], vocab.size, size["n_ctx"])
    peak_flops, peak_source = peak(device)
    report.put("size", {**size, "vocab_size": vocab.size, "parameters": init_model(cfg, 0).num_parameters(),
                        "flops_per_token": fpt, "peak_flops": peak_flops, "peak_source": peak_source,
                        "windows": len(windows)})

    checkpoint = Path(args.work) / "model_10m"

    def with_mfu(row: dict) -> dict:
        model = row.pop("_model", None)
        if stage == "train_10m" and model is not None and not checkpoint.is_dir():
            save_checkpoint(model, checkpoint)  # the generate stage's weights, saved before anything can time out
        row["mfu"] = fpt * row["tokens_per_s"] / peak_flops if math.isfinite(peak_flops) else float("nan")
        return row

    compile_ok = device.type == "cuda"  # on CPU the smoke run skips compilation (tens of seconds)
    variants = [("ours_eager", lambda: train_ours(cfg, windows, vocab, plan, device, False))]
    if compile_ok:
        variants.append(("ours_compiled", lambda: train_ours(cfg, windows, vocab, plan, device, True)))
    variants += [("hf_fp32", lambda: train_hf(cfg, windows, vocab, plan, device, False)),
                 ("hf_bf16_tf32", lambda: train_hf(cfg, windows, vocab, plan, device, True))]
    results = {}
    for name, fn in variants:
        if name.startswith("hf_") and not _have_transformers():
            results[name] = report.data[name] = {"skipped": "transformers is not installed"}
            continue
        torch._dynamo.reset()
        results[name] = guarded(report, name, lambda fn=fn: with_mfu(fn()))
    if not compile_ok:
        report.put("ours_compiled", {"skipped": "CPU smoke run: torch.compile is exercised on CUDA only"})
    best = max((results.get(k, {}).get("tokens_per_s", float("nan")) for k in ("ours_eager", "ours_compiled")),
               key=lambda v: -1 if not math.isfinite(v) else v)
    ratios = {}
    for base in ("hf_fp32", "hf_bf16_tf32"):
        theirs = results.get(base, {}).get("tokens_per_s")
        if theirs:
            ratios[f"ours_best_over_{base}"] = best / theirs
    report.put("ratios", ratios)
    if stage == "train_10m":  # most telling first: a stage cut by its limit keeps those
        guarded(report, "profile_eager", lambda: attention_kernels(cfg, windows, vocab, device, False))
        if compile_ok:
            os.environ[model_mod.PACKED_ATTENTION_ENV] = "sdpa"
            try:
                torch._dynamo.reset()
                guarded(report, "ours_compiled_dense_mask",
                        lambda: with_mfu(train_ours(cfg, windows, vocab, plan, device, True)))
                guarded(report, "profile_dense_mask_eager",
                        lambda: attention_kernels(cfg, windows, vocab, device, False))
            finally:
                os.environ.pop(model_mod.PACKED_ATTENTION_ENV, None)
            torch._dynamo.reset()
            guarded(report, "profile_compiled", lambda: attention_kernels(cfg, windows, vocab, device, True))


def _have_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- generation


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the tensor calls that read device values on the host (each a sync on CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.sites: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads += 1
            frame = sys._getframe(1)
            while frame is not None and "synehrgy_assets" not in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None:
                site = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {name}"
                self.sites[site] = self.sites.get(site, 0) + 1
        return func(*args, **(kwargs or {}))


def decode_syncs(model, vocab, device, plan) -> dict:
    """Host syncs per decode step of our sampler: CUDA's sync debug mode counts the synchronizing
    calls; on any device the host reads of tensors are counted too (a proxy that works on CPU)."""
    kw = dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id, top_k=50, seed=0, device=device,
              batch_size=plan["sync_patients"], max_tokens_per_patient=plan["sync_tokens"])
    constraint = GrammarConstraint(vocab, device=device)
    sample(model, plan["sync_patients"], constraint=constraint, **kw)  # warm
    mode = _HostReads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with mode:
                res = sample(model, plan["sync_patients"], constraint=constraint, **kw)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    cuda_syncs = sum("synchroniz" in str(w.message).lower() for w in caught) if device.type == "cuda" else None
    where: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message).lower():
            key = f"{Path(w.filename).name}:{w.lineno}"
            where[key] = where.get(key, 0) + 1
    return {"steps": res.steps, "host_reads_per_step": mode.reads / max(res.steps, 1),
            "host_read_sites": dict(sorted(mode.sites.items(), key=lambda kv: -kv[1])[:16]),
            "cuda_syncs_per_step": None if cuda_syncs is None else cuda_syncs / max(res.steps, 1),
            "cuda_sync_sites": dict(sorted(where.items(), key=lambda kv: -kv[1])[:12])}


def generate_ours(model, vocab, device, n: int, batch: int, max_length: int) -> dict:
    kw = dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id, top_k=50, temperature=1.0,
              batch_size=batch, max_tokens_per_patient=max_length - 1, device=device)
    constraint = GrammarConstraint(vocab, device=device)
    sample(model, min(4, n), constraint=constraint, seed=1, **{**kw, "batch_size": min(4, n)})
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    res = sample(model, n, constraint=constraint, seed=0, **kw)
    sync(device)
    seconds = time.perf_counter() - t0
    tokens = float(np.mean([len(s) for s in res.sequences]))
    return {"patients_per_s": n / seconds, "tokens_per_s": res.tokens_generated / seconds, "tokens_mean": tokens,
            "patients": n, "precision": res.precision, "forced_closures": res.n_forced_closures,
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None}


def generate_hf(hf, vocab, device, n: int, batch: int, max_length: int, bf16: bool) -> dict:
    hf = hf.to(device=device, dtype=torch.bfloat16 if bf16 else torch.float32).eval()
    kw = dict(do_sample=True, top_k=50, top_p=1.0, temperature=1.0, eos_token_id=vocab.eos_id,
              pad_token_id=vocab.pad_id)

    def prompt(k):
        ids = torch.full((k, 1), vocab.bos_id, dtype=torch.long, device=device)
        return ids, torch.ones_like(ids)

    with torch.no_grad():
        ids, mask = prompt(min(4, n))
        hf.generate(ids, attention_mask=mask, max_new_tokens=8, **kw)
        torch.manual_seed(0)
        sync(device)
        t0 = time.perf_counter()
        done, lengths = 0, []
        while done < n:
            k = min(batch, n - done)
            ids, mask = prompt(k)
            out = hf.generate(ids, attention_mask=mask, max_length=max_length, **kw)
            has = (out == vocab.eos_id).any(dim=1)
            ends = (out == vocab.eos_id).int().argmax(dim=1)
            lengths += torch.where(has, ends + 1, torch.full_like(ends, out.shape[1])).tolist()
            done += k
        sync(device)
        seconds = time.perf_counter() - t0
    return {"patients_per_s": n / seconds, "tokens_per_s": float(sum(lengths) - n) / seconds,
            "tokens_mean": float(np.mean(lengths)), "patients": n, "precision": "bf16" if bf16 else "fp32"}


def stage_generate(args, report: Report, device: torch.device, plan: dict) -> None:
    work = Path(args.work)
    vocab = TokenVocabulary.from_json(work / "vocabulary.json")
    path = work / "model_10m"
    if path.is_dir():
        model, source = load_checkpoint(path, device), str(path)
    else:  # train_10m did not get that far: the same shape, fresh weights
        size = SMOKE_SIZE if args.cpu_smoke else SIZES["train_10m"]
        model, source = init_model(GPTConfig(vocab_size=vocab.size, dropout=0.0, **size), 0).to(device), "fresh"
    model.eval()
    cfg = model.config
    max_length = min(plan["gen_max_length"], cfg.n_ctx)
    report.put("model", {"weights": source, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_ctx": cfg.n_ctx,
                         "parameters": model.num_parameters(), "max_length": max_length})
    guarded(report, "decode_syncs", lambda: decode_syncs(model, vocab, device, plan))
    hf = None
    if _have_transformers():
        hf = hf_model(cfg, vocab)
        missing, unexpected = hf.load_state_dict(_hf_state(model), strict=False)
        if unexpected or [k for k in missing if not k.endswith((".attn.bias", "masked_bias"))]:
            raise RuntimeError(f"weight conversion: missing {missing}, unexpected {unexpected}")
    for batch in plan["gen_batches"]:
        ours = guarded(report, f"ours_b{batch}", lambda b=batch: generate_ours(model, vocab, device, b, b, max_length))
        if hf is None:
            report.put(f"hf_fp32_b{batch}", {"skipped": "transformers is not installed"})
            continue
        theirs = guarded(report, f"hf_fp32_b{batch}",
                         lambda b=batch: generate_hf(hf, vocab, device, b, b, max_length, False))
        if "patients_per_s" in ours and "patients_per_s" in theirs:
            report.put(f"ratio_b{batch}", ours["patients_per_s"] / theirs["patients_per_s"])
    if hf is not None:
        for batch in plan["gen_batches"]:
            guarded(report, f"hf_bf16_b{batch}",
                    lambda b=batch: generate_hf(hf, vocab, device, b, b, max_length, True))


def _hf_state(model) -> dict:
    """Our weights under GPT-2's names (its Conv1D weights are our Linear ones transposed)."""
    src = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    dst = {"transformer.wte.weight": src["tok_emb.weight"], "transformer.wpe.weight": src["pos_emb.weight"],
           "transformer.ln_f.weight": src["ln_f.weight"], "transformer.ln_f.bias": src["ln_f.bias"],
           "lm_head.weight": src["tok_emb.weight"]}
    for i in range(model.config.n_layer):
        s, d = f"blocks.{i}.", f"transformer.h.{i}."
        for name in ("ln_1", "ln_2"):
            dst[d + name + ".weight"], dst[d + name + ".bias"] = src[s + name + ".weight"], src[s + name + ".bias"]
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                             ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            dst[d + theirs + ".weight"] = src[s + ours + ".weight"].t().contiguous()
            dst[d + theirs + ".bias"] = src[s + ours + ".bias"]
    return dst


# ---------------------------------------------------------------- preflight and main


def stage_preflight(args, report: Report, device: torch.device) -> None:
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0], "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "flex_attention": model_mod.flex_attention is not None,
            "packed_attention": model_mod.packed_attention_backend(device),
            "blocked_imports": list(BLOCKED),
            "heavy_modules_loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2 ** 30, 1), multiprocessors=props.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported())
    info["peak_flops"], info["peak_source"] = peak(device)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    for name in ("pandas", "pyarrow", "safetensors"):
        try:
            info[name] = __import__(name).__version__
        except ImportError as exc:
            info[name] = f"missing: {exc}"
    report.data.update(info)
    report.write()
    print(json.dumps(info, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=("all", *STAGES))
    p.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/out/gpu_check")
    p.add_argument("--work", default="/tmp/synehrgy_gpu_check")
    p.add_argument("--cpu-smoke", action="store_true", help="every stage at toy sizes on the CPU, in seconds")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cpu_smoke:
        device, plan = torch.device("cpu"), SMOKE_PLAN
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("gpu_bench: no CUDA device visible to torch (use --cpu-smoke on a CPU)", file=sys.stderr)
            return 2
        device, plan = torch.device("cuda"), GPU_PLAN
        torch.set_float32_matmul_precision("high")
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        report = Report(out, stage, plan)
        if stage == "preflight":
            stage_preflight(args, report, device)
        elif stage == "data":
            report.put("data", build_data(Path(args.work), plan))
        elif stage.startswith("train_"):
            stage_train(stage, args, report, device, plan)
        else:
            stage_generate(args, report, device, plan)
        report.put("complete", True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
