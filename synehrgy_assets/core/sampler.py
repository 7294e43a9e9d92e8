"""Batched, KV-cached autoregressive sampling with an optional grammar constraint.

Each batch prefills `[bos] + prompt` once, then feeds one token per step through the KV cache.
Rows that emitted eos emit pad afterwards; a batch stops as soon as every row has emitted eos.
`<pad>` and `<bos>` are never sampled (they are not legitimate continuations; the reference
sampled them mid-sequence). A sequence longer than the model's context is refused up front
(`max_new_tokens + 1 + len(prompt) > n_ctx` raises) rather than silently cropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch

from synehrgy_assets.core.model import GPT, KVCache
from synehrgy_assets.core.trainer import autocast_context, resolve_device, resolve_precision


class SamplingConstraint(Protocol):
    """Grammar state machine driven by the sampler (implemented by the tokenizer)."""

    def start(self, batch_size: int) -> Any: ...

    def allowed(self, state: Any, remaining: np.ndarray | None = None) -> np.ndarray:
        """bool [batch, vocab]; `remaining[i]` = tokens row i may still emit, this one included."""
        ...

    def advance(self, state: Any, tokens: np.ndarray) -> Any: ...

    def finished(self, state: Any) -> np.ndarray: ...


@dataclass
class SampleResult:
    sequences: list[np.ndarray]
    n_finished: int
    tokens_generated: int
    seconds: float
    tokens_per_second: float
    patients_per_second: float
    n_samples: int = 0
    device: str = "cpu"
    precision: str = "fp32"

    def summary(self) -> dict[str, Any]:
        """Scalars only (no sequences)."""
        return {k: v for k, v in self.__dict__.items() if k != "sequences"}


def _check_token(name: str, token: int, vocab_size: int) -> None:
    if not 0 <= int(token) < vocab_size:
        raise ValueError(f"sample: {name}={token} is outside the vocabulary [0, {vocab_size})")


def _choose(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Next tokens [B] from float logits [B, V] whose disallowed entries are already -inf."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    if top_k is not None and top_k < logits.size(-1):
        # Draw among the k candidates only: the multinomial's RNG over the full vocabulary was a
        # quarter of CPU sampling time. Disallowed candidates (-inf) get probability 0.
        values, candidates = torch.topk(logits, top_k, dim=-1)
        probs = torch.softmax(values / temperature, dim=-1)
        choice = torch.multinomial(probs, 1, generator=generator)
        return candidates.gather(1, choice).squeeze(1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _allowed_mask(
    constraint: SamplingConstraint, state: Any, remaining: np.ndarray, batch: int, vocab: int, device: torch.device
) -> tuple[torch.Tensor, bool]:
    """The constraint's mask as a bool tensor on `device`, and whether it came as a torch tensor
    (a constraint kept on the accelerator is then fed torch tokens, with no host round trip)."""
    allowed = constraint.allowed(state, remaining)
    is_tensor = isinstance(allowed, torch.Tensor)
    if not is_tensor:
        allowed = torch.from_numpy(np.asarray(allowed).astype(bool, copy=False))
    if tuple(allowed.shape) != (batch, vocab):
        raise ValueError(
            f"sample: constraint.allowed returned shape {tuple(allowed.shape)}, "
            f"expected (batch={batch}, vocab={vocab})"
        )
    return allowed.to(device=device, dtype=torch.bool), is_tensor


def _sample_batch(
    model: GPT,
    batch: int,
    prefix: list[int],
    *,
    eos_id: int,
    pad_id: int,
    banned: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    constraint: SamplingConstraint | None,
    generator: torch.Generator,
    device: torch.device,
    precision: str,
) -> np.ndarray:
    """Generated tokens [batch, steps_run] (pad after eos)."""
    vocab = model.config.vocab_size
    cache_dtype = torch.bfloat16 if precision == "bf16" else model.tok_emb.weight.dtype
    # The last sampled token is never fed back, so it needs no cache slot.
    cache = KVCache.for_model(model, batch, max_len=len(prefix) + max_new_tokens - 1, dtype=cache_dtype)
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    dead = torch.zeros(batch, dtype=torch.bool, device=device)  # unfinished rows left with no allowed token

    state = None
    if constraint is not None:
        state = constraint.start(batch)
        for token in prefix:  # the constraint must see the prompt (bos included) before sampling
            state = constraint.advance(state, np.full(batch, token, dtype=np.int64))

    prompt = torch.tensor(prefix, dtype=torch.long, device=device).expand(batch, -1)
    with autocast_context(device, precision):
        logits, _ = model(prompt, kv_cache=cache)
    logits = logits[:, -1].float()

    # The host checks for early stop (and dead rows) only every few steps, unless a numpy
    # constraint already forces a device-to-host copy of every step's tokens.
    check_every = 8
    steps = max_new_tokens
    for t in range(max_new_tokens):
        logits = logits.masked_fill(banned, float("-inf"))
        constraint_on_device = False
        if constraint is not None:
            remaining = np.full(batch, max_new_tokens - t, dtype=np.int64)
            allowed, constraint_on_device = _allowed_mask(constraint, state, remaining, batch, vocab, device)
            check_every = 8 if constraint_on_device else 1
            logits = logits.masked_fill(~allowed, float("-inf"))
            dead |= ~torch.isfinite(logits).any(dim=-1) & ~done
        # Finished rows may have no allowed token at all: finite logits keep the draw valid, and
        # their pick is replaced by pad. Dead rows are reported below.
        logits = logits.masked_fill((done | dead)[:, None], 0.0)
        nxt = _choose(logits, temperature, top_k, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out[:, t] = nxt
        done |= nxt == eos_id
        is_last = t == max_new_tokens - 1
        check_now = is_last or (t + 1) % check_every == 0
        if check_now and bool(dead.any()):
            row = int(dead.nonzero()[0, 0])
            raise RuntimeError(
                f"sample: the constraint allowed no token for unfinished row {row} (at or before step {t}, "
                f"max_new_tokens={max_new_tokens}); pad and bos are never sampled"
            )
        if constraint is not None:
            state = constraint.advance(state, nxt if constraint_on_device else nxt.cpu().numpy())
        if is_last:
            break
        if check_now and bool(done.all()):
            steps = t + 1
            break
        with autocast_context(device, precision):
            logits, _ = model(nxt[:, None], kv_cache=cache)
        logits = logits[:, -1].float()
    return out[:, :steps].cpu().numpy()


def sample(
    model: GPT,
    n_samples: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = 50,
    constraint: SamplingConstraint | None = None,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    prompt: list[int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    precision: str = "auto",
) -> SampleResult:
    """Sample `n_samples` sequences, each `[bos] + prompt + generated` up to and including eos.

    `device=None` uses the model's device, otherwise the model is moved there. `temperature=0`
    is greedy. Finished rows are advanced through the constraint with `pad_id`.
    """
    cfg = model.config
    prefix = [int(bos_id)] + [int(t) for t in (prompt or [])]
    if n_samples < 0:
        raise ValueError(f"sample: n_samples must be >= 0, got {n_samples}")
    if max_new_tokens < 1:
        raise ValueError(f"sample: max_new_tokens must be >= 1, got {max_new_tokens}")
    if len(prefix) + max_new_tokens > cfg.n_ctx:
        raise ValueError(
            f"sample: 1 (bos) + {len(prefix) - 1} prompt tokens + max_new_tokens {max_new_tokens} = "
            f"{len(prefix) + max_new_tokens} exceeds the model's n_ctx={cfg.n_ctx}; lower max_new_tokens "
            f"to at most {cfg.n_ctx - len(prefix)} (sequences are never silently cropped)"
        )
    if batch_size < 1:
        raise ValueError(f"sample: batch_size must be >= 1, got {batch_size}")
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"sample: top_k must be >= 1 or None, got {top_k}")
    for name, token in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        _check_token(name, token, cfg.vocab_size)
    for i, token in enumerate(prefix[1:]):
        _check_token(f"prompt[{i}]", token, cfg.vocab_size)

    if device is None:
        device = model.tok_emb.weight.device
    else:
        device = resolve_device(device)
        model.to(device)
    device = torch.device(device)
    precision = resolve_precision(precision, device)

    banned = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    banned[pad_id] = True
    banned[bos_id] = True
    banned[eos_id] = False
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    prefix_arr = np.asarray(prefix, dtype=np.int64)

    sequences: list[np.ndarray] = []
    n_finished = 0
    tokens_generated = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for first in range(0, n_samples, batch_size):
                batch = min(batch_size, n_samples - first)
                generated = _sample_batch(
                    model,
                    batch,
                    prefix,
                    eos_id=eos_id,
                    pad_id=pad_id,
                    banned=banned,
                    max_new_tokens=max_new_tokens,
                    temperature=float(temperature),
                    top_k=top_k,
                    constraint=constraint,
                    generator=generator,
                    device=device,
                    precision=precision,
                )
                is_eos = generated == eos_id
                finished = is_eos.any(axis=1)
                # Up to and including the first eos; unfinished rows keep every generated token.
                lengths = np.where(finished, is_eos.argmax(axis=1) + 1, generated.shape[1])
                n_finished += int(finished.sum())
                tokens_generated += int(lengths.sum())
                sequences.extend(
                    np.concatenate([prefix_arr, row[:n]]) for row, n in zip(generated, lengths)
                )
                if on_progress is not None:
                    on_progress(first + batch, n_samples)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    return SampleResult(
        sequences=sequences,
        n_finished=n_finished,
        tokens_generated=tokens_generated,
        seconds=seconds,
        tokens_per_second=tokens_generated / max(seconds, 1e-9),
        patients_per_second=n_samples / max(seconds, 1e-9),
        n_samples=n_samples,
        device=str(device),
        precision=precision,
    )
