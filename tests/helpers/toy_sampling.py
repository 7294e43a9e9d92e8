"""A toy vocabulary, a tiny untrained GPT over it and the sampler's small helpers: the sampler
and GPU-path tests' setup."""

from __future__ import annotations

import numpy as np
import torch

from synehrgy_assets.core.model import GPT, GPTConfig
from synehrgy_assets.core.tokens import TokenVocabulary, VocabularyConfig
from tests.helpers.toy_cohort import synthetic_cohort


def tail_roll(k: int):
    """A simple roll: <s> + the last k tokens (ends with the last token, as a roll must)."""
    return lambda tokens: np.concatenate([tokens[:1], tokens[-k:]])


def toy_vocabulary() -> TokenVocabulary:
    return TokenVocabulary.fit(synthetic_cohort(60, seed=1), VocabularyConfig())


def grammar_model(vocab: TokenVocabulary, n_ctx: int = 64, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab.size, n_ctx=n_ctx, n_layer=2, n_head=2, n_embd=32, dropout=0.0,
                    condition_table=vocab.condition_table())
    return GPT(cfg).eval()


def vocab_kwargs(vocab: TokenVocabulary) -> dict:
    return dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id)
