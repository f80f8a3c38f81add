"""Seed maps from activation maps: patch-affinity refinement, multi-scale + flip fusion, present
classes only, per-class normalisation to [0, 1]. Pure tensor functions.

The normalisations (``--normalise``), each a fusion order and a per-class scaling:

* ``max``: ReLU each view, sum, divide by the maximum (PSA, IRN);
* ``minmax``: ReLU each view, sum, ``(x - min) / (max - min)`` (MCTformer's seed export);
* ``raw-minmax``: sum the views as they are, ``(x - min) / (max - min)``: a class whose activation is
  negative everywhere still keeps its relatively strongest region (no empty seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def patch_attention(attn: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """One layer's patch-to-patch attention averaged over heads: B x heads x T x T -> B x N x N."""
    return attn[:, :, num_prefix:, num_prefix:].mean(1)


def patch_affinity(attn: Sequence[torch.Tensor], num_prefix: int, layers: int = 12) -> torch.Tensor:
    """MCTformer's patch-to-patch affinity: attention averaged over heads, summed over the last
    ``layers`` layers, patch tokens only. ``attn``: per layer B x heads x T x T -> B x N x N."""
    return sum(patch_attention(a, num_prefix) for a in list(attn)[-layers:])


def refine_with_affinity(cams: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Propagate activation maps (B x C x h x w) along the patch affinity (B x hw x hw)."""
    B, C, h, w = cams.shape
    return torch.bmm(affinity, cams.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, C, h, w)


NORMALISE = ("max", "minmax", "raw-minmax")


def relu_views(normalise: str) -> bool:
    """Whether a normalisation fuses ReLU'd views (all but ``raw-minmax``)."""
    if normalise not in NORMALISE:
        raise ValueError(f"unknown normalisation '{normalise}'; choose from {', '.join(NORMALISE)}")
    return normalise != "raw-minmax"


def fuse_views(views: Sequence[torch.Tensor], flipped: Sequence[bool], size: tuple[int, int], relu: bool = True) -> torch.Tensor:
    """Sum of C x h_i x w_i maps, each ReLU'd (``relu``), un-flipped and resized to the image size (H, W).

    ReLU before the sum, as PSA's and IRN's ``forward_cam``: one view's negative tail cannot cancel
    another view's object."""
    total = None
    for z, f in zip(views, flipped, strict=True):
        # 1. ReLU the view (at its own resolution, before resizing, as the references do)
        z = F.relu(z) if relu else z
        # 2. undo the flip, resize to the image size
        z = z.flip(-1) if f else z
        z = F.interpolate(z[None], size=size, mode="bilinear", align_corners=False)[0]
        # 3. sum
        total = z if total is None else total + z
    return total


def seed_maps(fused: torch.Tensor, keys: Sequence[int], normalise: str = "max", eps: float = 1e-5) -> torch.Tensor:
    """Keep the classes of ``keys`` (label values 1..K) and scale each map to [0, 1]: ``max`` ReLUs and
    divides by the maximum, ``minmax`` and ``raw-minmax`` map [min, max] onto [0, 1] (a constant map: 0)."""
    relu_views(normalise)  # checks the name
    idx = torch.as_tensor([k - 1 for k in keys], dtype=torch.long, device=fused.device)
    maps = fused.index_select(0, idx)
    if normalise == "max":
        maps = F.relu(maps)
        return maps / (maps.flatten(1).max(-1).values[:, None, None] + eps)
    lo = maps.flatten(1).min(-1).values[:, None, None]
    hi = maps.flatten(1).max(-1).values[:, None, None]
    return (maps - lo) / (hi - lo + eps)


def scaled_size(h: int, w: int, scale: float, multiple: int) -> tuple[int, int]:
    """Size of a rescaled view, rounded to a multiple of the patch size (transformers) or 1."""
    m = max(int(multiple), 1)
    return max(m, int(round(h * scale / m)) * m), max(m, int(round(w * scale / m)) * m)
