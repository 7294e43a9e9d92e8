"""Training loop for the GPT: AdamW, warmup + cosine, grad clip, periodic validation, best-weights keep.

Batches are length-bucketed: windows are shuffled, grouped into pools of `BUCKET_POOL_BATCHES`
batches, sorted by length inside a pool, cut into batches, and the batch order is shuffled again.
That keeps batches random across the run while padding each batch only to the longest of
similar-length windows (EHR sequences range from a few dozen to n_ctx tokens).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from synehrgy_assets.core.model import GPT, IGNORE_INDEX

BUCKET_POOL_BATCHES = 50


@dataclass
class TrainConfig:
    max_steps: int = 300
    batch_size: int = 16
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 8
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    early_stopping_patience: int | None = None
    num_threads: int | None = None
    log_every: int = 10
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "eval_every", "eval_batches", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(
                f"TrainConfig.early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience}"
            )
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_val_loss: float | None
    final_train_loss: float
    tokens_seen: int
    seconds: float
    tokens_per_second: float
    device: str
    precision: str
    peak_memory_bytes: int
    steps: int
    best_step: int | None
    stopped_early: bool
    eval_seconds: float = 0.0
    peak_memory_kind: str = "cuda_max_memory_allocated"

    def summary(self) -> dict[str, Any]:
        """Scalars only (no history), e.g. for MLflow metrics/params."""
        out = asdict(self)
        out.pop("history")
        return out


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available else CPU; an explicit CUDA request without CUDA is an error."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available (torch {torch.__version__})")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' (autocast) on CUDA, 'fp32' elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    return precision


def autocast_context(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _window_lengths(windows: list[np.ndarray], what: str, n_ctx: int) -> np.ndarray:
    lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
    if lengths.size:
        bad = np.flatnonzero((lengths < 2) | (lengths > n_ctx + 1))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{what}[{i}] has {int(lengths[i])} tokens; every window needs 2..{n_ctx + 1} tokens "
                f"(inputs w[:-1] must fit n_ctx={n_ctx}); {bad.size} windows are out of range"
            )
    return lengths


def _bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of index batches: shuffle, sort by length inside pools, shuffle the batches."""
    order = rng.permutation(lengths.size)
    pool = batch_size * BUCKET_POOL_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, order.size, pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, chunk.size, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _batch_stream(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    while True:
        yield from _bucketed_batches(lengths, batch_size, rng)


def collate(windows: list[np.ndarray], indices: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded inputs and targets; padded positions and pad targets become IGNORE_INDEX."""
    rows = [np.asarray(windows[i]) for i in indices]
    width = max(len(r) for r in rows) - 1
    inputs = np.full((len(rows), width), pad_id, dtype=np.int64)
    targets = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for j, r in enumerate(rows):  # one copy per row of a batch (<= batch_size), not per token
        inputs[j, :len(r) - 1] = r[:-1]
        targets[j, :len(r) - 1] = r[1:]
    # A window may carry its own padding (fixed-size windows): pad is never a target to learn.
    targets[targets == pad_id] = IGNORE_INDEX
    return inputs, targets


def _check_vocab(inputs: np.ndarray, targets: np.ndarray, indices: np.ndarray, vocab_size: int) -> None:
    """An out-of-vocabulary id would otherwise surface as an opaque embedding index error."""
    bad_rows = ((inputs < 0) | (inputs >= vocab_size)).any(axis=1)
    bad_rows |= ((targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab_size))).any(axis=1)
    if bad_rows.any():
        raise ValueError(
            f"train_windows[{int(indices[np.flatnonzero(bad_rows)[0]])}] holds token ids outside "
            f"the model's vocabulary [0, {vocab_size})"
        )


def _to_device(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(arr)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr_ratio * learning_rate at max_steps."""
    base = config.learning_rate
    if step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    floor = base * config.min_lr_ratio
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base - floor)


def make_optimizer(model: GPT, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices (linear weights, embeddings) decay, biases and LayerNorm gains do not."""
    params = [p for p in model.parameters() if p.requires_grad]  # de-duplicated: the tied head counts once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=config.betas, fused=device.type == "cuda"
    )


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS; it is the whole process's peak, not this run's alone.
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_max_rss"


@torch.no_grad()
def evaluate(
    model: GPT,
    windows: list[np.ndarray],
    batches: list[np.ndarray],
    pad_id: int,
    device: torch.device,
    precision: str,
) -> float:
    """Token-weighted mean next-token loss over the given batches."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for idx in batches:
        inputs, targets = collate(windows, idx, pad_id)
        n = int((targets != IGNORE_INDEX).sum())
        if n == 0:
            continue
        with autocast_context(device, precision):
            _, loss = model(_to_device(inputs, device), _to_device(targets, device))
        total += loss.double() * n
        count += n
    model.train(was_training)
    return float(total.item() / count) if count else float("nan")


def train(
    model: GPT,
    train_windows: list[np.ndarray],
    val_windows: list[np.ndarray],
    config: TrainConfig,
    pad_id: int,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train in place; on return the model holds the best-validation weights (or the last ones).

    `tokens_seen` counts supervised (non-padding) target tokens; `tokens_per_second` excludes
    evaluation time, `seconds` is the whole wall time.
    """
    if not train_windows:
        raise ValueError("train: train_windows is empty")
    n_ctx = model.config.n_ctx
    train_lengths = _window_lengths(train_windows, "train_windows", n_ctx)
    val_lengths = _window_lengths(val_windows, "val_windows", n_ctx)
    if not 0 <= pad_id < model.config.vocab_size:
        raise ValueError(f"train: pad_id {pad_id} outside the vocabulary [0, {model.config.vocab_size})")

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(
            model, train_windows, val_windows, train_lengths, val_lengths, config, pad_id, on_log, device, precision
        )
    finally:
        if config.num_threads is not None:
            torch.set_num_threads(previous_threads)


def _train(
    model: GPT,
    train_windows: list[np.ndarray],
    val_windows: list[np.ndarray],
    train_lengths: np.ndarray,
    val_lengths: np.ndarray,
    config: TrainConfig,
    pad_id: int,
    on_log: Callable[[dict[str, Any]], None] | None,
    device: torch.device,
    precision: str,
) -> TrainResult:
    torch.manual_seed(config.seed)  # dropout masks
    rng = np.random.default_rng(config.seed)
    model.to(device).train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    forward = torch.compile(model, dynamic=True) if config.compile else model
    optimizer = make_optimizer(model, config, device)

    # A fixed validation subset, so successive evaluations are comparable.
    val_batches: list[np.ndarray] = []
    if val_lengths.size:
        val_batches = _bucketed_batches(val_lengths, config.batch_size, np.random.default_rng(config.seed + 1))
        val_batches = val_batches[:config.eval_batches]

    history: list[dict[str, Any]] = []
    best_val = math.inf
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    evals_since_best = 0
    stopped_early = False
    tokens_seen = 0
    loss_sum = torch.zeros((), device=device)
    loss_steps = 0
    last_train_loss = float("nan")
    window_tokens = 0
    eval_seconds = 0.0
    start = window_start = time.perf_counter()
    batches = _batch_stream(train_lengths, config.batch_size, rng)
    step = 0

    for step in range(config.max_steps):
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch_indices = next(batches)
        inputs, targets = collate(train_windows, batch_indices, pad_id)
        _check_vocab(inputs, targets, batch_indices, model.config.vocab_size)
        n_tokens = int((targets != IGNORE_INDEX).sum())
        with autocast_context(device, precision):
            _, loss = forward(_to_device(inputs, device), _to_device(targets, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

        tokens_seen += n_tokens
        window_tokens += n_tokens
        loss_sum += loss.detach()  # no host sync until a log step
        loss_steps += 1

        is_last = step == config.max_steps - 1
        do_eval = bool(val_batches) and ((step + 1) % config.eval_every == 0 or is_last)
        do_log = (step + 1) % config.log_every == 0 or is_last or do_eval
        if not do_log:
            continue

        last_train_loss = float(loss_sum.item() / loss_steps)  # mean over the steps since the last log
        if not math.isfinite(last_train_loss):
            raise RuntimeError(
                f"train: loss became {last_train_loss} by step {step + 1} (lr {lr:.3g}); "
                "lower learning_rate or check the windows"
            )
        now = time.perf_counter()
        record: dict[str, Any] = {
            "step": step + 1,
            "train_loss": last_train_loss,
            "lr": lr,
            "tokens_seen": tokens_seen,
            "tokens_per_second": window_tokens / max(now - window_start, 1e-9),
            "elapsed_seconds": now - start,
        }
        loss_sum.zero_()
        loss_steps = 0
        window_tokens = 0

        if do_eval:
            eval_start = time.perf_counter()
            val_loss = evaluate(model, val_windows, val_batches, pad_id, device, precision)
            record["val_loss"] = val_loss
            if val_loss < best_val:
                best_val, best_step, evals_since_best = val_loss, step + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                evals_since_best += 1
            record["best_val_loss"] = best_val
            # Throughput figures measure training only, evaluation time is kept apart.
            window_start = time.perf_counter()
            eval_seconds += window_start - eval_start
        else:
            window_start = now

        history.append(record)
        if on_log is not None:
            on_log(dict(record))
        if (
            config.early_stopping_patience is not None
            and do_eval
            and evals_since_best >= config.early_stopping_patience
        ):
            stopped_early = True
            break

    seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    peak, peak_kind = _peak_memory(device)
    return TrainResult(
        history=history,
        best_val_loss=None if best_step is None else best_val,
        final_train_loss=last_train_loss,
        tokens_seen=tokens_seen,
        seconds=seconds,
        tokens_per_second=tokens_seen / max(seconds - eval_seconds, 1e-9),
        eval_seconds=eval_seconds,
        device=str(device),
        precision=precision,
        peak_memory_bytes=peak,
        peak_memory_kind=peak_kind,
        steps=step + 1,
        best_step=best_step,
        stopped_early=stopped_early,
    )
