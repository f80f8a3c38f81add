"""Segmentation inference: multi-scale + flip fusion of class probabilities, optional dense CRF.

Pure functions: a ``predict`` callable (image batch -> logits) goes in, a C x H x W probability map
comes out. The anchors (MCTformer, DeepLab) fuse scales 0.5..1.5 and the horizontal flip; here the
softmax probabilities of every (scale, flip) view are brought back to the input size and averaged
(``fuse="mean"``) or max-pooled (``fuse="max"``, MCTformer's choice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from usage_cli.algorithms.crf import dense_crf

Predict = Callable[[torch.Tensor], torch.Tensor]
FUSIONS = ("mean", "max")


def view_probs(predict: Predict, image: torch.Tensor, scale: float, flip: bool) -> torch.Tensor:
    """Probabilities (V x C x H x W, V = 2 with flip else 1) of one scale, at the input size."""
    h, w = image.shape[-2:]
    # 1. resize the 1 x 3 x H x W image to the scale (bilinear, as in training)
    size = (max(int(round(h * scale)), 1), max(int(round(w * scale)), 1))
    x = image if size == (h, w) else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    # 2. the mirrored view goes in the same batch
    if flip:
        x = torch.cat([x, x.flip(-1)], 0)
    logits = predict(x).float()
    # 3. un-mirror, back to H x W, softmax over classes
    if flip:
        logits = torch.cat([logits[:1], logits[1:].flip(-1)], 0)
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.softmax(1)


def fuse_views(
    predict: Predict,
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fuse: str = "mean",
) -> torch.Tensor:
    """C x H x W class probabilities of a 1 x 3 x H x W image, fused over scales and flips."""
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
    if not scales:
        raise ValueError("at least one scale is needed")
    # 1. probabilities of every view; 2. mean or max over views
    views = torch.cat([view_probs(predict, image, s, flip) for s in scales], 0)
    return views.mean(0) if fuse == "mean" else views.max(0).values


def crf_refine(image: np.ndarray, probs: np.ndarray, **kernels) -> np.ndarray:
    """Dense-CRF posterior (C x H x W float32) of HxWx3 uint8 ``image`` given ``probs``."""

    return dense_crf(image, np.ascontiguousarray(probs, dtype=np.float32), **kernels)


def to_label(probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """Arg-max label map (H x W uint8) of C x H x W probabilities. A tensor is reduced where it lives
    (on a GPU) and only the H x W labels are copied to the host, not the C x H x W map."""
    if torch.is_tensor(probs):
        return probs.detach().argmax(0).to(torch.uint8).cpu().numpy()
    return np.asarray(probs).argmax(0).astype(np.uint8)


def parse_scales(text: str) -> tuple[float, ...]:
    """"0.5,1,1.5" -> (0.5, 1.0, 1.5); raises ValueError on anything else."""
    scales = tuple(float(s) for s in text.split(",") if s.strip())
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers separated by commas, got {text!r}")
    return scales
