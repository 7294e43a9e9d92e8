"""A small GPT for token sequences of EHRs (nanoGPT-style), with a KV cache and safetensors checkpoints.

Pre-LN transformer blocks, learned absolute positions, causal self-attention through
`F.scaled_dot_product_attention` (flash/fused kernels on CUDA) and an output head tied to the
token embedding. Checkpoints are `model.safetensors` + `config.json`: nothing is ever pickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "synehrgy-gpt"
CHECKPOINT_VERSION = 1
# The head shares the embedding matrix, so only the embedding is written to disk.
_TIED_KEY = "lm_head.weight"
_TIED_SOURCE_KEY = "tok_emb.weight"


@dataclass
class GPTConfig:
    vocab_size: int
    n_ctx: int = 512
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_ctx", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}")
        if "vocab_size" not in data:
            raise ValueError("GPTConfig.from_dict: missing required key 'vocab_size'")
        return cls(**data)


class KVCache:
    """Preallocated keys/values for all layers, shape [n_layer, 2, B, H, T_max, D], plus a fill pointer.

    Every layer writes its new keys/values at [length, length + t); the model advances the pointer
    once per forward, after the last layer, so all layers see the same `length`.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.kv = torch.zeros(n_layer, 2, batch_size, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    @classmethod
    def for_model(
        cls,
        model: "GPT",
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "KVCache":
        cfg = model.config
        max_len = cfg.n_ctx if max_len is None else max_len
        if max_len > cfg.n_ctx:
            raise ValueError(f"KVCache max_len {max_len} exceeds the model's n_ctx {cfg.n_ctx}")
        param = model.tok_emb.weight
        return cls(
            cfg.n_layer,
            batch_size,
            cfg.n_head,
            max_len,
            cfg.n_embd // cfg.n_head,
            device=param.device if device is None else device,
            dtype=param.dtype if dtype is None else dtype,
        )

    @property
    def batch_size(self) -> int:
        return self.kv.shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([B, H, t, D]) after the cached prefix; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KVCache overflow: {end} positions needed, {self.max_len} allocated")
        self.kv[layer, 0, :, :, self.length:end] = k
        self.kv[layer, 1, :, :, self.length:end] = v
        return self.kv[layer, 0, :, :, :end], self.kv[layer, 1, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.layer_index = layer_index
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
        # [B, T, C] -> [B, H, T, D]
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.update(self.layer_index, k, v)

        attn_mask = None
        is_causal = False
        if past == 0:
            is_causal = T > 1
        elif T > 1:
            # SDPA's is_causal aligns the mask top-left, which is wrong once keys outnumber queries:
            # query i (absolute position past + i) may see keys 0 .. past + i.
            key_pos = torch.arange(past + T, device=x.device)
            query_pos = torch.arange(past, past + T, device=x.device)
            attn_mask = key_pos[None, :] <= query_pos[:, None]
        # T == 1 with a cache: the single new query may attend to every cached key, no mask needed.

        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.n_ctx, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Tie after every submodule exists so nothing can replace one side later (the reference's bug).
        self.lm_head.weight = self.tok_emb.weight

        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) keep the residual stream's
        # variance from growing with depth.
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (the tied head counts once); optionally without the position table."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.pos_emb.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        positions_offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, V] and the mean next-token loss over the targets that count.

        Targets equal to -100, or where `loss_mask` is False/0, are ignored. With a cache, positions
        continue after the cached prefix and the cache pointer advances by T.
        """
        if idx.dim() != 2:
            raise ValueError(f"GPT.forward: idx must be [batch, time], got shape {tuple(idx.shape)}")
        B, T = idx.shape
        if kv_cache is not None:
            if positions_offset not in (0, kv_cache.length):
                raise ValueError(
                    f"GPT.forward: positions_offset {positions_offset} disagrees with the cache length "
                    f"{kv_cache.length}; with a cache, positions follow the cache"
                )
            positions_offset = kv_cache.length
            if kv_cache.batch_size != B:
                raise ValueError(f"GPT.forward: batch {B} but the KV cache holds {kv_cache.batch_size} rows")
        if positions_offset + T > self.config.n_ctx:
            raise ValueError(
                f"GPT.forward: positions {positions_offset}..{positions_offset + T - 1} exceed "
                f"n_ctx={self.config.n_ctx}"
            )

        pos = torch.arange(positions_offset, positions_offset + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        logits = self.lm_head(self.ln_f(x))

        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(
                    f"GPT.forward: targets shape {tuple(targets.shape)} != idx shape {tuple(idx.shape)}"
                )
            if loss_mask is not None:
                targets = targets.masked_fill(~loss_mask.bool(), IGNORE_INDEX)
            # Sum / count instead of the built-in mean: a batch with no counted target gives 0, not NaN.
            total = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            count = (targets != IGNORE_INDEX).sum().clamp(min=1)
            loss = total / count
        return logits, loss


def save_checkpoint(model: GPT, path_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` (weights, tied head stored once) and `config.json` into path_dir."""
    from safetensors.torch import save_file

    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    # safetensors refuses tensors that share storage; the tied head is rebuilt from the embedding on load.
    tensors = {
        name: t.detach().to("cpu").contiguous()
        for name, t in state.items()
        if name != _TIED_KEY
    }
    metadata = {"format": "pt", "tied": f"{_TIED_KEY}={_TIED_SOURCE_KEY}"}
    save_file(tensors, str(path_dir / WEIGHTS_FILE), metadata=metadata)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": model.config.to_dict(),
        "num_parameters": model.num_parameters(),
        "extra": dict(extra or {}),
    }
    (path_dir / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return path_dir


def read_checkpoint_config(path_dir: str | Path) -> dict[str, Any]:
    """The parsed `config.json` of a checkpoint (model_config, extra, ...)."""
    path = Path(path_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint config not found: {path}")
    payload = json.loads(path.read_text())
    if payload.get("format") != CHECKPOINT_FORMAT or "model_config" not in payload:
        raise ValueError(
            f"{path}: expected format '{CHECKPOINT_FORMAT}' with a 'model_config' key, "
            f"got format={payload.get('format')!r}"
        )
    return payload


def load_checkpoint(path_dir: str | Path, device: torch.device | str = "cpu") -> GPT:
    """Rebuild a GPT from `config.json` and `model.safetensors` (no unpickling); returned in eval mode."""
    from safetensors.torch import load_file

    path_dir = Path(path_dir)
    config = GPTConfig.from_dict(read_checkpoint_config(path_dir)["model_config"])
    weights_path = path_dir / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint weights not found: {weights_path}")
    tensors = load_file(str(weights_path), device="cpu")

    model = GPT(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k != _TIED_KEY]
    if missing or unexpected:
        raise ValueError(f"{weights_path}: missing tensors {missing}, unexpected tensors {unexpected}")
    if model.lm_head.weight is not model.tok_emb.weight:
        raise RuntimeError("load_checkpoint: lm_head lost its tie to tok_emb")
    return model.to(device).eval()
