"""Training windows over token sequences, in the context format of `context.py`.

Every patient is cut into windows of at most n_ctx + 1 tokens (n_ctx inputs). Each window starts
with what its new tokens depend on (the patient's compressed history and the current visit's
header, docs/tokens.md section 6); only the new tokens are targets, so every train token is
learned exactly once, and with its context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synehrgy_assets.core.tokens.context import ContextFormat
from synehrgy_assets.core.tokens.encoding import TokenSequences
from synehrgy_assets.core.tokens.grammar import find_violations


@dataclass
class ContextWindows:
    """Materialized training windows: window i is ``tokens[offsets[i]:offsets[i+1]]``, whose first
    `context_lengths[i]` tokens are context only (never targets; at least the leading <s>)."""

    n_ctx: int
    tokens: np.ndarray           # int32, every window's tokens concatenated
    offsets: np.ndarray          # int64 [n_windows + 1]
    context_lengths: np.ndarray  # int64 [n_windows]
    patient: np.ndarray          # int64 [n_windows]: index of the patient in the sequences
    stats: dict

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_windows(self) -> int:
        return len(self)

    def window(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def arrays(self, seqs: TokenSequences | None = None) -> list[np.ndarray]:
        """Every window as its own int array (views into the window token array)."""
        return [self.window(i) for i in range(len(self))]

    # ---- the coverage figures behind the asset checks (shares of train target tokens)
    def _share(self, key: str) -> float:
        n = self.stats["n_target_tokens"]
        return self.stats[key] / n if n else 1.0

    @property
    def header_in_context_share(self) -> float:
        """Targets predicted with their own visit's whole header (so far) in context."""
        return self._share("n_targets_with_header")

    @property
    def history_in_context_share(self) -> float:
        """Targets predicted with their visit's header and every earlier visit's header in context."""
        return self._share("n_targets_with_history")

    @property
    def fraction_of_tokens_used(self) -> float:
        """Tokens that are a target (all but each patient's leading <s>)."""
        n = self.stats["n_tokens"]
        return self.stats["n_target_tokens"] / n if n else 1.0

    _ARRAYS = ("tokens", "offsets", "context_lengths", "patient")

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, name))
        meta = {"n_ctx": self.n_ctx, "n_windows": len(self), "stats": self.stats}
        (directory / "windows.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ContextWindows":
        directory = Path(directory)
        meta_path = directory / "windows.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no context windows saved here")
        meta = json.loads(meta_path.read_text())
        if "stats" not in meta:
            raise ValueError(f"{meta_path}: windows in an older format; re-materialize token_sequences")
        arrays = {name: np.load(directory / f"{name}.npy") for name in cls._ARRAYS}
        windows = cls(n_ctx=meta["n_ctx"], stats=meta["stats"], **arrays)
        if len(windows) != meta["n_windows"]:
            raise ValueError(f"{directory}: arrays do not match windows.json")
        return windows


def _patients(seqs: TokenSequences, subset) -> np.ndarray:
    if subset is None:
        return np.arange(len(seqs))
    subset = np.asarray(subset)
    if subset.dtype == bool:
        subset = np.flatnonzero(subset)
    return subset.astype(np.int64)


def reference_fraction(seqs: TokenSequences, n_ctx: int, subset=None) -> float:
    """Fraction of tokens kept by plain truncation to the first n_ctx (the reference policy)."""
    lengths = np.diff(seqs.offsets)[_patients(seqs, subset)]
    total = lengths.sum()
    return float(np.minimum(lengths, n_ctx).sum() / total) if total else 1.0


def context_windows(seqs: TokenSequences, vocab, n_ctx: int, subset=None,
                    fmt: ContextFormat | None = None) -> ContextWindows:
    """Cut every patient into windows in the context format; nothing is dropped.

    A patient that fits is one window. A longer one is cut where a window is full; the next window
    starts with the patient's compressed history, the current header and up to `fmt.overlap`
    tokens of recent rows (`ContextFormat.window_start`), the same context the sampler rolls to.
    """
    fmt = fmt or ContextFormat(vocab, n_ctx)
    if fmt.n_ctx != n_ctx:
        raise ValueError(f"context_windows: format for n_ctx {fmt.n_ctx}, asked for {n_ctx}")
    patients = _patients(seqs, subset)
    offsets = np.asarray(seqs.offsets)
    all_tokens = np.asarray(seqs.tokens)
    pieces: list[np.ndarray] = []
    ctx_len: list[int] = []
    owner: list[int] = []
    n_tokens = n_targets = with_header = with_history = n_raw = 0
    for i in patients:
        seq = all_tokens[offsets[i]:offsets[i + 1]].astype(np.int64)
        length = len(seq)
        n_tokens += length
        if length <= n_ctx + 1:  # the common case: the whole patient is one window
            pieces.append(seq)
            ctx_len.append(1)
            owner.append(int(i))
            n_targets += length - 1
            with_header += length - 1
            with_history += length - 1
            continue
        lay = fmt.layout(seq)
        p = 1
        while p < length:
            start = fmt.window_start(seq, p, lay)
            room = n_ctx + 1 - len(start.prefix)
            end = min(start.c + room, length)
            if end <= p:  # no room for a new token after this context: plain chunk instead
                start = fmt.raw_chunk(p)
                end = min(start.c + n_ctx + 1, length)
            pieces.append(np.concatenate([start.prefix, seq[start.c:end]]))
            ctx_len.append(len(start.prefix) + p - start.c)
            owner.append(int(i))
            new = end - p
            n_targets += new
            with_header += new if start.header_complete else 0
            with_history += new if start.history_complete else 0
            n_raw += not start.grammatical
            p = end
    lengths = np.fromiter((len(w) for w in pieces), dtype=np.int64, count=len(pieces))
    win_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
    violations = find_violations(tokens, win_offsets, vocab.token_types, vocab.value_rank, windows=True)
    stats = {
        "n_tokens": int(n_tokens),
        "n_target_tokens": int(n_targets),
        "n_targets_with_header": int(with_header),
        "n_targets_with_history": int(with_history),
        "n_window_tokens": int(len(tokens)),
        "n_windows_multi": int(sum(1 for c in ctx_len if c > 1)),
        "n_raw_chunks": int(n_raw),
        "n_windows_rejected_by_grammar": int((~violations.valid).sum()),
        "grammar_rejections": violations.counts(),
        "reference_fraction": reference_fraction(seqs, n_ctx, subset),
    }
    return ContextWindows(n_ctx, tokens, win_offsets, np.asarray(ctx_len, dtype=np.int64),
                          np.asarray(owner, dtype=np.int64), stats)
