"""Training context windows over token sequences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synehrgy_assets.core.tokens.encoding import TokenSequences

# ----------------------------------------------------------------------------------------------
# Context windows


@dataclass
class ContextWindows:
    """Training windows over a `TokenSequences`.

    Window i is ``[<s>] * prefix[i] + tokens[starts[i]:starts[i] + lengths[i]]`` (at most n_ctx
    tokens). Every token of a window except its first is a next-token target.
    """

    n_ctx: int
    starts: np.ndarray
    lengths: np.ndarray
    prefix: np.ndarray
    patient: np.ndarray
    bos_id: int
    n_tokens: int
    n_target_tokens: int
    reference_fraction: float

    @property
    def fraction_of_tokens_used(self) -> float:
        return self.n_target_tokens / self.n_tokens if self.n_tokens else 1.0

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def n_windows(self) -> int:
        return len(self.starts)

    def window(self, tokens: np.ndarray, i: int) -> np.ndarray:
        body = np.asarray(tokens[self.starts[i]:self.starts[i] + self.lengths[i]])
        if self.prefix[i]:
            return np.concatenate([np.array([self.bos_id], dtype=body.dtype), body])
        return body

    def arrays(self, seqs: TokenSequences) -> list[np.ndarray]:
        """Every window as its own int array (views into the token array where no prefix)."""
        return [self.window(seqs.tokens, i) for i in range(len(self))]

    _ARRAYS = ("starts", "lengths", "prefix", "patient")

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, name))
        meta = {"n_ctx": self.n_ctx, "bos_id": self.bos_id, "n_tokens": self.n_tokens,
                "n_target_tokens": self.n_target_tokens,
                "reference_fraction": self.reference_fraction, "n_windows": len(self)}
        (directory / "windows.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ContextWindows":
        directory = Path(directory)
        meta_path = directory / "windows.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no context windows saved here")
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(directory / f"{name}.npy") for name in cls._ARRAYS}
        windows = cls(n_ctx=meta["n_ctx"], bos_id=meta["bos_id"], n_tokens=meta["n_tokens"],
                      n_target_tokens=meta["n_target_tokens"],
                      reference_fraction=meta["reference_fraction"], **arrays)
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


def context_windows(seqs: TokenSequences, n_ctx: int, subset=None) -> ContextWindows:
    """Cut patients into windows of <= n_ctx tokens without dropping anything.

    A patient that fits is one window. A longer one is cut at visit boundaries; each later window
    starts at a visit and is prefixed with `<s>`. A stretch with no visit boundary inside the
    available room (a very long visit) is cut into full chunks that continue mid-visit; such a
    chunk starts one token before the previous chunk ended, so that token is its context and
    nothing is skipped, but it sees none of the earlier context.
    """
    if n_ctx < 3:
        raise ValueError(f"context_windows: n_ctx must be >= 3, got {n_ctx}")
    patients = _patients(seqs, subset)
    offsets = np.asarray(seqs.offsets)
    starts_p, ends_p = offsets[patients], offsets[patients + 1]
    lengths = ends_p - starts_p
    short = lengths <= n_ctx
    w_start = [starts_p[short]]
    w_len = [lengths[short]]
    w_prefix = [np.zeros(int(short.sum()), dtype=bool)]
    w_patient = [patients[short]]
    n_targets = int(np.sum(lengths[short] - 1))
    visit_starts = np.asarray(seqs.visit_starts)
    long_ids = np.flatnonzero(~short)
    # Patients too long for one window: a greedy walk over their visit boundaries (a loop over
    # visits, not tokens).
    starts_l, lens_l, pref_l, pat_l = [], [], [], []
    for i in long_ids:
        a, b = int(starts_p[i]), int(ends_p[i])
        lo, hi = np.searchsorted(visit_starts, [a, b])
        bounds = visit_starts[lo:hi]
        start, prefix, covered = a, False, a + 1  # tokens [a+1, covered) are targets already
        while covered < b:
            room = n_ctx - prefix
            if b - start <= room:
                end = b
            else:
                j = np.searchsorted(bounds, start + room, side="right") - 1
                end = int(bounds[j]) if j >= 0 and bounds[j] > covered else -1
            if end > 0:
                starts_l.append(start)
                lens_l.append(end - start)
                pref_l.append(prefix)
                pat_l.append(patients[i])
                n_targets += end - covered
                covered = end
                start, prefix = end, True
            else:
                end = start + room
                starts_l.append(start)
                lens_l.append(room)
                pref_l.append(prefix)
                pat_l.append(patients[i])
                n_targets += end - covered
                covered = end
                start, prefix = end - 1, False
    w_start.append(np.asarray(starts_l, dtype=np.int64))
    w_len.append(np.asarray(lens_l, dtype=np.int64))
    w_prefix.append(np.asarray(pref_l, dtype=bool))
    w_patient.append(np.asarray(pat_l, dtype=np.int64))
    starts = np.concatenate(w_start).astype(np.int64)
    order = np.argsort(starts, kind="stable")
    return ContextWindows(
        n_ctx=n_ctx,
        starts=starts[order],
        lengths=np.concatenate(w_len).astype(np.int64)[order],
        prefix=np.concatenate(w_prefix)[order],
        patient=np.concatenate(w_patient)[order],
        bos_id=int(seqs.tokens[offsets[0]]) if len(seqs) and offsets[-1] > 0 else 1,
        n_tokens=int(lengths.sum()),
        n_target_tokens=n_targets,
        reference_fraction=reference_fraction(seqs, n_ctx, subset),
    )
