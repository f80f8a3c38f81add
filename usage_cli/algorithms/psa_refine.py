"""PSA's per-image refinement (Ahn & Kwak, CVPR 2018): seed maps + a background channel, walked with
the affinities an AffinityNet predicts, arg-max -> a pseudo mask of label values.

Pure functions of tensors and arrays: no files, no config objects. The network enters as a
``features`` callable (padded, normalised 1 x 3 x H' x W' image -> 1 x D x H'/stride x W'/stride
feature map), as in :mod:`usage_cli.algorithms.seg_infer`; the caller normalises and pads the image
for its network and chooses device and autocast. The walk itself is
:func:`usage_cli.algorithms.random_walk.walk`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from usage_cli.algorithms.affinity import (
    background_power,
    pair_affinity,
    search_offsets,
    with_background,
)
from usage_cli.algorithms.random_walk import walk

Features = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class WalkSettings:
    """The walk's parameters (refine-psa's presets fill them)."""

    radius: int  # affinities to the neighbours within this many feature cells
    beta: float  # affinity power (sharpens the transition matrix)
    logt: int  # 2**logt walk steps
    bg_mode: str  # "power": background (1 - max)^bg_power | "const": background bg_const
    bg_power: float
    bg_const: float
    method: str = "auto"  # auto | dense | local (random_walk.walk)
    norm: str = "none"  # none | class-max | max: the walked class scores rescaled before the arg-max (rescale_walked)


WALK_NORMS = ("none", "class-max", "max")


def rescale_walked(rw: torch.Tensor, norm: str) -> torch.Tensor:
    """The walked scores (1 x (n+1) x h x w, background first) with the class channels rescaled before the
    arg-max. The walk averages each score with its neighbours', so a peaked class map loses height while a
    constant background keeps its value: compared as they are (``none``, PSA and MCTformer), objects shrink
    against a background cut chosen on the unwalked maps. ``class-max`` divides each class map by its own
    maximum, as the seeds were normalised (gen-seeds ``--normalise max``); ``max`` divides all of them by
    their joint maximum (IRN's ``rw_up / max(rw_up)``). The background channel is left as walked."""
    if norm == "none" or rw.shape[1] < 2:
        return rw
    fg = rw[:, 1:]
    peak = fg.amax(dim=(2, 3), keepdim=True) if norm == "class-max" else fg.amax(dim=(1, 2, 3), keepdim=True)
    return torch.cat([rw[:, :1], fg / peak.clamp_min(1e-5)], dim=1)


def seed_scores(cams: np.ndarray, s: WalkSettings) -> torch.Tensor:
    """(n+1) x H x W: background ((1 - max)^power or a constant) before the n class maps."""
    bg = background_power(cams, s.bg_power) if s.bg_mode == "power" else s.bg_const
    return torch.from_numpy(with_background(cams, bg))


def refine_image(features: Features, x: torch.Tensor, cams: np.ndarray, keys: Sequence[int], s: WalkSettings, stride: int) -> np.ndarray:
    """Pseudo mask (H x W uint8 label values ``[0, *keys]``) of one image from its n x H x W float32 seed
    maps ``cams`` (one per key); ``x`` is the normalised image, 1 x 3 x H' x W', zero-padded at the
    bottom / right to the network's multiple (H' >= H, W' >= W)."""
    h, w = cams.shape[1:]
    if len(keys) == 0:
        return np.zeros((h, w), np.uint8)
    offsets = search_offsets(s.radius)
    with torch.inference_mode():
        # 1. affinities of the padded image on the feature grid
        pair = pair_affinity(features(x).float(), offsets)
        # 2. seeds + background, padded like the image (pad: no class, background as computed there), pooled to the grid
        scores = seed_scores(np.pad(cams, ((0, 0), (0, x.shape[2] - h), (0, x.shape[3] - w))), s)[None].to(x.device)
        small = F.avg_pool2d(scores, stride, stride)
        # 3. walk, back to the padded size, crop, arg-max -> label values
        rw = rescale_walked(walk(small, pair, offsets, s.beta, s.logt, method=s.method), s.norm)
        up = F.interpolate(rw, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, :, :h, :w]
    lut = np.asarray([0, *keys], np.uint8)
    return lut[up.argmax(0).cpu().numpy()]
