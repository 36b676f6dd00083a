"""Where the engine computes and at which precision: `--device auto|cpu|cuda|cuda:N` ($PIPELINE_DEVICE) and
`train.precision` / `update.precision` (auto|fp32|bf16). The same commands use a GPU when one is there and run
exactly as before on a CPU."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

AUTO = "auto"


class DeviceError(ValueError):
    """A device the user asked for is not there; the message says what is."""


def resolve_device(spec: str = AUTO) -> torch.device:
    """`auto`: CUDA when present, else the CPU. Under torchrun on CUDA every rank takes the GPU of its LOCAL_RANK."""
    spec = (spec or AUTO).strip().lower()
    if spec == AUTO:
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise DeviceError(f"--device {spec!r}: not a device; give auto, cpu, cuda or cuda:N") from err
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"--device {spec!r}: the engine runs on cpu or cuda; give auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {spec}: no CUDA device is visible (torch {torch.__version__}, CUDA build: "
                          f"{torch.version.cuda or 'none'}); use --device cpu, or install a CUDA build of torch")
    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if device.index is not None:
            raise DeviceError(f"--device {spec} with several processes: each takes the GPU of its rank; give "
                              "--device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 on CUDA (autocast; weights and checkpoints stay fp32), fp32 on the CPU."""
    if precision == AUTO:
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass and loss (a no-op at fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe(device: torch.device) -> str:
    """The device in words, for logs and benchmark results: on a CPU its model and the vector instructions torch
    uses: two machines of "2 cores" here ran the same training step 3x apart."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return (f"CPU {cpu_model()}, {torch.backends.cpu.get_cpu_capability()} ({os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads)")


def cpu_model() -> str:
    """The CPU's model name as Linux reports it (/proc/cpuinfo), else as `platform` does."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return next((line.partition(":")[2].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                platform.processor() or "unknown")
