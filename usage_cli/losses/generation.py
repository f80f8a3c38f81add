"""Generation loss of USAGE (Eq. 1, 3, 6-8): mapping functions from activation maps to class scores.

``z`` is the activation map of Eq. 2, B x C x h x w (the linear classifier applied at every location).
Which function a ``--mapping`` name scores with is said in one place, ``models/mappings.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _with_background(z: torch.Tensor, bg_const: float) -> torch.Tensor:
    """Append the constant background channel: B x (C+1) x h x w."""
    bg = z.new_full((z.shape[0], 1, *z.shape[2:]), float(bg_const))
    return torch.cat([z, bg], dim=1)


def log_alpha(z: torch.Tensor, bg_const: float = 0.0) -> torch.Tensor:
    """The spatial activation distribution of Eq. 7 in log space: a log-softmax over the C classes and
    the constant background at each location, B x (C+1) x h x w (stable for any temperature after it)."""
    return F.log_softmax(_with_background(z, bg_const), dim=1)


def cam_scores(z: torch.Tensor) -> torch.Tensor:
    """CAM mapping (Eq. 3): global average of the activation map."""
    return z.mean(dim=(2, 3))


def cm_weights(z: torch.Tensor, tau1: float, bg_const: float = 0.0) -> torch.Tensor:
    """The spatial weights of Eq. 8, alpha^(1/tau1) normalised over locations: B x C x (h*w).

    1. log alpha of the C classes (Eq. 7, :func:`log_alpha`; stable for any tau1);
    2. alpha^(1/tau1) / sum over locations = softmax of (log alpha / tau1) over h*w.
    """
    la = log_alpha(z, bg_const)[:, :-1]  # 1.
    return F.softmax(la.flatten(2) / tau1, dim=-1)  # 2.


def cm_scores(z: torch.Tensor, tau1: float, bg_const: float = 0.0) -> torch.Tensor:
    """USAGE mapping (Eq. 8): per class, the average of z weighted by alpha^(1/tau1)."""
    return (cm_weights(z, tau1, bg_const) * z.flatten(2)).sum(-1)


def effective_share(weights: torch.Tensor) -> torch.Tensor:
    """Effective sample size of spatial weights as a share of the locations, ESS / N =
    1 / (N * sum w^2) for weights that sum to 1 over the last axis: 1 = uniform (CAM's average),
    1/N = all weight on one location."""
    return 1.0 / (weights.shape[-1] * weights.pow(2).sum(-1))


def mil_scores(z: torch.Tensor, bg_const: float = 0.0) -> torch.Tensor:
    """MIL mapping (Eq. 6, Pinheiro & Collobert): alpha-weighted average, no temperature."""
    return cm_scores(z, 1.0, bg_const)


def classification_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 1 / first term of Eq. 5: (1/|C|) sum_c BCE(y_c, sigmoid(s_c)), averaged over the batch."""
    return F.binary_cross_entropy_with_logits(scores, targets.to(scores.dtype), reduction="mean")
