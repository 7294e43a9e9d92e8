"""Generation = continuous-batching, KV-cached, grammar-constrained sampling (sliding the context
window for long patients) + decoding into a staged-cohort shape."""

from __future__ import annotations

from typing import Callable

import numpy as np


def default_roll(vocabulary, n_ctx: int):
    """`ContextFormat(vocabulary, n_ctx).roll`: the training-window format."""
    from synehrgy_assets.core.tokens.context import ContextFormat

    return ContextFormat(vocabulary, n_ctx).roll


def generate_sequences(
    model,
    vocabulary,
    n_patients: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    batch_size: int = 64,
    device=None,
    max_tokens_per_patient: int | None = None,
    max_new_tokens: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    roll="auto",
    max_visits: int = 16,
    precision: str = "auto",
):
    """Sample `n_patients` token sequences that parse by construction (grammar-masked).

    `max_tokens_per_patient` (`max_new_tokens` is its old name) caps each patient's generated
    tokens; the caller gives it (the synthesis asset reads the tokenizer's default), None = 4 *
    n_ctx. Patients longer than the context slide the window with `roll` ("auto" = the training
    context format, `ContextFormat.roll`; None = no sliding, then the cap must fit n_ctx). The
    grammar masks live on the model's device (torch tensors, no host round trip per step).
    """
    import torch

    from synehrgy_assets.core.sampler import sample
    from synehrgy_assets.core.tokens import GrammarConstraint
    from synehrgy_assets.core.trainer import resolve_device

    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    n_ctx = model.config.n_ctx
    if max_tokens_per_patient is None:
        max_tokens_per_patient = max_new_tokens
    cap = int(max_tokens_per_patient) if max_tokens_per_patient is not None else 4 * n_ctx
    if roll == "auto":
        roll = default_roll(vocabulary, n_ctx)
    device = model.tok_emb.weight.device if device is None else resolve_device(device)
    return sample(
        model,
        n_patients,
        bos_id=vocabulary.bos_id,
        eos_id=vocabulary.eos_id,
        pad_id=vocabulary.pad_id,
        max_tokens_per_patient=cap,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        constraint=GrammarConstraint(vocabulary, max_visits=max_visits, device=torch.device(device)),
        roll=roll,
        batch_size=batch_size,
        seed=seed,
        device=device,
        on_progress=on_progress,
        precision=precision,
    )


def generate_cohort(model, vocabulary, n_patients: int, *, seed: int = 0, **kwargs):
    """Sample and decode: returns (StagedCohort, DecodeReport, SampleResult)."""
    from synehrgy_assets.core.tokens import decode

    result = generate_sequences(model, vocabulary, n_patients, seed=seed, **kwargs)
    cohort, report = decode(result.sequences, vocabulary, seed=seed)
    return cohort, report, result


def flatten(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A list of sequences as one flat int32 array + offsets (n + 1)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, np.int32)
    return flat, offsets


def unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
