"""Optimisers and per-iteration learning-rate schedules (warm-up + cosine or poly)."""

from __future__ import annotations

import math

import torch

from usage_cli.errors import ConfigError


def build_optimizer(name: str, params: list[dict], lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer '{name}'; choose adamw or sgd")


def lr_factor(step: int, total: int, warmup: int, schedule: str, power: float = 0.9) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "poly":
        return (1.0 - progress) ** power
    if schedule == "constant":
        return 1.0
    raise ConfigError(f"unknown schedule '{schedule}'; choose cosine, poly or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int, schedule: str, power: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, schedule, power))


def backbone_head_groups(backbone_params, head_params, lr: float, head_mult: float = 10.0) -> list[dict]:
    """Two parameter groups: the pretrained backbone at ``lr``, the new layers at ``head_mult`` x ``lr``
    (PSA / DeepLab practice)."""
    return [{"params": list(backbone_params), "lr": lr}, {"params": list(head_params), "lr": lr * head_mult}]
