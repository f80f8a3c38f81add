"""Exponential moving average of a network's weights (the USAGE teacher)."""

from __future__ import annotations

import torch
from torch import nn


def ema_momentum(base: float, step: int, warmup: bool = True) -> float:
    """min(base, (1 + t) / (10 + t)) with warm-up: a teacher at 0.99 from step 0 barely moves in a
    few hundred CPU steps, so it starts by following the student closely."""
    return min(base, (1.0 + step) / (10.0 + step)) if warmup else base


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher = m * teacher + (1 - m) * student for parameters; buffers are copied.

    One fused call per operation (``torch._foreach_*``) instead of a kernel launch per tensor; the
    arithmetic is the same ``mul_`` then ``add_`` as a per-tensor loop, so the results are identical."""
    t_params, s_params = list(teacher.parameters()), [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
    t_bufs, s_bufs = list(teacher.buffers()), list(student.buffers())
    if len(t_bufs) != len(s_bufs):
        raise ValueError(f"teacher has {len(t_bufs)} buffers, student {len(s_bufs)}")
    if t_bufs:
        torch._foreach_copy_(t_bufs, s_bufs)
