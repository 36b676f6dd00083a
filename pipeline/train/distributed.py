"""Data-parallel training through torch.distributed: torchrun starts the processes and sets RANK/WORLD_SIZE.

Every rank holds the whole model and draws the same global batch indices (one seeded generator), then trains
on its own slice; DDP averages the gradients, so N processes take the steps one process would (up to
floating-point order and SGM's soft-target running means, which each rank keeps over its own slices).
Continual evaluation, the final evaluation and the one checkpoint happen on rank 0. On CUDA
every rank takes the GPU of its LOCAL_RANK and the ranks talk over NCCL; on the CPU over gloo.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes: NCCL between GPUs (`device` is this rank's), else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def wrap(model: nn.Module) -> nn.Module:
    if world() == 1:
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

