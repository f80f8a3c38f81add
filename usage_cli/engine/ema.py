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
    """teacher = m * teacher + (1 - m) * student for parameters; buffers are copied."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)
