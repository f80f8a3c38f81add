"""torch.distributed helpers: torchrun environment, init / teardown, rank checks, reductions, and the
``--device`` string (checked before any work)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from usage_cli.errors import ConfigError
from usage_cli.runtime import DEFAULTS, Runtime
from usage_cli.runtime import default_workers as runtime_default_workers

DEFAULT_TIMEOUT_MIN = DEFAULTS.timeout  # process-group timeout: rank 0's solo work (seed merge, checkpoints) fits in it
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with GPU N present; anything else is a ConfigError.

    Under torchrun each process takes ``cuda:<LOCAL_RANK>``, which must exist too. Returns the
    device with ``auto`` resolved."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    device = auto_device(device)
    if not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but PyTorch sees no CUDA device; use --device cpu")
    count = torch.cuda.device_count()
    index = int(os.environ.get("LOCAL_RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else torch.device(device).index or 0
    if index >= count:
        which = f"torchrun's local rank {index}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else f"--device {device}"
        raise ConfigError(f"{which} needs GPU {index}, but this machine has {count} (cuda:0..cuda:{count - 1})")
    return device


def init_distributed(device: str = "cpu", timeout_min: float = DEFAULT_TIMEOUT_MIN) -> DistInfo:
    """Join the process group that torchrun describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU.

    ``timeout_min`` bounds every collective, including a barrier where the other ranks wait for rank
    0's solo work; NCCL's own default (10 minutes) is too short for that. The device is checked first."""
    device = check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_min))
    info = current_info()
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    return info


def current_info() -> DistInfo:
    """Rank and world size of the joined process group (one process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def world_size() -> int:
    """Processes of this run: the process group's, or torchrun's WORLD_SIZE before it is joined."""
    return current_info().world_size if dist.is_available() and dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """The one main-rank question for code without a :class:`DistInfo` at hand (rank 0, or no group)."""
    return current_info().is_main


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def auto_device(device: str) -> str:
    """``auto`` means CUDA when PyTorch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_device(device: str, info: DistInfo) -> torch.device:
    device = check_device(device)
    if device.startswith("cuda"):
        return torch.device("cuda", info.local_rank if info.enabled else (torch.device(device).index or 0))
    return torch.device("cpu")


def enable_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (Ampere and later): fp32 work at tensor-core speed."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def default_workers(device: str) -> int:
    """Worker processes when none are asked for (``runtime.default_workers``, with ``auto`` resolved)."""
    return runtime_default_workers(gpu=auto_device(device).startswith("cuda"))


def worker_count(runtime: Runtime) -> int:
    """``--workers``, or :func:`default_workers` of ``--device`` when it is unset."""
    return default_workers(runtime.device) if runtime.workers is None else runtime.workers


def use_amp(amp: bool | None, device: torch.device | str) -> bool:
    """``--amp/--no-amp``: unset means on for CUDA and off on the CPU (fp32, as earlier versions);
    ``--amp`` on the CPU is bfloat16 autocast (the CUDA code path, run where the tests run)."""
    return torch.device(device).type == "cuda" if amp is None else bool(amp)
