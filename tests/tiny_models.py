"""Helpers shared by the model, sampler and trainer tests: one torch thread, a tiny GPT."""

from __future__ import annotations

import pytest
import torch

from synehrgy_assets.core.model import GPT, GPTConfig

VOCAB = 32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models gain nothing from threads; on a loaded CI box OpenMP's barriers made training up
    to 20x slower, and bitwise comparisons (resume, seeds) need the same thread count everywhere.
    Import it into a test module to use it there."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    """A 2-layer, 32-wide GPT over a 32-token vocabulary, seeded (train mode)."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, n_ctx=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg))
