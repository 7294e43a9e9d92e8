"""The next-token loss of the GPT (`GPT.forward`), over the targets that count."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def next_token_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of logits [B, T, V] against targets [B, T] in float32.

    Targets equal to IGNORE_INDEX, or where `loss_mask` is False/0, are ignored; `reduction="none"`
    returns the per-target loss [B, T] (0 where ignored).
    """
    B, T = targets.shape
    if loss_mask is not None:
        targets = targets.masked_fill(~loss_mask.bool(), IGNORE_INDEX)
    per_token = F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(B, T)
    if reduction == "none":
        return per_token
    if reduction == "mean":
        # Sum / count instead of the built-in mean: a batch with no counted target gives 0, not NaN.
        count = (targets != IGNORE_INDEX).sum().clamp(min=1)
        return per_token.sum() / count
    raise ValueError(f"GPT.forward: reduction must be 'mean' or 'none', got {reduction!r}")
