"""Data-parallel training through torch.distributed: torchrun starts the processes and sets RANK/WORLD_SIZE.

Every rank holds the whole model and draws the same global batch indices (one seeded generator), then trains
on its own slice; DDP averages the gradients, so N processes take the steps one process would (up to
floating-point order and SGM's soft-target running means, which each rank keeps over its own slices).
Continual evaluation, the stop decision, the final evaluation and the one checkpoint happen on rank 0.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def init_from_env() -> None:
    """Join the process group torchrun describes (gloo: the engine computes on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        atexit.register(dist.destroy_process_group)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def wrap(model: nn.Module) -> nn.Module:
    return DistributedDataParallel(model) if world() > 1 else model


def decided_on_rank0(flag: bool) -> bool:
    """Rank 0's `flag`, on every rank (every rank must call this at the same step)."""
    if world() == 1:
        return flag
    value = torch.tensor([int(flag)])
    dist.broadcast(value, src=0)
    return bool(value.item())
