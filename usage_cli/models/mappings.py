"""The mappings from activation maps to class scores (``--mapping``), as data: what each one scores
with, whether it needs MCTformer's class tokens, and which activation its seeds come from.

The classifier, the training diagnostics and gen-seeds ask :func:`get_mapping` instead of comparing
the name. A new mapping is one more :class:`Mapping` in :data:`MAPPINGS` (with its scoring function
in ``losses/generation.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from usage_cli.errors import ConfigError
from usage_cli.losses.generation import cam_scores, cm_scores


@dataclass(frozen=True)
class Mapping:
    name: str
    equation: str  # where the paper defines it
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
        """Class scores B x C of the activation map ``z`` (B x C x h x w); for ``mct`` the patch-CAM
        scores (the class-token logits come from the tokens, not from ``z``)."""
        t = self.tau(tau1)
        return cam_scores(z) if t is None else cm_scores(z, t, bg_const)


MAPPINGS: dict[str, Mapping] = {
    m.name: m
    for m in (
        Mapping("cam", "Eq. 3"),
        Mapping("mil", "Eq. 6", weights_tau=1.0),
        Mapping("cm", "Eq. 8", weights_tau="tau1"),
        Mapping("mct", "Eq. 10-11", class_tokens=True, cls_attn_layers=3),
    )
}


def get_mapping(name: str) -> Mapping:
    if name not in MAPPINGS:
        raise ConfigError(f"unknown mapping '{name}'; choose from {', '.join(MAPPINGS)}")
    return MAPPINGS[name]


def mapping_scores(z: torch.Tensor, mapping: str, tau1: float, bg_const: float) -> torch.Tensor:
    """Class scores of ``z`` by the mapping named ``mapping``."""
    return get_mapping(mapping).scores(z, tau1, bg_const)
