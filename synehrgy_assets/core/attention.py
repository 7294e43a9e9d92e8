"""Document-masked causal attention for packed rows on a fused kernel (FlexAttention).

A packed row holds several windows end to end (`segments`); a query may attend only to earlier
keys of its own window. On CUDA that runs through FlexAttention with a block mask, which skips the
blocks between two windows and keeps a fused kernel; elsewhere (and where FlexAttention is missing)
the model gives SDPA an explicit boolean [B, 1, T, T] mask, the faster of the two on CPU, where
FlexAttention has no backward. `SYNEHRGY_PACKED_ATTENTION` (`auto`, `flex`, `sdpa`) overrides the
choice, e.g. to compare both on one GPU. Works with torch 2.11 and 2.13 (both have FlexAttention).
"""

from __future__ import annotations

import os

import torch

try:  # torch >= 2.5; the dense-mask path needs nothing more
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    BlockMask = create_block_mask = flex_attention = None

PACKED_ATTENTION_ENV = "SYNEHRGY_PACKED_ATTENTION"
_compiled_flex = None


def is_compiling() -> bool:
    """True while torch.compile traces (where a device-to-host read would break the graph)."""
    check = getattr(torch.compiler, "is_compiling", None)
    return bool(check and check())


def packed_attention_backend(device: torch.device | str) -> str:
    """'flex' (FlexAttention block mask) or 'sdpa' (dense boolean mask) for packed rows on `device`."""
    choice = os.environ.get(PACKED_ATTENTION_ENV, "auto") or "auto"
    if choice not in ("auto", "flex", "sdpa"):
        raise ValueError(f"{PACKED_ATTENTION_ENV}={choice!r}: expected 'auto', 'flex' or 'sdpa'")
    if choice == "auto":
        return "flex" if torch.device(device).type == "cuda" and flex_attention is not None else "sdpa"
    if choice == "flex" and flex_attention is None:
        raise RuntimeError(f"{PACKED_ATTENTION_ENV}=flex but torch {torch.__version__} has no FlexAttention")
    return choice


def document_block_mask(segments: torch.Tensor):
    """The block mask of packed rows ([B, T] segment ids): query q of row b sees key k <= q of its
    own segment."""

    def same_window_causal(b, h, q, k):
        return (segments[b, q] == segments[b, k]) & (k <= q)

    B, T = segments.shape
    # Outside torch.compile the mask is built by a compiled kernel too: the eager build materializes
    # B x T x T index tensors.
    return create_block_mask(same_window_causal, B, None, T, T, device=segments.device, _compile=not is_compiling())


def packed_attention_mask(segments: torch.Tensor, dropout: bool = False):
    """The attention mask of packed rows ([B, T] segment ids): a FlexAttention block mask where
    that backend is chosen, else a dense boolean [B, 1, T, T] mask for SDPA."""
    # FlexAttention has no attention dropout: with it on, training keeps the dense mask.
    if packed_attention_backend(segments.device) == "flex" and not dropout:
        return document_block_mask(segments)
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """FlexAttention ([B, H, T, D] each) through its compiled kernel (the uncompiled one is a dense
    reference that materializes every score)."""
    global _compiled_flex
    if is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)
