"""torch.distributed helpers: torchrun environment, init / teardown, rank checks, reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group that torchrun describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if auto_device(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if auto_device(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def auto_device(device: str) -> str:
    """``auto`` means CUDA when PyTorch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_device(device: str, info: DistInfo) -> torch.device:
    device = auto_device(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            from usage_cli.errors import ConfigError

            raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA device; use --device cpu")
        return torch.device("cuda", info.local_rank if info.enabled else (torch.device(device).index or 0))
    return torch.device("cpu")
