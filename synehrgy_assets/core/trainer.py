"""Training loop for the GPT: packed batches, AdamW, warmup + cosine, early stopping, resumable state.

- Budget: `epochs` (or `max_tokens` supervised targets), optionally capped by `max_steps`; the LR
  schedule (linear warmup, cosine to `min_lr_ratio`) runs over the resolved number of steps.
- Batches: windows packed into rows of exactly n_ctx positions (`core/packing.py`), each window a
  segment with block-diagonal attention; `batch_size` is rows per step. Context-only tokens
  (`*_context[i]` leading tokens of window i) and padding are never targets.
- Validation: the whole val split (or a seeded sample of `val_max_windows`), packed once in a fixed
  order; the loss per group of target token types beside a unigram baseline (-log p(token | its
  type) with add-one smoothed train frequencies: a model that knows the grammar and nothing else).
- Early stopping after `patience` evaluations without an improvement of more than `min_delta`
  (a plateau counts as none); the best weights are restored.
- Data parallel: under torchrun (WORLD_SIZE > 1) the same call trains with DDP over the
  processes; `batch_size` is rows per process, so the global batch is batch_size x WORLD_SIZE and
  each GPU's work stays the same as GPUs are added (`core/distributed.py`); only rank 0 logs and saves.
- CUDA: `torch.compile` on by default (`compile=None`), and the next batch is collated (and pinned)
  on a background thread while the current step runs (`prefetch=None`); both stay off on CPU,
  where they bring nothing, unless asked for.
- Resume: with `checkpoint_dir`, a training state (weights, optimizer, RNG, position in the epoch,
  best weights, history) is written atomically every `checkpoint_every` steps and at the end, as
  plain tensors/containers loaded with `weights_only=True`. The batch order is a pure function of
  (seed, epoch), so a resumed run continues bit for bit where the killed one stopped.

This module holds the configuration, the result, the data checks, evaluation and the saved state's
format; the loop itself (plan, `TrainState`, steps, log records) is in `core/train_loop.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from synehrgy_assets.core import distributed
from synehrgy_assets.core.devices import autocast_context, resolve_device, resolve_precision
from synehrgy_assets.core.distributed import Dist
from synehrgy_assets.core.model import GPT, IGNORE_INDEX, GPTConfig
from synehrgy_assets.core.packing import DEFAULT_POOL_WINDOWS, PackedBatch, collate_packed, target_tokens
from synehrgy_assets.core.tokens.grammar import TokenType

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
STATE_FORMAT = "synehrgy-train-state"
STATE_VERSION = 1

T = TokenType
# Groups of target token types for the validation report; every other type is "structure".
TYPE_GROUPS: dict[str, tuple[TokenType, ...]] = {
    "covariates": (T.AGE, T.GENDER, T.ETHNICITY_GROUP, T.INSURANCE, T.ADMISSION_TYPE, T.FIRST_CAREUNIT,
                   T.ICU_DATABASE),
    "labels": (T.MORTALITY, T.PHENOTYPE, T.END_LABEL),
    "codes": (T.DX, T.PX, T.END_CODE),
    "values": (T.VALUE,),
    "time_gaps": (T.DT, T.GAP_VISIT),
}
GROUP_NAMES: tuple[str, ...] = (*TYPE_GROUPS, "structure")


@dataclass
class TrainConfig:
    epochs: float = 10.0
    max_tokens: int | None = None  # supervised targets; replaces `epochs` when set
    max_steps: int | None = None  # a cap on the steps from epochs/max_tokens; 0/None = no cap
    batch_size: int = 16  # packed rows of n_ctx positions per step (per process under DDP)
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 0  # steps; 0 = once per epoch (and always after the last step)
    val_max_windows: int | None = None  # None = the whole val split; else a seeded sample
    patience: int | None = 3  # evaluations without improvement before stopping; 0/None = off
    min_delta: float = 0.0  # an improvement of the val loss by at most this counts as none (a plateau)
    # Wall seconds of training (all sessions of a resumed run) after which it stops, with a last
    # evaluation: a budget's epochs are planned from a probe, and a machine that slows down later
    # must not overrun it. None/0 = no deadline.
    deadline_seconds: float | None = None
    checkpoint_every: int = 100  # steps between resumable states (with a checkpoint_dir); 0 = end only
    pack_pool_windows: int = DEFAULT_POOL_WINDOWS
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    log_every: int = 10
    compile: bool | None = None  # torch.compile the model; None = on CUDA only
    prefetch: bool | None = None  # collate the next batch on a background thread; None = on CUDA only

    def __post_init__(self) -> None:
        for name in ("batch_size", "log_every", "pack_pool_windows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("eval_every", "checkpoint_every", "warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_tokens is None and not self.epochs > 0:
            raise ValueError(f"TrainConfig.epochs must be > 0, got {self.epochs!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"TrainConfig.max_tokens must be >= 1 or None, got {self.max_tokens!r}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"TrainConfig.max_steps must be >= 0 or None, got {self.max_steps!r}")
        if self.patience is not None and self.patience < 0:
            raise ValueError(f"TrainConfig.patience must be >= 0 or None, got {self.patience!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"TrainConfig.min_delta must be >= 0, got {self.min_delta!r}")
        if self.val_max_windows is not None and self.val_max_windows < 1:
            raise ValueError(f"TrainConfig.val_max_windows must be >= 1 or None, got {self.val_max_windows!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        self.epochs = float(self.epochs)
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_val_loss: float | None
    final_train_loss: float
    tokens_seen: int  # supervised target tokens
    seconds: float
    tokens_per_second: float  # supervised targets per second of training (no eval/checkpoint time)
    device: str
    precision: str
    peak_memory_bytes: int
    steps: int
    best_step: int | None
    stopped_early: bool
    total_steps: int = 0  # planned by the budget
    stopped_at_deadline: bool = False  # the wall-time deadline ended the run before total_steps
    steps_per_epoch: int = 0
    epochs_run: float = 0.0
    train_tokens_per_epoch: int = 0
    padding_fraction: float = 0.0  # unused / all positions of the training rows run
    val_padding_fraction: float | None = None
    val_windows: int = 0  # windows / target tokens the validation used
    val_tokens: int = 0
    val_loss_by_type: dict[str, float] = field(default_factory=dict)  # at the best evaluation
    val_tokens_by_type: dict[str, int] = field(default_factory=dict)
    unigram_baseline: float | None = None
    unigram_baseline_by_type: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int | None = None
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    peak_memory_kind: str = "cuda_max_memory_allocated"

    def summary(self) -> dict[str, Any]:
        """Scalars only (no history, no per-type dicts), e.g. for MLflow metrics/params."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, (list, dict))}


def init_model(config: GPTConfig, seed: int) -> GPT:
    """A freshly initialized GPT whose weights depend on `seed` only (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return GPT(config)


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr_ratio * learning_rate at total_steps."""
    base = config.learning_rate
    if step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    decay_steps = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    floor = base * config.min_lr_ratio
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base - floor)


def planned_steps(config: TrainConfig, steps_per_epoch: int, tokens_per_epoch: int) -> int:
    """Steps from the budget: epochs, or max_tokens / targets per epoch; capped by max_steps."""
    epochs = config.max_tokens / max(tokens_per_epoch, 1) if config.max_tokens else config.epochs
    steps = max(1, math.ceil(epochs * steps_per_epoch - 1e-9))
    return min(steps, config.max_steps) if config.max_steps else steps


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


# ---------------------------------------------------------------- data checks


@dataclass
class WindowSet:
    """Windows with their context lengths, checked once: lengths, targets per window, a digest."""

    windows: list[np.ndarray]
    context: np.ndarray
    lengths: np.ndarray
    n_targets: np.ndarray
    digest: str

    @classmethod
    def build(cls, windows, context, what: str, n_ctx: int, vocab_size: int, pad_id: int) -> "WindowSet":
        n = len(windows)
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=n)
        bad = np.flatnonzero((lengths < 2) | (lengths > n_ctx + 1))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{what}[{i}] has {int(lengths[i])} tokens; every window needs 2..{n_ctx + 1} tokens "
                f"(inputs w[:-1] must fit n_ctx={n_ctx}); {bad.size} windows are out of range"
            )
        if context is None:
            context = np.zeros(n, dtype=np.int64)
        context = np.asarray(context, dtype=np.int64)
        if context.shape != (n,):
            raise ValueError(f"{what}: {context.shape[0] if context.ndim else 0} context lengths for {n} windows")
        bad = np.flatnonzero((context < 0) | (context >= lengths))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{what}[{i}] has {int(lengths[i])} tokens but {int(context[i])} context-only tokens; "
                f"a window needs at least one target (0 <= context < length)"
            )
        digest = hashlib.blake2b(digest_size=16)
        digest.update(lengths.tobytes())
        digest.update(context.tobytes())
        n_targets = lengths - np.maximum(context, 1)
        chunk = 4096
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            part = np.concatenate([np.asarray(w) for w in windows[start:stop]]).astype(np.int64, copy=False)
            ends = np.cumsum(lengths[start:stop])
            outside = (part < 0) | (part >= vocab_size)
            if outside.any():
                i = start + int(np.searchsorted(ends, int(np.flatnonzero(outside)[0]), side="right"))
                raise ValueError(f"{what}[{i}] holds token ids outside the model's vocabulary [0, {vocab_size})")
            pads = np.flatnonzero(part == pad_id)
            if pads.size:  # pad tokens inside a window (fixed-size windows) are not targets
                owner = np.searchsorted(ends, pads, side="right")
                inside = pads - (ends[owner] - lengths[start:stop][owner])
                counted = owner[inside >= np.maximum(context[start:stop][owner], 1)]
                n_targets[start:stop] -= np.bincount(counted, minlength=stop - start)
            digest.update(part.tobytes())
        return cls(list(windows), context, lengths, n_targets, digest.hexdigest())

    def subset(self, indices: np.ndarray) -> "WindowSet":
        return WindowSet([self.windows[i] for i in indices], self.context[indices], self.lengths[indices],
                         self.n_targets[indices], self.digest)


def token_groups(token_types: np.ndarray) -> np.ndarray:
    """Group index (into GROUP_NAMES) of every token id."""
    group = np.full(len(token_types), len(GROUP_NAMES) - 1, dtype=np.int64)
    for g, types in enumerate(TYPE_GROUPS.values()):
        group[np.isin(token_types, [int(t) for t in types])] = g
    return group


def unigram_logprobs(train: WindowSet, token_types: np.ndarray, pad_id: int) -> np.ndarray:
    """log p(token | its type) from add-one smoothed train target frequencies, per token id."""
    vocab_size = len(token_types)
    counts = np.zeros(vocab_size, dtype=np.float64)
    for part in target_tokens(train.windows, train.context):
        counts += np.bincount(part[part != pad_id], minlength=vocab_size)
    types = np.asarray(token_types, dtype=np.int64)
    n_types = int(types.max()) + 1
    type_total = np.bincount(types, weights=counts, minlength=n_types)
    type_size = np.bincount(types, minlength=n_types)
    return np.log(counts + 1.0) - np.log(type_total[types] + type_size[types])


def unigram_baseline(
    val: WindowSet, logprobs: np.ndarray, group: np.ndarray, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Summed -log p(token | type) and counts per group over the val targets."""
    sums = np.zeros(len(GROUP_NAMES))
    counts = np.zeros(len(GROUP_NAMES), dtype=np.int64)
    for part in target_tokens(val.windows, val.context):
        part = part[part != pad_id]
        sums += np.bincount(group[part], weights=-logprobs[part], minlength=len(GROUP_NAMES))
        counts += np.bincount(group[part], minlength=len(GROUP_NAMES))
    return sums, counts


def _per_group(sums, counts) -> dict[str, float]:
    return {name: float(sums[g] / counts[g]) for g, name in enumerate(GROUP_NAMES) if counts[g]}


# ---------------------------------------------------------------- evaluation


def _to_device(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(arr)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _batch_tensors(batch: PackedBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "idx": _to_device(batch.inputs, device),
        "targets": _to_device(batch.targets, device),
        "positions": _to_device(batch.positions, device),
        "segments": _to_device(batch.segments, device),
    }


def _host_tensors(batch: PackedBatch, pin: bool) -> dict[str, torch.Tensor]:
    """The batch as CPU tensors, page-locked with `pin` so the copy to the GPU can overlap compute."""
    arrays = {"idx": batch.inputs, "targets": batch.targets, "positions": batch.positions,
              "segments": batch.segments}
    return {k: torch.from_numpy(a).pin_memory() if pin else torch.from_numpy(a) for k, a in arrays.items()}


@torch.no_grad()
def evaluate(
    model: GPT,
    data: WindowSet,
    batches: list[list[np.ndarray]],
    pad_id: int,
    device: torch.device,
    precision: str,
    group: np.ndarray | None = None,
    dist: Dist | None = None,
) -> dict[str, Any]:
    """Token-weighted mean next-token loss over packed batches, overall and per target type group.

    With a distributed `dist`, each rank evaluates its share of the batches and the sums are
    all-reduced: every rank returns the same result."""
    dist = dist or Dist()
    was_training = model.training
    model.eval()
    n_groups = len(GROUP_NAMES) if group is not None else 1
    group_t = torch.as_tensor(group if group is not None else np.zeros(model.config.vocab_size, np.int64),
                              device=device)
    sums = torch.zeros(n_groups, device=device, dtype=torch.float64)
    counts = torch.zeros(n_groups, device=device, dtype=torch.long)
    for rows in dist.shard(batches):
        tensors = _batch_tensors(collate_packed(data.windows, data.context, rows, model.config.n_ctx, pad_id), device)
        with autocast_context(device, precision):
            _, per_token = model(**tensors, reduction="none")
        mask = tensors["targets"] != IGNORE_INDEX
        g = group_t[tensors["targets"][mask]]
        sums += torch.bincount(g, weights=per_token[mask].double(), minlength=n_groups)
        counts += torch.bincount(g, minlength=n_groups)
    dist.all_reduce_sum(sums)
    dist.all_reduce_sum(counts)
    model.train(was_training)
    sums_np, counts_np = sums.cpu().numpy(), counts.cpu().numpy()
    total = int(counts_np.sum())
    return {
        "loss": float(sums_np.sum() / total) if total else float("nan"),
        "tokens": total,
        "by_type": _per_group(sums_np, counts_np) if group is not None else {},
        "tokens_by_type": ({name: int(counts_np[g]) for g, name in enumerate(GROUP_NAMES) if counts_np[g]}
                           if group is not None else {}),
    }


# ---------------------------------------------------------------- resumable state


def _state_fingerprint(
    model: GPT,
    train: WindowSet,
    val: WindowSet,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    pad_id: int,
    token_types: np.ndarray | None,
    loss_weights: np.ndarray | None,
) -> str:
    """What a resumed run must share with the saved one: config, data, initial weights."""
    cfg = config.to_dict()
    for name in ("device", "precision", "num_threads", "checkpoint_every", "compile", "prefetch"):
        cfg.pop(name)
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"train": cfg, "model": model.config.to_dict(), "device": device.type,
                         "precision": precision, "pad_id": pad_id, "train_data": train.digest,
                         "val_data": val.digest}, sort_keys=True).encode())
    for arr in (token_types, loss_weights):
        h.update(b"none" if arr is None else np.ascontiguousarray(arr).tobytes())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over the old state."""
    from synehrgy_assets.core.output_dirs import atomic_file, stale_temp_files

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    for stale in stale_temp_files(path):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)


def _load_state(path: Path, fingerprint: str, say: Callable[[str], None]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: start over, and say so
        say(f"train: ignoring the unreadable training state {path} ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        say(f"train: ignoring {path}: not a {STATE_FORMAT} v{STATE_VERSION} file")
        return None
    if state.get("fingerprint") != fingerprint:
        say(f"train: ignoring the training state {path} (step {state.get('step')}): it was written for a "
            "different config, data or initial weights; starting from step 0")
        return None
    return state


# ---------------------------------------------------------------- training


def train(
    model: GPT,
    train_windows: list[np.ndarray],
    val_windows: list[np.ndarray],
    config: TrainConfig,
    pad_id: int,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    *,
    train_context: np.ndarray | None = None,
    val_context: np.ndarray | None = None,
    token_types: np.ndarray | None = None,
    loss_weights: np.ndarray | None = None,
    checkpoint_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train in place; on return the model holds the best-validation weights (or the last ones).

    `*_context[i]`: leading context-only tokens of window i (default 0). `token_types` (one type
    per vocab id) turns on the per-type validation report and unigram baseline. `loss_weights`
    (one float per vocab id) weights the training targets; validation stays unweighted. With
    `checkpoint_dir`, a matching saved state there is resumed. `tokens_seen` counts supervised
    targets; `tokens_per_second` excludes evaluation and checkpoint time.
    """
    from synehrgy_assets.core.train_loop import run_training  # the loop imports this module's pieces

    if not train_windows:
        raise ValueError("train: train_windows is empty")
    vocab_size, n_ctx = model.config.vocab_size, model.config.n_ctx
    if not 0 <= pad_id < vocab_size:
        raise ValueError(f"train: pad_id {pad_id} outside the vocabulary [0, {vocab_size})")
    if token_types is not None:
        token_types = np.asarray(token_types, dtype=np.int8)
        if token_types.shape != (vocab_size,):
            raise ValueError(f"train: token_types has shape {token_types.shape}, expected ({vocab_size},)")
    if loss_weights is not None:
        loss_weights = np.asarray(loss_weights, dtype=np.float32)
        if loss_weights.shape != (vocab_size,) or not np.isfinite(loss_weights).all() or (loss_weights < 0).any():
            raise ValueError(f"train: loss_weights must be {vocab_size} finite floats >= 0")
    train_set = WindowSet.build(train_windows, train_context, "train_windows", n_ctx, vocab_size, pad_id)
    val_set = WindowSet.build(val_windows, val_context, "val_windows", n_ctx, vocab_size, pad_id)
    if loss_weights is not None and not (loss_weights[np.setdiff1d(np.arange(vocab_size), [pad_id])] > 0).any():
        raise ValueError("train: loss_weights are zero for every token")

    device = resolve_device(config.device)
    dist, device = distributed.setup(device)  # torchrun: join the group, take this rank's GPU
    if not dist.is_main:  # rank 0 alone reports
        on_log = None

    def say(message: str) -> None:  # resume decisions: to the caller's log, else this module's logger
        if dist.is_main:
            (log or logger.warning)(message)
    precision = resolve_precision(config.precision, device)
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            return run_training(model, train_set, val_set, config, pad_id, on_log, device, precision,
                                token_types, loss_weights, checkpoint_dir, say, dist)
    finally:
        dist.teardown()
        if config.num_threads is not None:
            torch.set_num_threads(previous_threads)

