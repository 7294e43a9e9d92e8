"""Toy token windows whose codes follow from one AGE token (a learnable pattern), the tiny GPT
and training configs for them, and toy clocks: the trainer, DDP, GPU-path and budget tests' data."""

from __future__ import annotations

import numpy as np

from synehrgy_assets.core.model import GPTConfig
from synehrgy_assets.core.tokens.grammar import TokenType
from synehrgy_assets.core.trainer import TrainConfig

PAD, BOS, EOS = 0, 1, 2
VOCAB = 32
FIRST_AGE, N_AGE = 3, 10  # "AGE" tokens 3..12: the one random choice of a window
FIRST_DX, N_DX = 13, 19  # "DX" tokens 13..31: fully determined by the AGE token
N_CTX = 32

TOKEN_TYPES = np.full(VOCAB, int(TokenType.END_ADM), dtype=np.int8)  # structure
TOKEN_TYPES[[PAD, BOS, EOS]] = [TokenType.PAD, TokenType.BOS, TokenType.EOS]
TOKEN_TYPES[FIRST_AGE:FIRST_AGE + N_AGE] = TokenType.AGE
TOKEN_TYPES[FIRST_DX:] = TokenType.DX


def typed_window(age: int) -> np.ndarray:
    """<s> AGE dx... </s>: the codes (and the length) follow from the AGE token."""
    n_codes = 2 + (age - FIRST_AGE) % 5 * 2
    codes = [FIRST_DX + (age - FIRST_AGE + j) % N_DX for j in range(n_codes)]
    return np.array([BOS, age, *codes, EOS], dtype=np.int64)


def typed_windows(n: int, seed: int) -> list[np.ndarray]:
    ages = np.random.default_rng(seed).integers(FIRST_AGE, FIRST_AGE + N_AGE, size=n)
    return [typed_window(int(a)) for a in ages]


def model_config(**overrides) -> GPTConfig:
    cfg = dict(vocab_size=VOCAB, n_ctx=N_CTX, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    cfg.update(overrides)
    return GPTConfig(**cfg)


def quick_config(**overrides) -> TrainConfig:
    cfg = dict(epochs=4, batch_size=4, learning_rate=5e-3, warmup_steps=5, log_every=5, patience=None)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def toy_clocks() -> list[dict]:
    """BOS sets both clocks to 0; every token adds 1 to the first, two DX tokens 2.5 to the second."""
    add2 = [0.0] * VOCAB
    add2[FIRST_DX] = add2[FIRST_DX + 1] = 2.5
    sets = [-1.0] * VOCAB
    sets[BOS] = 0.0
    return [{"name": "count", "add": [1.0] * VOCAB, "set": sets, "edges": [1, 2, 4, 8, 16]},
            {"name": "dx", "add": add2, "set": sets, "edges": [2, 5, 10]}]
