"""Process group set-up for ``torchrun``; a single process is a world of size 1.

Everything that writes (checkpoints, logs, metrics, targets) happens on rank 0; the other ranks
only contribute gradients. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.device import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_preference: str = "auto") -> DistEnv:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(device=resolve_device(device_preference))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_flag(env: DistEnv, flag: bool) -> bool:
    """Rank 0's decision (e.g. early stop), shared with every rank."""
    if not env.distributed:
        return flag
    t = torch.tensor([int(flag)], device=env.device if env.device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_reduce_sum(env: DistEnv, values: torch.Tensor) -> torch.Tensor:
    if env.distributed:
        values = values.to(env.device if env.device.type == "cuda" else "cpu")
        dist.all_reduce(values)
    return values


def shutdown() -> None:
    """Leave the process group, if this process joined one (idempotent).

    Unreachable objects that still hold the group (a DDP reducer in a reference cycle) are
    collected first, while the interpreter is whole: destroyed later, at exit, their gloo threads
    would abort the process.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
