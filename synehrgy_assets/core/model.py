"""A small GPT for token sequences of EHRs (nanoGPT-style), with a KV cache and safetensors checkpoints.

Pre-LN transformer blocks, learned absolute positions, causal self-attention through
`F.scaled_dot_product_attention` (flash/fused kernels on CUDA) and an output head tied to the
token embedding. Checkpoints are `model.safetensors` + `config.json`: nothing is ever pickled.

Packed rows (several windows per row, `segments`) attend within their window: through
FlexAttention block masks on CUDA, a dense boolean mask to SDPA elsewhere (`core/attention.py`).
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

from synehrgy_assets.core.attention import (  # noqa: F401 (re-exported for callers of the model)
    PACKED_ATTENTION_ENV,
    BlockMask,
    document_block_mask,
    flex,
    flex_attention,
    is_compiling,
    packed_attention_backend,
    packed_attention_mask,
)
from synehrgy_assets.core.losses import IGNORE_INDEX, next_token_loss  # noqa: F401 (IGNORE_INDEX re-exported)

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
    dropout: float = 0.1  # embeddings and residual branches
    # Dropout on the attention weights: off by default, because on CPU it forces SDPA's unfused path
    # and a T x T random mask per head (about 44 % of a training step at n_ctx 512).
    attn_dropout: float = 0.0
    bias: bool = True
    # Outcome conditioning (docs/tokens.md section 6): `condition_table[token]` is -1 for tokens
    # that leave the running condition unchanged and c >= 0 for tokens that set it to c (a visit
    # start resets it to 0, MORTALITY//0 and //1 set 1 and 2). Every position then adds a learned
    # embedding of its condition, so the physiology of a visit sees the outcome emitted in its
    # header directly instead of having to learn to attend back to one token. None = off.
    condition_table: list[int] | None = None
    # Clocks (docs/tokens.md section 7): running quantities of the prefix, such as the hours since
    # ICU admission or the diagnoses emitted so far in this visit. Each is a dict {"name",
    # "add": [vocab_size floats], "set": [vocab_size floats, -1 = keeps], "edges": [ascending]}:
    # token t adds add[t] to the running value, or sets it to set[t] when that is >= 0. Every
    # position adds a learned embedding of its clock's bucket (edges), so decisions that depend on
    # how long a stay has run or how many codes a visit has (when to emit </ts>, </code>) read one
    # input instead of having to sum hundreds of earlier tokens through attention. None = off.
    clocks: list[dict] | None = None
    # Additive output biases {token id: logit shift}, set after training by outcome calibration
    # (core/calibration.py: the MORTALITY//1 logit, so the sampled death rate matches the train
    # rate). Part of the config, not of the trained weights, so it is visible in config.json.
    logit_bias: dict[int, float] | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_ctx", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GPTConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.condition_table is not None:
            self.condition_table = [int(c) for c in self.condition_table]
            if len(self.condition_table) != self.vocab_size or min(self.condition_table) < -1:
                raise ValueError(
                    f"GPTConfig.condition_table must hold vocab_size={self.vocab_size} entries >= -1, "
                    f"got {len(self.condition_table)}"
                )
        if self.clocks is not None:
            checked = []
            for i, clock in enumerate(self.clocks):
                missing = {"name", "add", "set", "edges"} - set(clock)
                if missing:
                    raise ValueError(f"GPTConfig.clocks[{i}] lacks {sorted(missing)}")
                add, set_, edges = ([float(v) for v in clock[k]] for k in ("add", "set", "edges"))
                if len(add) != self.vocab_size or len(set_) != self.vocab_size:
                    raise ValueError(f"GPTConfig.clocks[{i}] ({clock['name']}): add and set must hold "
                                     f"vocab_size={self.vocab_size} entries, got {len(add)} and {len(set_)}")
                if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
                    raise ValueError(f"GPTConfig.clocks[{i}] ({clock['name']}): edges must be strictly ascending")
                checked.append({"name": str(clock["name"]), "add": add, "set": set_, "edges": edges})
            self.clocks = checked or None
        if self.logit_bias is not None:
            # JSON turns the int keys into strings
            bias = {int(k): float(v) for k, v in dict(self.logit_bias).items()}
            bad = [k for k in bias if not 0 <= k < self.vocab_size]
            if bad:
                raise ValueError(f"GPTConfig.logit_bias: token ids {bad} outside [0, vocab_size={self.vocab_size})")
            self.logit_bias = bias or None

    @property
    def n_clocks(self) -> int:
        return 0 if self.clocks is None else len(self.clocks)

    @property
    def n_conditions(self) -> int:
        return 0 if self.condition_table is None else max(max(self.condition_table) + 1, 1)

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
    """Preallocated keys/values for all layers, [n_layer, 2, B, H, T_max, D], with a fill length *per row*.

    Row b holds positions [0, lengths[b]). A forward of T tokens writes row b's new keys/values at
    [lengths[b], lengths[b] + T) and attends to its own filled prefix only, so rows may be at
    different positions: a finished row is refilled with a new patient, and a row whose window is
    full is re-prefilled with a shorter context, while the other rows keep decoding. Every layer
    writes at the same positions; the model advances the lengths once per forward, after the last
    layer. `condition` is each row's running outcome condition (see GPTConfig.condition_table).
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
        n_clocks: int = 0,
    ) -> None:
        self.kv = torch.zeros(n_layer, 2, batch_size, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.clocks = torch.zeros(batch_size, n_clocks, dtype=torch.float32, device=device)
        self.max_len = max_len
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.condition = torch.zeros(batch_size, dtype=torch.long, device=device)
        # An optional host copy of `lengths` that the owner keeps equal to it (the sampler does):
        # with it, a forward needs no device-to-host read to size its mask and check n_ctx.
        self.host_lengths: Any = None  # numpy int64 [B] or None
        self._write_pos: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._span = 0

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
            n_clocks=cfg.n_clocks,
        )

    @property
    def batch_size(self) -> int:
        return self.kv.shape[2]

    def max_length(self) -> int:
        """The longest row's fill length (from the host copy when there is one)."""
        if self.host_lengths is not None:
            return int(self.host_lengths.max())
        return int(self.lengths.max())

    @property
    def length(self) -> int:
        """The common fill length when every row is at the same position (else an error)."""
        lo, hi = int(self.lengths.min()), int(self.lengths.max())
        if lo != hi:
            raise ValueError(f"KVCache rows are at different lengths ({lo}..{hi}); use .lengths")
        return lo

    def begin(self, t: int) -> torch.Tensor:
        """Prepare a forward of t tokens per row: the positions it writes ([B, t]) and its mask."""
        pos = self.lengths[:, None] + torch.arange(t, device=self.lengths.device)[None, :]
        span = self.max_length() + t
        if span > self.max_len:
            raise ValueError(f"KVCache overflow: {span} positions needed, {self.max_len} allocated")
        self._write_pos, self._span = pos, span
        keys = torch.arange(span, device=pos.device)
        # Query t of row b (absolute position lengths[b] + t) sees keys 0 .. lengths[b] + t.
        self._mask = (keys[None, None, :] <= pos[:, :, None])[:, None]  # [B, 1, t, span]
        return pos

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([B, H, t, D]) at each row's positions; return keys/values [B, H, span, D]."""
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        self.kv[layer, 0][rows, :, self._write_pos] = k.transpose(1, 2).to(self.kv.dtype)
        self.kv[layer, 1][rows, :, self._write_pos] = v.transpose(1, 2).to(self.kv.dtype)
        return self.kv[layer, 0, :, :, :self._span], self.kv[layer, 1, :, :, :self._span]

    @property
    def mask(self) -> torch.Tensor | None:
        return self._mask

    def advance(self, n: int) -> None:
        self.lengths += n
        if self.host_lengths is not None:
            self.host_lengths += n
        self._write_pos = self._mask = None

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Empty every row, or only `rows` (a new patient or a rebuilt window starts there)."""
        if rows is None:
            self.lengths.zero_()
            self.condition.zero_()
            self.clocks.zero_()
            if self.host_lengths is not None:
                self.host_lengths[:] = 0
        else:
            if self.host_lengths is not None:
                self.host_lengths[rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows] = 0
            self.lengths[rows] = 0
            self.condition[rows] = 0
            self.clocks[rows] = 0.0

    def copy_state(self, rows, source: "KVCache", source_rows=slice(None)) -> None:
        """Give `rows` the running condition and clocks of `source`'s `source_rows`."""
        self.condition[rows] = source.condition[source_rows]
        self.clocks[rows] = source.clocks[source_rows]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.layer_index = layer_index
        self.dropout = config.attn_dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`attn_mask` (bool [B, 1, T, T], True = may attend, or a FlexAttention BlockMask) replaces
        the causal mask, e.g. the block-diagonal causal mask of packed rows; with a cache, the
        cache's mask is used."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
        # [B, T, C] -> [B, H, T, D]
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

        is_causal = False
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_index, k, v)
            attn_mask = kv_cache.mask
            k, v = k.to(q.dtype), v.to(q.dtype)
        elif attn_mask is None:
            is_causal = T > 1
        elif BlockMask is not None and isinstance(attn_mask, BlockMask):
            y = flex(q, k, v, attn_mask).transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_drop(self.proj(y))
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

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.n_ctx, config.n_embd)
        self.cond_emb = nn.Embedding(config.n_conditions, config.n_embd) if config.n_conditions else None
        self.clock_emb = nn.ModuleList(
            nn.Embedding(len(clock["edges"]) + 1, config.n_embd) for clock in (config.clocks or [])
        )
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
        if self.cond_emb is not None:
            self.register_buffer(
                "condition_table", torch.tensor(config.condition_table, dtype=torch.long), persistent=False
            )
        for emb in self.clock_emb:
            # Zero at the start: a clock enters as a no-op and grows only as far as it helps. With
            # the usual N(0, 0.02) each clock would add as much noise to the input as the token
            # itself carries (measured: much slower early training).
            nn.init.zeros_(emb.weight)
        # [V]; derived from config.logit_bias, so never part of the checkpoint's weights.
        self.register_buffer("output_bias", torch.zeros(config.vocab_size), persistent=False)
        for token, shift in (config.logit_bias or {}).items():
            self.output_bias[token] = shift
        if config.clocks:
            # [n_clocks, V] each; derived from the config, so never part of the checkpoint.
            self.register_buffer("clock_add", torch.tensor([c["add"] for c in config.clocks]), persistent=False)
            self.register_buffer("clock_set", torch.tensor([c["set"] for c in config.clocks]), persistent=False)
            for j, clock in enumerate(config.clocks):
                self.register_buffer(f"clock_edges_{j}", torch.tensor(clock["edges"]), persistent=False)

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

    def conditions(self, idx: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """The running outcome condition after each token ([B, T]): the value set by the last
        condition-setting token at or before t, else `initial` ([B], default 0)."""
        sets = self.condition_table[idx]
        T = idx.shape[1]
        where = torch.where(sets >= 0, torch.arange(T, device=idx.device)[None, :], -1)
        last = torch.cummax(where, dim=1).values
        filled = sets.gather(1, last.clamp(min=0))
        start = torch.zeros(idx.shape[0], dtype=torch.long, device=idx.device) if initial is None else initial
        return torch.where(last >= 0, filled, start[:, None])

    def clock_values(self, idx: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """Each clock's running value after each token ([B, T, n_clocks]): the value set by the
        last setting token at or before t plus everything added since, else `initial`
        ([B, n_clocks], default 0) plus everything added since the start."""
        B, T = idx.shape
        out = []
        steps = torch.arange(T, device=idx.device)[None, :]
        for j in range(self.config.n_clocks):
            add, sets = self.clock_add[j][idx], self.clock_set[j][idx]
            total = torch.cumsum(torch.where(sets >= 0, 0.0, add), dim=1)
            last = torch.cummax(torch.where(sets >= 0, steps, -1), dim=1).values
            at = last.clamp(min=0)
            since_set = sets.gather(1, at) + total - total.gather(1, at)
            start = torch.zeros(B, device=idx.device) if initial is None else initial[:, j]
            out.append(torch.where(last >= 0, since_set, start[:, None] + total))
        return torch.stack(out, dim=-1) if out else torch.zeros(B, T, 0, device=idx.device)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        positions_offset: int = 0,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, V] and the next-token loss over the targets that count.

        Targets equal to -100, or where `loss_mask` is False/0, are ignored; `reduction="none"`
        returns the per-target loss [B, T] (0 where ignored). Packed rows give `segments`
        ([B, T] ids, one per window; attention stays inside a segment) and `positions` ([B, T],
        restarting at 0 in each segment). With a cache, each row's positions continue after its
        cached prefix and its length advances by T.
        """
        if idx.dim() != 2:
            raise ValueError(f"GPT.forward: idx must be [batch, time], got shape {tuple(idx.shape)}")
        pos = self._positions(idx, kv_cache, positions_offset, positions, segments)
        attn_mask = None
        if segments is not None:
            if segments.shape != idx.shape:
                raise ValueError(f"GPT.forward: segments shape {tuple(segments.shape)} != idx shape {tuple(idx.shape)}")
            attn_mask = packed_attention_mask(segments, dropout=self.training and bool(self.config.attn_dropout))

        x = self.drop(self._embed(idx, pos, kv_cache))
        for block in self.blocks:
            x = block(x, kv_cache, attn_mask)
        if kv_cache is not None:
            kv_cache.advance(idx.shape[1])
        logits = self.lm_head(self.ln_f(x))
        if self.config.logit_bias:
            logits = logits + self.output_bias.to(logits.dtype)

        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(
                    f"GPT.forward: targets shape {tuple(targets.shape)} != idx shape {tuple(idx.shape)}"
                )
            loss = next_token_loss(logits, targets, loss_mask, reduction)
        return logits, loss

    def _positions(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None,
        positions_offset: int,
        positions: torch.Tensor | None,
        segments: torch.Tensor | None,
    ) -> torch.Tensor:
        """The checked positions of `idx` ([B, T] or [1, T]): after each row's cached prefix, as
        given, or from `positions_offset`."""
        B, T = idx.shape
        if kv_cache is not None:
            if positions is not None or segments is not None or positions_offset:
                raise ValueError("GPT.forward: with a KV cache, positions follow the cache (no positions, "
                                 "segments or positions_offset)")
            if kv_cache.batch_size != B:
                raise ValueError(f"GPT.forward: batch {B} but the KV cache holds {kv_cache.batch_size} rows")
            longest = kv_cache.max_length()
            if longest + T > self.config.n_ctx:
                raise ValueError(
                    f"GPT.forward: positions up to {longest + T - 1} exceed n_ctx={self.config.n_ctx}"
                )
            return kv_cache.begin(T)
        if positions is not None:
            if positions.shape != idx.shape:
                raise ValueError(f"GPT.forward: positions shape {tuple(positions.shape)} != idx shape {tuple(idx.shape)}")
            # Two device-to-host reads: checked outside torch.compile only, where they would
            # break the graph (the trainer's positions come from the packing, in range by construction).
            if not is_compiling() and (int(positions.max()) >= self.config.n_ctx or int(positions.min()) < 0):
                raise ValueError(f"GPT.forward: positions must lie in [0, n_ctx={self.config.n_ctx})")
            return positions
        if positions_offset + T > self.config.n_ctx:
            raise ValueError(
                f"GPT.forward: positions {positions_offset}..{positions_offset + T - 1} exceed "
                f"n_ctx={self.config.n_ctx}"
            )
        return torch.arange(positions_offset, positions_offset + T, device=idx.device)[None, :]

    def _embed(self, idx: torch.Tensor, pos: torch.Tensor, kv_cache: KVCache | None) -> torch.Tensor:
        """Token, position, condition and clock embeddings [B, T, C]; a cache carries the running
        condition and clocks from one call to the next."""
        x = self.tok_emb(idx) + self.pos_emb(pos)
        if self.cond_emb is not None:
            initial = kv_cache.condition if kv_cache is not None else None
            # In packed rows no condition leaks into the next window: each starts with <s>, which
            # resets it.
            cond = self.conditions(idx, initial)
            x = x + self.cond_emb(cond)
            if kv_cache is not None:
                kv_cache.condition = cond[:, -1].clone()
        if self.config.n_clocks:
            values = self.clock_values(idx, kv_cache.clocks if kv_cache is not None else None)
            for j, emb in enumerate(self.clock_emb):
                x = x + emb(torch.bucketize(values[..., j].contiguous(), getattr(self, f"clock_edges_{j}"), right=True))
            if kv_cache is not None:
                kv_cache.clocks = values[:, -1].clone()
        return x


def set_logit_bias(model: GPT, bias: dict[int, float]) -> None:
    """Set the additive output biases (replacing earlier ones) in the config and the buffer."""
    model.config.logit_bias = {int(k): float(v) for k, v in bias.items()} or None
    model.config.__post_init__()
    model.output_bias.zero_()
    for token, shift in (model.config.logit_bias or {}).items():
        model.output_bias[token] = shift


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
