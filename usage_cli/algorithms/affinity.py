"""AffinityNet supervision (PSA, Ahn & Kwak 2018, Sec. 3.1-3.2): confident labels from seeds,
pair labels within a radius, the balanced affinity loss, and affinities from a feature map.

* Confident labels: the seed maps with a background ``(1 - max_c v_c)^alpha`` at a low alpha
  (``la``: strong background, so only confident foreground survives) and a high alpha (``ha``:
  weak background, so only confident background survives), each refined by a dense CRF. Pixels
  that are foreground under ``la`` keep their class, background under ``ha`` gives 0, the band in
  between is 255 (ignored).
* Pairs (i, j) within the radius: positive when both labels agree (background-positive for 0,
  foreground-positive otherwise), negative when they differ; a pair touching 255 is not used.
* Loss: ``bg/4 + fg/4 + neg/2`` of the per-kind mean cross entropies (from distances, see
  :func:`affinity_loss`).
* Affinity: ``a_ij = exp(-mean_d |f_i - f_j|)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from usage_cli.algorithms.crf import dense_crf
from usage_cli.algorithms.random_walk import shift

IGNORE = 255
EPS = 1e-5  # PSA's log and count guard

Offset = tuple[int, int]


def search_offsets(radius: int) -> list[Offset]:
    """Half-plane offsets (dy, dx) with dy^2 + dx^2 < radius^2, each unordered pair once (PSA order).

    radius 5 gives 34 offsets: (0, 1..4), then rows dy = 1..4.
    """
    if radius < 2:
        raise ValueError(f"radius must be >= 2, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        offsets += [(dy, dx) for dx in range(-radius + 1, radius) if dx * dx + dy * dy < radius * radius]
    return offsets


def background_power(cams: np.ndarray, alpha: float) -> np.ndarray:
    """PSA's background score ``(1 - max_c cam_c)^alpha`` (H x W) of n x H x W maps in [0, 1]."""
    if cams.shape[0] == 0:
        return np.ones(cams.shape[1:], np.float32)
    return np.power(1.0 - cams.max(0), alpha).astype(np.float32)


def with_background(cams: np.ndarray, bg: np.ndarray | float) -> np.ndarray:
    """(n+1) x H x W: the background score (a map or a constant) stacked before the n class maps."""
    bg_map = np.broadcast_to(np.asarray(bg, np.float32), cams.shape[1:])
    return np.concatenate([bg_map[None], cams.astype(np.float32)], 0)


def confident_label(la_scores: np.ndarray, ha_scores: np.ndarray, keys: Sequence[int]) -> np.ndarray:
    """H x W uint8 label from the (n+1) x H x W scores at low and high alpha (channel 0 = background).

    Foreground where ``la`` says so (its label value ``keys[c-1]``), 0 where ``ha`` says background
    (this wins), 255 elsewhere.
    """
    lut = np.asarray([0, *keys], np.uint8)
    la, ha = la_scores.argmax(0), ha_scores.argmax(0)
    # 1. confident foreground from la; its background is not yet trusted
    label = lut[la]
    label[la == 0] = IGNORE
    # 2. confident background from ha
    label[ha == 0] = 0
    return label


def confident_label_for_image(
    image: np.ndarray, cams: np.ndarray, keys: Sequence[int], la: float, ha: float, crf: dict | None
) -> np.ndarray:
    """Confident label of one image: seeds at both alphas, dense CRF each (``crf`` kernels, or None)."""

    scores = []
    for alpha in (la, ha):
        s = with_background(cams, background_power(cams, alpha))
        scores.append(dense_crf(image, s, **crf) if crf is not None else s)
    return confident_label(scores[0], scores[1], keys)


def pair_labels(label: torch.Tensor, offsets: Sequence[Offset]) -> tuple[torch.Tensor, ...]:
    """(bg_pos, fg_pos, neg) float masks, B x P x h x w, from a B x h x w label map (255 = ignore)."""
    to = torch.stack([shift(label, dy, dx, fill=IGNORE) for dy, dx in offsets], 1)
    frm = label.unsqueeze(1)
    # 1. usable pairs: both ends labelled and inside the grid
    valid = (frm != IGNORE) & (to != IGNORE)
    # 2. agreeing pairs split by background / foreground; disagreeing pairs are negatives
    same = (frm == to) & valid
    bg = same & (frm == 0)
    fg = same & (frm != 0)
    neg = valid & (frm != to)
    return bg.float(), fg.float(), neg.float()


def affinity_loss(
    dist: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor, neg: torch.Tensor
) -> dict[str, torch.Tensor]:
    """PSA's balanced loss ``bg/4 + fg/4 + neg/2`` from pair distances ``d`` (affinity ``a = exp(-d)``).

    Positives cost ``-log a = d``, negatives ``-log(1 - a)``; each kind is averaged over its pairs.
    PSA computes ``-log(a + 1e-5)``, which equals ``d`` until ``a`` drops below 1e-5, where its
    gradient vanishes; taking ``d`` directly keeps the gradient of far-apart positive pairs.
    """
    dist = dist.float()
    bg_loss = (bg * dist).sum() / (bg.sum() + EPS)
    fg_loss = (fg * dist).sum() / (fg.sum() + EPS)
    neg_loss = (-neg * torch.log(-torch.expm1(-dist) + EPS)).sum() / (neg.sum() + EPS)
    loss = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return {"loss": loss, "bg_loss": bg_loss, "fg_loss": fg_loss, "neg_loss": neg_loss}


def pair_distance(feat: torch.Tensor, offsets: Sequence[Offset]) -> torch.Tensor:
    """B x P x h x w distances ``mean_d |f_i - f_(i+o)|`` (off-grid partners: the distance to 0)."""
    return torch.stack([(feat - shift(feat, dy, dx)).abs().mean(1) for dy, dx in offsets], 1)


def pair_affinity(feat: torch.Tensor, offsets: Sequence[Offset]) -> torch.Tensor:
    """B x P x h x w affinities ``exp(-mean_d |f_i - f_(i+o)|)`` of a B x D x h x w feature map.

    Pairs whose partner falls outside the grid get 0 (they never enter the walk).
    """
    h, w = feat.shape[-2:]
    ones = feat.new_ones(h, w)
    valid = torch.stack([shift(ones, dy, dx) for dy, dx in offsets])
    return torch.exp(-pair_distance(feat, offsets)) * valid
