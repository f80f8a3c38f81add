"""The mappings from activation maps to class scores (``--mapping``), as data: what each one scores
with, whether it needs MCTformer's class tokens, and which activation its seeds come from.

The classifier, the training diagnostics and gen-seeds ask :func:`get_mapping` instead of comparing
the name. Each mapping names its scoring function (``score``, from ``losses/generation.py``); a new
mapping is one more :class:`Mapping` in :data:`MAPPINGS`, with its function there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from usage_cli.errors import ConfigError
from usage_cli.losses.generation import cam_scores, cm_scores, mil_scores

Score = Callable[[torch.Tensor, float, float], torch.Tensor]  # (z, tau1, bg_const) -> B x C scores


@dataclass(frozen=True)
class Mapping:
    name: str
    equation: str  # where the paper defines it
    score: Score  # its scoring function
    # the temperature of the Eq. 8 spatial weights alpha^(1/t): "tau1" (cm), 1.0 (mil), or None for
    # the uniform average of CAM (Eq. 3)
    weights_tau: str | float | None = None
    # MCTformer: one class token per class (a transformer only); logits from the tokens, and seeds
    # from the class-to-patch attention of the last ``cls_attn_layers`` layers
    class_tokens: bool = False
    cls_attn_layers: int = 0

    @property
    def seed_sources(self) -> tuple[str, ...]:
        """The activations gen-seeds can read (``--source``), the default first: ``attn``
        (class-to-patch attention x CAM) needs class tokens; ``cam`` is the activation map itself."""
        return ("attn", "cam") if self.class_tokens else ("cam",)

    def tau(self, tau1: float) -> float | None:
        """The temperature of the spatial weights for this ``--tau1``; None: uniform (CAM)."""
        return tau1 if self.weights_tau == "tau1" else self.weights_tau

    def scores(self, z: torch.Tensor, tau1: float, bg_const: float) -> torch.Tensor:
        """Class scores B x C of the activation map ``z`` (B x C x h x w) by its scoring function; for
        ``mct`` the patch-CAM scores (the class-token logits come from the tokens, not from ``z``)."""
        return self.score(z, tau1, bg_const)


MAPPINGS: dict[str, Mapping] = {
    m.name: m
    for m in (
        Mapping("cam", "Eq. 3", lambda z, tau1, bg: cam_scores(z)),
        Mapping("mil", "Eq. 6", lambda z, tau1, bg: mil_scores(z, bg), weights_tau=1.0),
        Mapping("cm", "Eq. 8", lambda z, tau1, bg: cm_scores(z, tau1, bg), weights_tau="tau1"),
        Mapping("mct", "Eq. 10-11", lambda z, tau1, bg: cam_scores(z), class_tokens=True, cls_attn_layers=3),  # patch-CAM scores by GAP
    )
}


def get_mapping(name: str) -> Mapping:
    if name not in MAPPINGS:
        raise ConfigError(f"unknown mapping '{name}'; choose from {', '.join(MAPPINGS)}")
    return MAPPINGS[name]

