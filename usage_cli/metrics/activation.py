"""Per-step diagnostics of the classifier's activation maps, logged per epoch in ``log.jsonl``.

They say whether a run learns anything a seed can use, whether the CM weights sharpen (ESS / N)
and whether the AA teacher and student agree. Pure tensor functions, no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from usage_cli.losses.generation import _with_background, cm_weights, effective_share


@torch.no_grad()
def map_diagnostics(z: torch.Tensor, targets: torch.Tensor, weights_tau: float | None, bg_const: float) -> dict[str, torch.Tensor]:
    """In-map activation range and, over the (image, present class) pairs:

    * ``map_min`` / ``map_max``: the smallest / largest activation of the batch;
    * ``present_max``: the mean over present pairs of the map's maximum (a seed needs it > 0);
    * ``empty_share``: the share of present pairs whose map has no positive value (an empty seed);
    * ``cm_ess``: for a mapping with spatial weights (``cm`` / ``mil``: ``weights_tau`` is tau1 / 1,
      ``Mapping.tau``; None for ``cam`` / ``mct``), the mean ESS / N of the Eq. 8 weights of present
      classes (1 = CAM's uniform average, small = a sharp, peaked mapping).
    """
    z = z.detach().float()
    present = targets > 0.5
    peak = z.flatten(2).amax(-1)  # B x C
    n = present.sum().clamp_min(1)
    out = {
        "map_min": z.min(),
        "map_max": z.max(),
        "present_max": (peak * present).sum() / n,
        "empty_share": ((peak <= 0) & present).sum() / n,
    }
    if weights_tau is not None:
        ess = effective_share(cm_weights(z, weights_tau, bg_const))
        out["cm_ess"] = (ess * present).sum() / n
    return out


@torch.no_grad()
def aa_agreement(z_student: torch.Tensor, z_teacher: torch.Tensor, tau2: float, bg_const: float) -> dict[str, torch.Tensor]:
    """How close the Eq. 9 distributions (softmax over C + background at temperature tau2) of student
    and teacher are: ``aa_agree``, the share of locations whose most likely channel is the same, and
    ``aa_kl``, KL(teacher || student) averaged over locations."""
    log_s = F.log_softmax(_with_background(z_student.detach().float(), bg_const) / tau2, dim=1)
    log_t = F.log_softmax(_with_background(z_teacher.detach().float(), bg_const) / tau2, dim=1)
    return {
        "aa_agree": (log_s.argmax(1) == log_t.argmax(1)).float().mean(),
        "aa_kl": (log_t.exp() * (log_t - log_s)).sum(1).mean(),
    }
