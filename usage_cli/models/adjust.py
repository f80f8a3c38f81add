"""Architecture adjustment (USAGE sec. 4.2): drop-path and dropout rates that change during training.

timm builds ``DropPath`` modules only when the rate is > 0 at construction, so
:func:`make_adjustable` replaces the ``Identity`` placeholders by ``DropPath(0)`` modules whose rate
:func:`set_adjustment` can change at any time.
"""

from __future__ import annotations

from timm.layers import DropPath
from torch import nn


def make_adjustable(model: nn.Module) -> nn.Module:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name.startswith("drop_path") and isinstance(child, nn.Identity):
                setattr(module, name, DropPath(0.0))
        for name in ("drop_path", "drop_path1", "drop_path2"):  # timm ResNet keeps None when the rate is 0
            if name in vars(module) and getattr(module, name) is None:
                setattr(module, name, DropPath(0.0))
    return model


def drop_path_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, DropPath)]


def dropout_modules(model: nn.Module) -> list[nn.Dropout]:
    """Dropout layers that the adjustment drives: MLP / projection dropout of transformer blocks,
    feature-map dropout of CNN heads (attention-weight dropout is left alone)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d) and not name.endswith("attn_drop"):
            out.append(m)
    return out


def set_adjustment(model: nn.Module, drop_path: float, dropout: float) -> None:
    """Set the stochastic-depth rate (timm's rule: rising linearly with depth from 0 to ``drop_path``)
    and the dropout rate of every driven dropout layer."""
    dps = drop_path_modules(model)
    for i, m in enumerate(dps):
        m.drop_prob = float(drop_path) * (i / max(len(dps) - 1, 1))
    for m in dropout_modules(model):
        m.p = float(dropout)



def stochastic_eval(model: nn.Module) -> nn.Module:
    """Eval mode (frozen BatchNorm statistics) with drop-path and dropout still active: the teacher's
    weak adjustment."""
    model.eval()
    for m in drop_path_modules(model) + dropout_modules(model):
        m.train()
    return model
