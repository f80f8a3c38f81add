"""Seed maps from activation maps: patch-affinity refinement (from the attention's queries and keys),
multi-scale + flip fusion, present classes only, per-class normalisation to [0, 1]. Pure tensor functions.

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


def refine_with_attention(qk: Sequence[tuple[torch.Tensor, torch.Tensor, float]], cams: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """MCTformer's patch-affinity refinement of activation maps (B x C x h x w), without its affinity.

    MCTformer propagates the maps along ``sum_l mean_h A_lh[patch, patch]``, the patch-to-patch
    attention of the kept layers averaged over heads. Each term ``A_lh[patch, patch] @ maps`` is the
    output of layer l's attention for the patch queries whose values are the maps (zero on the
    ``num_prefix`` class / register tokens), so the fused attention kernel computes it from the
    layer's queries and keys, ``qk`` = (q, k, scale) per layer (B x heads x T x d), in memory linear
    in the tokens T: no T x T matrix is formed."""
    B, C, h, w = cams.shape
    q0 = qk[0][0]
    heads, d = q0.shape[1], q0.shape[-1]
    # 1. the values: the maps of the patch tokens, zeros for the prefix tokens, padded to whole heads
    #    (the kernels want values as wide as the queries)
    width = -(-C // d) * d
    values = F.pad(cams.flatten(2).transpose(1, 2), (0, width - C, num_prefix, 0)).to(q0.dtype)  # B x T x width
    total = torch.zeros(B, h * w, width, device=cams.device)
    for q, k, scale in qk:
        # 2. each layer: the attention output of the patch queries, a head-wide slice of values at a time
        out = [F.scaled_dot_product_attention(q[:, :, num_prefix:], k, values[:, None, :, j : j + d].expand(-1, heads, -1, -1), scale=scale)
               for j in range(0, width, d)]  # fmt: skip
        # 3. averaged over heads, summed over layers
        total += torch.cat(out, -1).float().mean(1)
    return total[..., :C].transpose(1, 2).reshape(B, C, h, w)


def refine_with_affinity(affinity: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """MCTformer's patch-affinity refinement with its affinity made (B x N x N, ``sum_l mean_h
    A_lh[patch, patch]``, N = h x w): ``affinity @ maps`` per image (maps B x C x h x w)."""
    B, C, h, w = cams.shape
    return torch.bmm(affinity, cams.flatten(2).transpose(1, 2).to(affinity.dtype)).transpose(1, 2).reshape(B, C, h, w)


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
