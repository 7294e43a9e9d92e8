"""Data-parallel training under torchrun: process group from the environment, batch sharding.

`torchrun --nproc_per_node=N` (or `python -m torch.distributed.run`) sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in every process. When WORLD_SIZE > 1 the trainer calls
`setup()` and trains with DistributedDataParallel (gloo on CPU, NCCL on CUDA):

- `batch_size` is packed rows *per rank*: the global batch is batch_size x N rows and rank r takes
  rows r, r + N, r + 2N, ... of it, so each GPU's work stays fixed as GPUs are added (the learning
  rate is not rescaled: raise it with the global batch if wanted);
- each rank's loss is its targets' summed loss over the *global* target count (times N, since DDP
  averages gradients), so the gradient equals the single-process one up to float summation order;
- validation batches are split the same way and the summed losses and counts all-reduced, so every
  rank sees the same val loss and takes the same early-stopping decision;
- only rank 0 logs, calls `on_log` and writes training states.

Plain torch.distributed; no Dagster here.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Dist:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: list) -> list:
        """This rank's rows of a global batch (rank r: r, r + N, ...); may be empty."""
        return rows[self.rank::self.world_size] if self.enabled else rows

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def teardown(self) -> None:
        if self.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group that torchrun describes in the environment (no-op when WORLD_SIZE <= 1).

    On CUDA each process takes the GPU of its LOCAL_RANK. Returns the group and this rank's device.
    """
    world = env_world_size()
    if world <= 1:
        return Dist(), device
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={world} but {name} is not set: launch with torchrun "
                "(python -m torch.distributed.run --nproc_per_node=N ...), which sets it"
            )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    here = False
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = _dt.timedelta(seconds=float(os.environ.get("SYNEHRGY_DIST_TIMEOUT_S", "1800")))
        torch.distributed.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        here = True
    if torch.distributed.get_world_size() != world:
        raise RuntimeError(f"WORLD_SIZE={world} but the process group has {torch.distributed.get_world_size()}")
    return Dist(rank=rank, world_size=world, local_rank=local_rank, initialized_here=here), device


def global_batch_counts(rows: list[np.ndarray], lengths: np.ndarray, n_targets: np.ndarray,
                        n_ctx: int) -> tuple[int, int, int]:
    """(targets, positions, padding positions) of a whole packed batch, from the window lengths only."""
    idx = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    positions = len(rows) * n_ctx
    return int(n_targets[idx].sum()), positions, positions - int((lengths[idx] - 1).sum())
