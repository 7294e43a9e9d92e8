"""The optimizer loop behind `trainer.train`: the plan (steps, validation batches, baseline), the
resumable `TrainState`, one step, one log record with its evaluation, and the `TrainResult`.

`trainer.train` checks the inputs and sets up the device and the process group; `run_training`
does the rest. Everything a killed run needs to continue is in `TrainState`: the saved training
state is its fields (plain containers and tensors) beside the weights, optimizer and RNG.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from synehrgy_assets.core import distributed
from synehrgy_assets.core.devices import autocast_context
from synehrgy_assets.core.distributed import Dist
from synehrgy_assets.core.model import GPT, IGNORE_INDEX
from synehrgy_assets.core.packing import OneAhead, batches_of, collate_packed, epoch_rows, pack_rows
from synehrgy_assets.core.trainer import (
    STATE_FILE,
    STATE_FORMAT,
    STATE_VERSION,
    TrainConfig,
    TrainResult,
    WindowSet,
    _host_tensors,
    _load_state,
    _peak_memory,
    _per_group,
    _save_state,
    _state_fingerprint,
    evaluate,
    lr_at,
    make_optimizer,
    planned_steps,
    token_groups,
    unigram_baseline,
    unigram_logprobs,
)


@dataclass
class TrainState:
    """Everything a resumed run needs, in plain containers: the saved training state holds these
    fields under their names, so a state written before they were a class still loads."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    finished: bool = False
    stopped_early: bool = False
    stopped_at_deadline: bool = False
    tokens_seen: int = 0  # supervised targets
    positions_seen: int = 0
    padding_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None  # the best weights, on the CPU
    best_eval: dict[str, Any] | None = None
    evals_since_best: int = 0
    # The loss summed since the last log record, on the device: no host sync on steps that do not log.
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    loss_steps: int = 0
    window_tokens: int = 0  # targets since the last log record (its tokens per second)
    last_train_loss: float = float("nan")
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict would deep-copy the best weights on every save.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "TrainState":
        # A field added later takes its default in a state saved before it existed.
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


class EpochBatches:
    """The global batches of one epoch (a pure function of seed and epoch), one epoch cached."""

    def __init__(self, lengths: np.ndarray, n_ctx: int, config: TrainConfig, global_batch: int):
        self._args = (lengths, n_ctx, config.seed)
        self._pool = config.pack_pool_windows
        self._global_batch = global_batch
        self._cache: dict[int, list[list[np.ndarray]]] = {}

    def __call__(self, epoch: int) -> list[list[np.ndarray]]:
        if epoch not in self._cache:
            self._cache.clear()
            lengths, n_ctx, seed = self._args
            self._cache[epoch] = batches_of(epoch_rows(lengths, n_ctx, seed, epoch, self._pool), self._global_batch)
        return self._cache[epoch]


@dataclass
class Plan:
    """The run's fixed numbers: the budget in steps, and the validation batches and baseline."""

    steps_per_epoch: int
    tokens_per_epoch: int
    total_steps: int
    eval_every: int
    val_set: WindowSet
    val_batches: list[list[np.ndarray]]
    val_padding: float | None
    group: np.ndarray | None  # token id -> type group, with token_types
    baseline_total: float | None
    baseline_by_type: dict[str, float]


def make_plan(train_set: WindowSet, val_set: WindowSet, config: TrainConfig, n_ctx: int, global_batch: int,
              epoch_batches: EpochBatches, token_types: np.ndarray | None, pad_id: int) -> Plan:
    # Epoch 0's packing gives the steps per epoch (later epochs differ by a row or so).
    steps_per_epoch = len(epoch_batches(0))
    tokens_per_epoch = int(train_set.n_targets.sum())
    total_steps = planned_steps(config, steps_per_epoch, tokens_per_epoch)
    # Validation: every window (or a seeded sample), packed once in a fixed order.
    if config.val_max_windows is not None and len(val_set.windows) > config.val_max_windows:
        picked = np.sort(np.random.default_rng([config.seed, 1]).choice(
            len(val_set.windows), config.val_max_windows, replace=False))
        val_set = val_set.subset(picked)
    val_rows = pack_rows(val_set.lengths, n_ctx, None, config.pack_pool_windows)
    val_positions = len(val_rows) * n_ctx
    group = token_groups(token_types) if token_types is not None else None
    baseline_total: float | None = None
    baseline_by_type: dict[str, float] = {}
    if group is not None and val_rows:
        sums, counts = unigram_baseline(val_set, unigram_logprobs(train_set, token_types, pad_id), group, pad_id)
        baseline_by_type = _per_group(sums, counts)
        baseline_total = float(sums.sum() / max(counts.sum(), 1))
    return Plan(
        steps_per_epoch=steps_per_epoch, tokens_per_epoch=tokens_per_epoch, total_steps=total_steps,
        eval_every=config.eval_every or steps_per_epoch, val_set=val_set,
        val_batches=batches_of(val_rows, global_batch),
        val_padding=1.0 - float((val_set.lengths - 1).sum()) / val_positions if val_rows else None,
        group=group, baseline_total=baseline_total, baseline_by_type=baseline_by_type)


class TrainingRun:
    """One session of a (possibly resumed) training run: the model on its device, the optimizer,
    the state, and the timers of this session."""

    def __init__(self, model: GPT, train_set: WindowSet, plan: Plan, epoch_batches: EpochBatches,
                 config: TrainConfig, pad_id: int, device: torch.device, precision: str, dist: Dist,
                 loss_weights: np.ndarray | None, on_log: Callable[[dict[str, Any]], None] | None):
        self.model, self.train_set, self.plan, self.epoch_batches = model, train_set, plan, epoch_batches
        self.config, self.pad_id, self.device, self.precision, self.dist = config, pad_id, device, precision, dist
        self.on_log = on_log
        torch.manual_seed(config.seed + 7919 * dist.rank)  # dropout masks (rank 0: as in one process)
        model.to(device).train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        forward = model
        if dist.enabled:  # gradients averaged over the ranks (bucketed all-reduce overlapping backward)
            forward = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile if config.compile is not None else device.type == "cuda":
            # Automatic dynamic shapes: one graph for the full batches, one more for a short last one.
            forward = torch.compile(forward)
        self.forward = forward
        self.optimizer = make_optimizer(model, config, device)
        self.pin = device.type == "cuda"
        self.prefetch = OneAhead(self._host_batch, enabled=config.prefetch if config.prefetch is not None else self.pin)
        self.weights_t = torch.as_tensor(loss_weights, device=device) if loss_weights is not None else None
        self.state = TrainState(loss_sum=torch.zeros((), device=device))
        self.state_path: Path | None = None
        self.fingerprint = ""

    def _host_batch(self, rows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        ts = self.train_set
        return _host_tensors(collate_packed(ts.windows, ts.context, rows, self.model.config.n_ctx, self.pad_id),
                             self.pin)

    def _local_share(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        # A rank without rows (a short last batch) runs one row with zero weight: DDP needs its backward.
        return self.dist.shard(rows) or rows[:1]

    # ---- resumable state
    def resume(self, state_path: Path | None, fingerprint: str, say: Callable[[str], None]) -> int | None:
        """Load a matching saved state (returns its step), replaying its history to `on_log`."""
        self.state_path, self.fingerprint = state_path, fingerprint
        saved = _load_state(state_path, fingerprint, say) if state_path is not None else None
        resumed_from: int | None = None
        if saved is not None:
            self.model.load_state_dict(saved.pop("model"))
            self.optimizer.load_state_dict(saved.pop("optimizer"))
            torch.set_rng_state(saved.pop("rng"))
            cuda_rng = saved.pop("cuda_rng", None)
            if self.device.type == "cuda" and cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            saved["loss_sum"] = saved["loss_sum"].to(self.device)
            self.state = TrainState.from_dict(saved)
            resumed_from = self.state.step
            if self.dist.rank:  # the saved RNG is rank 0's; the others draw their own dropout masks
                torch.manual_seed(self.config.seed + 7919 * self.dist.rank + 104729 * resumed_from)
            say(f"train: resuming from step {resumed_from} of {self.plan.total_steps} ({state_path})")
            if self.on_log is not None:  # replay, so a new tracking run holds the whole curve
                for record in self.state.history:
                    self.on_log(dict(record))
        self.dist.barrier()  # every rank has read the saved state before rank 0 may overwrite it
        return resumed_from

    def write_state(self) -> None:
        if not self.dist.is_main:
            return
        t0 = time.perf_counter()
        st = self.state
        payload = st.to_dict()
        payload.update(
            format=STATE_FORMAT, version=STATE_VERSION, fingerprint=self.fingerprint,
            model={k: v.detach().to("cpu") for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(), rng=torch.get_rng_state(),
            loss_sum=st.loss_sum.detach().to("cpu"),
        )
        if self.device.type == "cuda":
            payload["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        _save_state(self.state_path, payload)
        st.checkpoint_seconds += time.perf_counter() - t0

    # ---- the loop
    def run(self) -> None:
        st, plan, config = self.state, self.plan, self.config
        self.session_start = self.window_start = time.perf_counter()
        self.session_other = 0.0  # eval + checkpoint seconds of this session
        self.prior_seconds = st.train_seconds + st.eval_seconds + st.checkpoint_seconds  # earlier sessions
        while not st.finished and st.step < plan.total_steps:
            batches = self.epoch_batches(st.epoch)
            if st.batch_in_epoch >= len(batches):
                st.epoch += 1
                st.batch_in_epoch = 0
                continue
            lr = lr_at(st.step, plan.total_steps, config)
            self._step(batches, lr)
            step = st.step
            if self._past_deadline():
                st.stopped_at_deadline = st.finished = True
            is_last = step == plan.total_steps or st.stopped_at_deadline
            do_eval = bool(plan.val_batches) and (step % plan.eval_every == 0 or is_last)
            if step % config.log_every == 0 or is_last or do_eval:
                self._log(lr, len(batches), do_eval)
            if self.state_path is not None and config.checkpoint_every and step % config.checkpoint_every == 0 \
                    and not st.finished and step < plan.total_steps:
                before = st.checkpoint_seconds
                self.write_state()
                self.session_other += st.checkpoint_seconds - before
                self.window_start += st.checkpoint_seconds - before
        self.prefetch.close()
        st.train_seconds += max(time.perf_counter() - self.session_start - self.session_other, 0.0)
        st.finished = True
        if self.state_path is not None:
            self.write_state()
        if st.best_state is not None:
            self.model.load_state_dict(st.best_state)

    def _past_deadline(self) -> bool:
        """Whether training time (this session and earlier ones) reached `deadline_seconds`; every
        DDP rank takes rank 0's answer, so all stop at the same step."""
        deadline = self.config.deadline_seconds
        if not deadline:
            return False
        past = self.prior_seconds + time.perf_counter() - self.session_start >= deadline
        if self.dist.enabled:
            flag = torch.tensor([1.0 if past and self.dist.rank == 0 else 0.0], device=self.device)
            past = bool(self.dist.all_reduce_sum(flag).item() > 0)
        return past

    def _step(self, batches: list[list[np.ndarray]], lr: float) -> None:
        """One optimizer step on the epoch's next global batch (this rank's share of its rows)."""
        st, dist, device = self.state, self.dist, self.device
        for group_ in self.optimizer.param_groups:
            group_["lr"] = lr
        rows = batches[st.batch_in_epoch]
        # Counts of the whole (global) batch; under DDP this rank runs its shard of the rows only.
        n_tokens, n_positions, n_padding = distributed.global_batch_counts(
            rows, self.train_set.lengths, self.train_set.n_targets, self.model.config.n_ctx)
        local_rows = dist.shard(rows)
        here = self.prefetch.get((st.epoch, st.batch_in_epoch), self._local_share(rows))
        tensors = {k: t.to(device, non_blocking=self.pin) for k, t in here.items()}
        if st.batch_in_epoch + 1 < len(batches):  # collated while this step runs
            following = batches[st.batch_in_epoch + 1]
            self.prefetch.ahead((st.epoch, st.batch_in_epoch + 1), self._local_share(following))
        with autocast_context(device, self.precision):
            _, per_token = self.forward(**tensors, reduction="none")
        targets = tensors["targets"]
        share = 1.0 if local_rows else 0.0
        if self.weights_t is None:
            loss = per_token.sum() * share / max(n_tokens, 1)
        else:
            w = self.weights_t[targets.clamp(min=0)] * (targets != IGNORE_INDEX) * share
            loss = (per_token * w).sum() / dist.all_reduce_sum(w.sum().detach()).clamp(min=1e-12)
        self.optimizer.zero_grad(set_to_none=True)
        # This rank's part of the global mean; DDP averages gradients, hence the factor world_size.
        (loss * dist.world_size if dist.enabled else loss).backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        st.step += 1
        st.batch_in_epoch += 1
        st.tokens_seen += n_tokens
        st.positions_seen += n_positions
        st.padding_seen += n_padding
        st.window_tokens += n_tokens
        st.loss_sum += loss.detach()  # no host sync until a log step
        st.loss_steps += 1

    def _log(self, lr: float, n_batches: int, do_eval: bool) -> None:
        """One history record: the mean train loss since the last one, and an evaluation with `do_eval`."""
        st, step = self.state, self.state.step
        # mean over the steps since the last log (the ranks' parts summed)
        last = float(self.dist.all_reduce_sum(st.loss_sum.clone()).item() / st.loss_steps)
        if not math.isfinite(last):
            raise RuntimeError(f"train: loss became {last} by step {step} (lr {lr:.3g}); "
                               "lower learning_rate or check the windows")
        now = time.perf_counter()
        record: dict[str, Any] = {
            "step": step,
            "epoch": st.epoch + st.batch_in_epoch / n_batches,
            "train_loss": last,
            "lr": lr,
            "tokens_seen": st.tokens_seen,
            "tokens_per_second": st.window_tokens / max(now - self.window_start, 1e-9),
            "padding_fraction": st.padding_seen / st.positions_seen,
            "elapsed_seconds": self.prior_seconds + now - self.session_start,
        }
        st.last_train_loss = last
        st.loss_sum.zero_()
        st.loss_steps = st.window_tokens = 0
        self.window_start = now
        if do_eval:
            self._evaluate(record)
        st.history.append(record)
        if self.on_log is not None:
            self.on_log(dict(record))

    def _evaluate(self, record: dict[str, Any]) -> None:
        """Validate, keep the best weights, count evaluations without progress (early stopping)."""
        st, plan, config = self.state, self.plan, self.config
        result = evaluate(self.model, plan.val_set, plan.val_batches, self.pad_id, self.device, self.precision,
                          plan.group, self.dist)
        record["val_loss"] = result["loss"]
        if plan.group is not None:
            record["val_loss_by_type"] = result["by_type"]
            record["unigram_baseline_by_type"] = dict(plan.baseline_by_type)
        if result["loss"] < st.best_val:
            plateau = result["loss"] >= st.best_val - config.min_delta  # kept, but no progress
            st.best_val, st.best_step = result["loss"], st.step
            st.evals_since_best = st.evals_since_best + 1 if plateau else 0
            st.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            st.best_eval = result
        else:
            st.evals_since_best += 1
        record["best_val_loss"] = st.best_val
        spent = time.perf_counter() - self.window_start
        st.eval_seconds += spent
        self.session_other += spent
        self.window_start = time.perf_counter()
        if config.patience and st.evals_since_best >= config.patience:
            st.stopped_early = st.finished = True

    def result(self, setup_seconds: float, resumed_from: int | None) -> TrainResult:
        st, plan = self.state, self.plan
        peak, peak_kind = _peak_memory(self.device)
        best_eval = st.best_eval or {}
        return TrainResult(
            history=st.history,
            best_val_loss=None if st.best_step is None else st.best_val,
            final_train_loss=st.last_train_loss,
            tokens_seen=st.tokens_seen,
            seconds=st.train_seconds + st.eval_seconds + st.checkpoint_seconds + setup_seconds,
            tokens_per_second=st.tokens_seen / max(st.train_seconds, 1e-9),
            device=str(self.device),
            precision=self.precision,
            peak_memory_bytes=peak,
            peak_memory_kind=peak_kind,
            steps=st.step,
            best_step=st.best_step,
            stopped_early=st.stopped_early,
            stopped_at_deadline=st.stopped_at_deadline,
            total_steps=plan.total_steps,
            steps_per_epoch=plan.steps_per_epoch,
            epochs_run=st.epoch + st.batch_in_epoch / len(self.epoch_batches(st.epoch)),
            train_tokens_per_epoch=plan.tokens_per_epoch,
            padding_fraction=st.padding_seen / max(st.positions_seen, 1),
            val_padding_fraction=plan.val_padding,
            val_windows=len(plan.val_set.windows),
            val_tokens=int(plan.val_set.n_targets.sum()),
            val_loss_by_type=dict(best_eval.get("by_type", {})),
            val_tokens_by_type=dict(best_eval.get("tokens_by_type", {})),
            unigram_baseline=plan.baseline_total,
            unigram_baseline_by_type=plan.baseline_by_type,
            resumed_from_step=resumed_from,
            eval_seconds=st.eval_seconds,
            checkpoint_seconds=st.checkpoint_seconds,
        )


def run_training(model: GPT, train_set: WindowSet, val_set: WindowSet, config: TrainConfig, pad_id: int,
                 on_log: Callable[[dict[str, Any]], None] | None, device: torch.device, precision: str,
                 token_types: np.ndarray | None, loss_weights: np.ndarray | None,
                 checkpoint_dir: str | Path | None, say: Callable[[str], None], dist: Dist = Dist()) -> TrainResult:
    """Plan, resume if a matching state is saved, run the loop, and report."""
    start = time.perf_counter()
    n_ctx = model.config.n_ctx
    global_batch = config.batch_size * dist.world_size  # batch_size rows on every rank
    epoch_batches = EpochBatches(train_set.lengths, n_ctx, config, global_batch)
    plan = make_plan(train_set, val_set, config, n_ctx, global_batch, epoch_batches, token_types, pad_id)
    state_path = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir is not None else None
    fingerprint = _state_fingerprint(model, train_set, plan.val_set, config, device, precision, pad_id,
                                     token_types, loss_weights) if state_path is not None else ""
    run = TrainingRun(model, train_set, plan, epoch_batches, config, pad_id, device, precision, dist,
                      loss_weights, on_log)
    resumed_from = run.resume(state_path, fingerprint, say)
    setup_seconds = time.perf_counter() - start
    run.run()
    return run.result(setup_seconds, resumed_from)
