"""Generation = KV-cached constrained sampling + decoding into a staged-cohort shape."""

from __future__ import annotations

from typing import Callable

import numpy as np


def generate_sequences(
    model,
    vocabulary,
    n_patients: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    batch_size: int = 64,
    device=None,
    max_new_tokens: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
):
    """Sample `n_patients` token sequences that parse by construction (grammar-masked)."""
    from synehrgy_assets.core.sampler import sample
    from synehrgy_assets.core.tokens import GrammarConstraint

    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    n_ctx = model.config.n_ctx
    return sample(
        model,
        n_patients,
        bos_id=vocabulary.bos_id,
        eos_id=vocabulary.eos_id,
        pad_id=vocabulary.pad_id,
        max_new_tokens=max_new_tokens or n_ctx - 1,
        temperature=temperature,
        top_k=top_k,
        constraint=GrammarConstraint(vocabulary),
        batch_size=batch_size,
        seed=seed,
        device=device,
        on_progress=on_progress,
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
