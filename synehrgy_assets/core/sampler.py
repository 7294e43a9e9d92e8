"""Continuous-batching, KV-cached autoregressive sampling with an optional grammar constraint.

`batch_size` rows each hold one patient. Every step samples one token per row and feeds the
tokens back through the KV cache in one forward. A row whose patient emits eos (or reaches
`max_tokens_per_patient`) is recorded and refilled at once with the next patient, prefilled with
`[bos] + prompt` (whose keys/values are computed once and copied), so no row idles while patients
remain; only the last `batch_size - 1` patients see idle rows, and once at most half the rows are
busy the batch shrinks to them. The KV cache keeps one fill length per row (`KVCache.lengths`), so
rows sit at different positions.

Sliding window: when a row's cache is full (n_ctx tokens) and its patient needs another token,
`roll(tokens_so_far)` gives a shorter context ending with the same token (the training-window
format, `ContextFormat.roll`), the row is re-prefilled with it and decoding continues; the grammar
state is not touched (same last token, same phase). So patients are as long as
`max_tokens_per_patient`, whatever n_ctx. Without `roll`, `1 + len(prompt) + max_tokens_per_patient`
must fit n_ctx (refused up front, never silently cropped).

The constraint's budget is `remaining = max_tokens_per_patient - generated so far` (this token
included); a grammar constraint then forces the shortest closure. A patient is a *forced closure*
when the budget changed its mask at some step (checked only where `remaining` is within the
constraint's `max_closing_cost`). `<pad>` and `<bos>` are never sampled.

Determinism: one `torch.Generator` draws one uniform per row and step (idle rows included), the
patients start in order and take the free rows in ascending row order, and the batch shrinks at
points fixed by the sampled tokens: the same seed, device and arguments give the same sequences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from synehrgy_assets.core.model import GPT, KVCache
from synehrgy_assets.core.devices import autocast_context, resolve_device, resolve_precision

Roll = Callable[[np.ndarray], np.ndarray]


class SamplingConstraint(Protocol):
    """Grammar state machine driven by the sampler (implemented by `GrammarConstraint`).

    Optional attributes: `take` (see below), `max_closing_cost` (int: with `remaining` above it the budget changes no
    mask; without it, forced closures are checked at every step) and `device` (not None: states,
    masks, `remaining` and tokens are torch tensors on that device).
    """

    def start(self, batch_size: int) -> Any: ...

    def allowed(self, state: Any, remaining: Any = None) -> Any:
        """bool [batch, vocab]; `remaining[i]` = tokens row i may still emit, this one included."""
        ...

    def advance(self, state: Any, tokens: Any) -> Any: ...

    def finished(self, state: Any) -> Any: ...

    def restart(self, state: Any, rows: Any, like: Any = None) -> Any:
        """Reset `rows` of `state` to row 0 of `like` (a state advanced through `[bos] + prompt`)."""
        ...

    # Optional: `take(state, rows) -> state` holding only those rows. With it, once no patient is
    # left to start and at most half the rows are busy, the batch shrinks to the busy rows.


@dataclass
class SampleResult:
    sequences: list[np.ndarray]
    n_finished: int  # patients that emitted eos (the others reached the cap, only without a constraint)
    tokens_generated: int
    seconds: float
    tokens_per_second: float
    patients_per_second: float
    n_samples: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    n_forced_closures: int = 0
    forced_closure_rate: float = 0.0
    n_rolls: int = 0
    forced: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per patient
    max_tokens_per_patient: int = 0
    batch_size: int = 0
    steps: int = 0
    row_utilization: float = 0.0  # busy row-steps / row-steps computed (the batch shrinks in the tail)
    # Per decode step: [busy rows, patients not finished when the step began].
    step_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))

    def summary(self) -> dict[str, Any]:
        """Scalars only (no sequences or per-patient/per-step arrays)."""
        return {k: v for k, v in self.__dict__.items() if not isinstance(v, (list, np.ndarray))}


def _check_token(name: str, token: int, vocab_size: int) -> None:
    if not 0 <= int(token) < vocab_size:
        raise ValueError(f"sample: {name}={token} is outside the vocabulary [0, {vocab_size})")


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of unnormalized probabilities [B, K] by inverse CDF: one uniform per row
    (torch.multinomial drew a quarter of CPU sampling time). A zero-probability entry is never
    drawn: it does not raise the CDF, and u stays below the row's total."""
    cdf = probs.double().cumsum(dim=-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=torch.float64) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


def _choose(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Next tokens [B] from float logits [B, V] whose disallowed entries are already -inf.

    Top-k first, then top-p (the smallest set of the most likely tokens whose probability reaches
    p; the most likely token always stays), then a draw at `temperature` (0 = greedy).
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    nucleus = top_p is not None and top_p < 1.0
    if top_k is not None and top_k < logits.size(-1):
        # Disallowed candidates (-inf) get probability 0.
        values, candidates = torch.topk(logits, top_k, dim=-1)  # sorted, most likely first
    elif nucleus:
        values, candidates = torch.sort(logits, dim=-1, descending=True, stable=True)
    else:
        return _draw(torch.softmax(logits / temperature, dim=-1), generator)
    probs = torch.softmax(values / temperature, dim=-1)
    if nucleus:
        # Drop a candidate when the more likely ones already hold p: the first never drops.
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, 0.0)
    return candidates.gather(1, _draw(probs, generator)[:, None]).squeeze(1)


def _as_mask(allowed: Any, batch: int, vocab: int, device: torch.device) -> torch.Tensor:
    """A constraint's mask as a bool tensor [batch, vocab] on `device`."""
    if not isinstance(allowed, torch.Tensor):
        allowed = torch.from_numpy(np.asarray(allowed).astype(bool, copy=False))
    if tuple(allowed.shape) != (batch, vocab):
        raise ValueError(
            f"sample: constraint.allowed returned shape {tuple(allowed.shape)}, "
            f"expected (batch={batch}, vocab={vocab})"
        )
    return allowed.to(device=device, dtype=torch.bool)


def prefill_rows(
    model: GPT,
    cache: KVCache,
    rows: torch.Tensor,
    contexts: list[np.ndarray],
    precision: str = "fp32",
) -> torch.Tensor:
    """Refill `rows` of `cache` with one context each; the float logits [len(rows), V] at each
    context's last token.

    One forward through a temporary cache for those rows only (right padded; a pad position is
    never attended by a real one and lies past the row's new length), copied into the rows; the
    other rows are untouched. Each row's running condition and clocks are those at its last real token.
    """
    device = cache.kv.device
    lengths = np.array([len(c) for c in contexts], dtype=np.int64)
    width = int(lengths.max())
    ids = np.zeros((len(contexts), width), dtype=np.int64)
    for i, context in enumerate(contexts):
        ids[i, : len(context)] = context
    x = torch.from_numpy(ids).to(device)
    tmp = KVCache.for_model(model, len(contexts), max_len=width, dtype=cache.kv.dtype)
    tmp.host_lengths = np.zeros(len(contexts), dtype=np.int64)
    with autocast_context(device, precision):
        logits, _ = model(x, kv_cache=tmp)
    last = torch.from_numpy(lengths - 1).to(device)
    cache.kv[:, :, rows, :, :width] = tmp.kv
    cache.lengths[rows] = last + 1
    if model.cond_emb is not None:
        cache.condition[rows] = model.conditions(x).gather(1, last[:, None]).squeeze(1)
    if model.config.n_clocks:
        values = model.clock_values(x)
        cache.clocks[rows] = values[torch.arange(len(contexts), device=device), last]
    return logits[torch.arange(len(contexts), device=device), last].float()


def _check_context(context: Any, tokens: np.ndarray, n_ctx: int, vocab_size: int) -> np.ndarray:
    context = np.asarray(context, dtype=np.int64).reshape(-1)
    if not 1 <= len(context) < n_ctx:
        raise ValueError(f"sample: roll returned {len(context)} tokens; a rolled context needs 1..{n_ctx - 1} "
                         f"(n_ctx={n_ctx}) to leave room for new tokens")
    if context[-1] != tokens[-1]:
        raise ValueError(f"sample: roll must end the context with the patient's last token {int(tokens[-1])}, "
                         f"got {int(context[-1])}")
    if context.min() < 0 or context.max() >= vocab_size:
        raise ValueError(f"sample: roll returned token ids outside the vocabulary [0, {vocab_size})")
    return context


def _check_arguments(
    config: Any, n_samples: int, prefix: list[int], max_tokens: int, *, roll: Roll | None, batch_size: int,
    temperature: float, top_k: int | None, top_p: float | None, special: dict[str, int],
) -> None:
    """Refuse `sample` arguments that could not give valid patients, before any work."""
    if n_samples < 0:
        raise ValueError(f"sample: n_samples must be >= 0, got {n_samples}")
    if max_tokens < 1:
        raise ValueError(f"sample: max_tokens_per_patient must be >= 1, got {max_tokens}")
    if roll is not None and not callable(roll):
        raise ValueError(f"sample: roll must be a callable tokens -> context or None, got {roll!r}")
    if roll is None and len(prefix) + max_tokens > config.n_ctx:
        raise ValueError(
            f"sample: 1 (bos) + {len(prefix) - 1} prompt tokens + max_tokens_per_patient {max_tokens} = "
            f"{len(prefix) + max_tokens} exceeds the model's n_ctx={config.n_ctx}; lower it to at most "
            f"{config.n_ctx - len(prefix)} or pass roll= to slide the window (sequences are never silently cropped)"
        )
    if len(prefix) > config.n_ctx:
        raise ValueError(f"sample: 1 (bos) + {len(prefix) - 1} prompt tokens exceed the model's n_ctx={config.n_ctx}")
    if batch_size < 1:
        raise ValueError(f"sample: batch_size must be >= 1, got {batch_size}")
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"sample: top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"sample: top_p must be in (0, 1] or None (off), got {top_p}")
    for name, token in special.items():
        _check_token(name, token, config.vocab_size)
    for i, token in enumerate(prefix[1:]):
        _check_token(f"prompt[{i}]", token, config.vocab_size)


def sample(
    model: GPT,
    n_samples: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_tokens_per_patient: int,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float | None = None,
    constraint: SamplingConstraint | None = None,
    roll: Roll | None = None,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    prompt: list[int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    precision: str = "auto",
) -> SampleResult:
    """Sample `n_samples` sequences, each `[bos] + prompt + generated` up to and including eos.

    `max_tokens_per_patient` caps the generated tokens (after bos and prompt) of each patient. `roll` (see the module docstring) lets patients run past
    n_ctx. `device=None` uses the model's device, otherwise the model is moved there.
    `temperature=0` is greedy; `top_k` then `top_p` truncate the distribution (None = off).
    `on_progress(done, total)` is called as patients finish, about every 5 % of them.
    """
    prefix = [int(bos_id)] + [int(t) for t in (prompt or [])]
    max_tokens = int(max_tokens_per_patient)
    _check_arguments(model.config, n_samples, prefix, max_tokens, roll=roll, batch_size=batch_size,
                     temperature=temperature, top_k=top_k, top_p=top_p,
                     special={"bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id})

    if device is None:
        device = model.tok_emb.weight.device
    else:
        device = resolve_device(device)
        model.to(device)
    device = torch.device(device)
    precision = resolve_precision(precision, device)

    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            run = _Run(
                model, n_samples, prefix, eos_id=int(eos_id), pad_id=int(pad_id), max_tokens=max_tokens,
                temperature=float(temperature), top_k=top_k, top_p=None if top_p is None else float(top_p),
                constraint=constraint, roll=roll, batch_size=int(batch_size), seed=int(seed), device=device,
                precision=precision, on_progress=on_progress,
            )
            run.loop()
    finally:
        model.train(was_training)
    return run.result(time.perf_counter() - start)


class _Run:
    """The state of one `sample` call: rows, their patients, the cache and the constraint state."""

    def __init__(
        self, model: GPT, n_samples: int, prefix: list[int], *, eos_id: int, pad_id: int, max_tokens: int,
        temperature: float, top_k: int | None, top_p: float | None, constraint: SamplingConstraint | None,
        roll: Roll | None, batch_size: int, seed: int, device: torch.device, precision: str,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.model, self.n_samples, self.prefix = model, n_samples, np.asarray(prefix, dtype=np.int64)
        self.eos_id, self.pad_id, self.max_tokens = eos_id, pad_id, max_tokens
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.constraint, self.roll = constraint, roll
        self.device, self.precision, self.on_progress = device, precision, on_progress
        self.n_ctx, self.vocab = model.config.n_ctx, model.config.vocab_size
        self.B = max(min(batch_size, n_samples), 1)

        self.banned = torch.zeros(self.vocab, dtype=torch.bool, device=device)
        self.banned[pad_id] = True
        self.banned[int(prefix[0])] = True
        self.banned[eos_id] = False
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

        self.sequences: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_samples
        self.forced = np.zeros(n_samples, dtype=bool)
        self.ended_with_eos = np.zeros(n_samples, dtype=bool)
        self.n_rolls = 0
        self.busy_row_steps = 0
        self.row_steps = 0
        self.step_rows: list[tuple[int, int]] = []
        self.n_done = 0
        self._report_every = max(1, n_samples // 20)
        self._next_report = self._report_every

    # ---- helpers
    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device. On CUDA through page-locked memory and without blocking: a
        copy from pageable memory would wait for the stream, a host sync in every decode step."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _rows(self, rows: np.ndarray) -> torch.Tensor:
        return self._upload(np.asarray(rows, dtype=np.int64))

    def _constraint_rows(self, rows: np.ndarray) -> Any:
        return self._rows(rows) if self.on_device else rows

    def _grow(self, need: int) -> None:
        """Widen the per-row token buffer (patients may be far longer than n_ctx)."""
        if need <= self.buf.shape[1]:
            return
        width = min(max(need, 2 * self.buf.shape[1]), len(self.prefix) + self.max_tokens)
        wider = np.zeros((len(self.buf), width), dtype=np.int64)
        wider[:, : self.buf.shape[1]] = self.buf
        self.buf = wider

    def _finish(self, rows: np.ndarray, eos: np.ndarray) -> None:
        P = len(self.prefix)
        for b in rows:
            p = int(self.patient[b])
            self.sequences[p] = self.buf[b, : P + self.n_gen[b]].copy()
            self.ended_with_eos[p] = bool(eos[b])
        self.n_done += len(rows)
        if self.on_progress is not None and len(rows) and (
            self.n_done >= self._next_report or self.n_done == self.n_samples
        ):
            self.on_progress(self.n_done, self.n_samples)
            self._next_report = (self.n_done // self._report_every + 1) * self._report_every

    def result(self, seconds: float) -> SampleResult:
        """The sampled patients and the figures of the run, which took `seconds`."""
        n_samples = self.n_samples
        tokens_generated = int(sum(len(s) for s in self.sequences) - len(self.prefix) * n_samples)
        n_forced = int(self.forced.sum())
        return SampleResult(
            sequences=self.sequences,
            n_finished=int(self.ended_with_eos.sum()),
            tokens_generated=tokens_generated,
            seconds=seconds,
            tokens_per_second=tokens_generated / max(seconds, 1e-9),
            patients_per_second=n_samples / max(seconds, 1e-9),
            n_samples=n_samples,
            device=str(self.device),
            precision=self.precision,
            n_forced_closures=n_forced,
            forced_closure_rate=n_forced / max(n_samples, 1),
            n_rolls=self.n_rolls,
            forced=self.forced,
            max_tokens_per_patient=self.max_tokens,
            batch_size=self.B,
            steps=len(self.step_rows),
            row_utilization=self.busy_row_steps / max(self.row_steps, 1),
            step_rows=np.asarray(self.step_rows, dtype=np.int64).reshape(-1, 2),
        )

    # ---- the loop
    def loop(self) -> None:
        if self.n_samples == 0:
            return
        logits = self._start()
        while True:
            self.step_rows.append((int(self.busy.sum()), self.n_samples - self.n_done))
            self.busy_row_steps += int(self.busy.sum())
            self.row_steps += self.width
            nxt, report, flags_forced = self._next_tokens(logits)
            full, out = self._feed(nxt)
            # Read on the host only now, so the forward above was queued first.
            done_rows, done = self._take(nxt, report.cpu().numpy(), flags_forced)
            if self.n_done == self.n_samples:
                return
            logits = out[:, -1].float()
            self._refill(done_rows, logits)
            self._roll(np.flatnonzero(full & self.busy & ~done), logits)
            logits = self._shrink(logits)

    def _start(self) -> torch.Tensor:
        """Prefill `[bos] + prompt` and give the rows the first patients; the first logits [B, V].
        The loop's state lives on `self`; `width` is the batch, `B` until it shrinks."""
        model, device, B, P = self.model, self.device, self.B, len(self.prefix)
        constraint = self.constraint
        self.on_device = constraint is not None and getattr(constraint, "device", None) is not None
        self.closing = getattr(constraint, "max_closing_cost", None)
        self.cache_dtype = torch.bfloat16 if self.precision == "bf16" else model.tok_emb.weight.dtype

        # `[bos] + prompt` once; every patient's prefill is a copy of it.
        self.template = KVCache.for_model(model, 1, max_len=P, dtype=self.cache_dtype)
        prefix_t = torch.from_numpy(self.prefix).to(device)[None]
        with autocast_context(device, self.precision):
            first_logits, _ = model(prefix_t, kv_cache=self.template)
        self.first_logits = first_logits[0, -1].float()
        self.cache = KVCache.for_model(model, B, dtype=self.cache_dtype)

        self.state = self.like = None
        if constraint is not None:
            # The constraint sees the prompt (bos included) before sampling.
            self.state = constraint.start(B)
            for token in self.prefix:
                self.state = constraint.advance(self.state, np.full(B, token, dtype=np.int64))

        all_rows = np.arange(B)
        self._refill_cache(all_rows)
        self.buf = np.zeros((B, min(P + self.max_tokens, 2 * self.n_ctx)), dtype=np.int64)
        self.buf[:, :P] = self.prefix
        self.n_gen = np.zeros(B, dtype=np.int64)      # tokens generated for the row's patient
        self.cache_len = np.full(B, P, dtype=np.int64)  # host copy of cache.lengths
        self.cache.host_lengths = self.cache_len      # the model's forward advances both
        self.patient = all_rows.copy()                # the patient of each row (-1 = idle)
        self.busy = np.ones(B, dtype=bool)
        self.busy_t = torch.ones(B, dtype=torch.bool, device=device)
        self.next_patient = B
        self.pad = torch.full((B,), self.pad_id, dtype=torch.long, device=device)
        self.no_flag = torch.zeros(B, dtype=torch.long, device=device)
        self.can_shrink = constraint is None or hasattr(constraint, "take")
        self.width = B
        return self.first_logits[None].repeat(B, 1)

    def _refill_cache(self, rows: np.ndarray) -> None:
        """Give `rows` the cached `[bos] + prompt` (keys, values, condition and clocks)."""
        idx, P = self._rows(rows), len(self.prefix)
        self.cache.kv[:, :, idx, :, :P] = self.template.kv
        self.cache.lengths[idx] = P
        self.cache.copy_state(idx, self.template, 0)

    def _next_tokens(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Draw one token per row: the tokens [width], the report the host reads after the forward
        ([tokens, dead rows, rows whose budget changed the mask]) and whether its last row counts."""
        logits = logits.masked_fill(self.banned, float("-inf"))
        differs = None
        if self.constraint is not None:
            logits, differs = self._constrain(logits)
        dead = ~torch.isfinite(logits).any(dim=-1) & self.busy_t
        # Idle (and dead) rows draw from finite logits so the draw stays valid; idle rows emit pad.
        logits = logits.masked_fill((dead | ~self.busy_t)[:, None], 0.0)
        nxt = _choose(logits, self.temperature, self.top_k, self.top_p, self.generator)
        nxt = torch.where(self.busy_t, nxt, self.pad)
        report = torch.stack([nxt, dead.long(), self.no_flag if differs is None else differs.long()])
        return nxt, report, differs is not None

    def _constrain(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The logits with what the constraint forbids at -inf, and per row whether the budget
        changed the mask (None when no busy row is near its cap)."""
        remaining = np.where(self.busy, self.max_tokens - self.n_gen, self.max_tokens)
        allowed = _as_mask(
            self.constraint.allowed(self.state, self._rows(remaining) if self.on_device else remaining),
            self.width, self.vocab, self.device,
        )
        differs = None
        near = self.busy if self.closing is None else self.busy & (remaining <= self.closing)
        if near.any():
            # Did the budget change what this row may sample? (= a forced closure)
            free = _as_mask(self.constraint.allowed(self.state, None), self.width, self.vocab, self.device)
            differs = ((free ^ allowed) & ~self.banned).any(dim=-1) & self._upload(near)
        return logits.masked_fill(~allowed, float("-inf")), differs

    def _feed(self, nxt: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """One forward of every row's token through the cache: the rows whose cache was full
        before it, and the model's output."""
        # Feed every row's token before looking at them on the host. A row whose cache is full
        # (to be rolled, unless it just ended) and an idle row feed junk at position 0; a row
        # that turns out finished feeds junk past its end: refill and roll overwrite both.
        full = self.cache_len >= self.n_ctx
        reset = np.flatnonzero(full | ~self.busy)
        if len(reset):
            self.cache.lengths[self._rows(reset)] = 0
            self.cache_len[reset] = 0
        with autocast_context(self.device, self.precision):
            out, _ = self.model(nxt[:, None], kv_cache=self.cache)
        return full, out

    def _take(self, nxt: torch.Tensor, host: np.ndarray, flags_forced: bool) -> tuple[np.ndarray, np.ndarray]:
        """Append the busy rows' tokens (`host`: the report on the host) and finish the patients
        that ended; the rows that ended, as indices and as a mask."""
        tokens = host[0]
        if host[1].any():
            row = int(np.flatnonzero(host[1])[0])
            raise RuntimeError(
                f"sample: the constraint allowed no token for unfinished row {row} (patient "
                f"{int(self.patient[row])}, {int(self.n_gen[row])} tokens generated, max_tokens_per_patient="
                f"{self.max_tokens}); pad and bos are never sampled"
            )
        if self.constraint is not None:
            self.state = self.constraint.advance(self.state, nxt if self.on_device else tokens)
        P, busy = len(self.prefix), self.busy
        rows = np.flatnonzero(busy)
        self._grow(P + int(self.n_gen[rows].max()) + 1)
        self.buf[rows, P + self.n_gen[rows]] = tokens[rows]
        self.n_gen[rows] += 1
        if flags_forced:
            flagged = np.flatnonzero(host[2] & busy)
            self.forced[self.patient[flagged]] = True
        eos = busy & (tokens == self.eos_id)
        done = busy & (eos | (self.n_gen >= self.max_tokens))
        done_rows = np.flatnonzero(done)
        self._finish(done_rows, eos)
        return done_rows, done

    def _prompt_state(self) -> Any:
        """The constraint's state after `[bos] + prompt`, for one row (made once, when first needed)."""
        if self.like is None:
            self.like = self.constraint.start(1)
            for token in self.prefix:
                self.like = self.constraint.advance(self.like, np.array([token], dtype=np.int64))
        return self.like

    def _refill(self, done_rows: np.ndarray, logits: torch.Tensor) -> None:
        """Ended rows take the next patients, in row order (their logits in `logits` become the
        prompt's); the rest go idle."""
        refill = done_rows[: max(0, self.n_samples - self.next_patient)]
        idle = done_rows[len(refill):]
        if len(refill):
            self.patient[refill] = np.arange(self.next_patient, self.next_patient + len(refill))
            self.next_patient += len(refill)
            self.n_gen[refill] = 0
            self._refill_cache(refill)
            self.cache_len[refill] = len(self.prefix)
            logits[self._rows(refill)] = self.first_logits
            if self.constraint is not None:
                like = self._prompt_state()
                self.state = self.constraint.restart(self.state, self._constraint_rows(refill), like)
        if len(idle):
            self.patient[idle] = -1
            self.busy[idle] = False
            self.busy_t = self._upload(self.busy)

    def _roll(self, rolled: np.ndarray, logits: torch.Tensor) -> None:
        """Full windows slide: re-prefill `rolled` rows with the rolled context (same last token,
        same phase) and put its logits in `logits`."""
        if not len(rolled):
            return
        if self.roll is None:  # unreachable: the length check in `sample` rules it out
            raise RuntimeError("sample: a row's context is full and no roll was given")
        P = len(self.prefix)
        contexts = []
        for b in rolled:
            so_far = self.buf[b, : P + self.n_gen[b]]
            contexts.append(_check_context(self.roll(so_far.copy()), so_far, self.n_ctx, self.vocab))
        idx = self._rows(rolled)
        logits[idx] = prefill_rows(self.model, self.cache, idx, contexts, self.precision)
        self.cache_len[rolled] = [len(c) for c in contexts]
        self.n_rolls += len(rolled)

    def _shrink(self, logits: torch.Tensor) -> torch.Tensor:
        """The tail: no patient left to start and at most half the rows busy -> drop idle rows.
        The logits of the rows kept."""
        n_busy = int(self.busy.sum())
        if not (self.can_shrink and self.next_patient >= self.n_samples and 0 < n_busy <= self.width // 2):
            return logits
        keep = np.flatnonzero(self.busy)
        keep_t = self._rows(keep)
        self.width = B = len(keep)
        smaller = KVCache.for_model(self.model, B, dtype=self.cache_dtype)
        smaller.kv.copy_(self.cache.kv[:, :, keep_t])
        smaller.lengths.copy_(self.cache.lengths[keep_t])
        smaller.copy_state(slice(None), self.cache, keep_t)
        self.cache = smaller
        logits = logits[keep_t]
        if self.constraint is not None:
            self.state = self.constraint.take(self.state, self._constraint_rows(keep))
        self.buf, self.n_gen, self.cache_len = self.buf[keep], self.n_gen[keep], self.cache_len[keep]
        self.cache.host_lengths = self.cache_len
        self.patient, self.busy = self.patient[keep], self.busy[keep]
        self.busy_t = torch.ones(B, dtype=torch.bool, device=self.device)
        self.pad, self.no_flag = self.pad[:B], self.no_flag[:B]
        return logits
