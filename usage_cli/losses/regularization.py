"""Regularisation loss of USAGE (Eq. 9) and the Table 8 baselines, plus the adjustment schedules."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from usage_cli.losses.generation import _with_background


def aa_loss(
    z_student: torch.Tensor,
    z_teacher: torch.Tensor,
    tau2: float = 0.1,
    bg_const: float = 0.0,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 9 as temperature distillation between spatial activation distributions.

    1. both maps get the constant background channel (C + 1 channels);
    2. teacher target softmax(z_t / tau2), no gradient; student log_softmax(z_s / tau2);
    3. cross-entropy over channels, averaged over locations and images, scaled by tau2^2.
    With ``present`` (B x C, 0/1) only the image's classes + background take part.
    """
    zs, zt = _with_background(z_student, bg_const), _with_background(z_teacher.detach(), bg_const)  # 1.
    if present is not None:
        keep = torch.cat([present.bool(), present.new_ones(present.shape[0], 1).bool()], dim=1)[..., None, None]
        zs = zs.masked_fill(~keep, float("-inf"))
        zt = zt.masked_fill(~keep, float("-inf"))
    target = F.softmax(zt / tau2, dim=1)  # 2.
    log_p = F.log_softmax(zs / tau2, dim=1)
    ce = -(target * log_p.masked_fill(target == 0, 0.0)).sum(dim=1)  # 3.
    return tau2**2 * ce.mean()


def normalise_cam(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU and divide each map by its maximum: values in [0, 1]."""
    z = F.relu(z)
    return z / (z.flatten(2).max(-1).values[..., None, None] + eps)


def gt_loss(z: torch.Tensor, z_view: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """SEAM-style equivariance: CAMs of an image, transformed like the view (resize + flip), should
    equal the CAMs of the view. L1 between the normalised maps."""
    aligned = F.interpolate(z, size=z_view.shape[-2:], mode="bilinear", align_corners=False)
    if flip:
        aligned = aligned.flip(-1)
    return (normalise_cam(aligned) - normalise_cam(z_view)).abs().mean()


def oaa_update(accumulated: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Online attention accumulation (Jiang et al. 2019): element-wise max of the running map and the
    current normalised map."""
    return torch.maximum(accumulated, cam)


def _full(t: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 (autocast outputs) as float32; other dtypes (float64 in gradcheck) as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def oaa_loss(z: torch.Tensor, accumulated: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Pull the present classes' normalised maps towards the accumulated attention (BCE, as OAA+).

    Computed in float32 outside autocast: CUDA autocast refuses ``binary_cross_entropy`` (it is
    unsafe in float16), while the CPU's allows it."""
    with torch.autocast(z.device.type, enabled=False):
        cam = normalise_cam(_full(z)).clamp(1e-5, 1 - 1e-5)
        bce = F.binary_cross_entropy(cam, _full(accumulated.detach()).to(cam.dtype).clamp(0, 1), reduction="none").mean((2, 3))
        mask = present.to(bce.dtype)
        return (bce * mask).sum() / mask.sum().clamp_min(1.0)


class LearningStatus:
    """FreeMatch-style learning status, starting at 1/C.

    FreeMatch tracks the EMA of the mean maximum softmax confidence, whose chance level is 1/C. The
    multi-label analogue used here: per image, the softmax mass over classes that falls on the
    positive classes (1/C for an untrained single-label image, 1 for a perfect one), averaged over
    the batch. Sigmoid scores would start at 0.5 whatever the network knows. The momentum warms up
    as min(m, (1+t)/(10+t)) so that short runs move too.

    The status stays a tensor on the scores' device, so an update costs no host sync; under torchrun
    the batch mean is over every rank's images (one all-reduce), so all ranks hold the same status.
    Reading :attr:`value` or :meth:`fraction` copies it to the host.
    """

    def __init__(self, num_classes: int, momentum: float = 0.999, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """``reduce`` sums a tensor over the processes (the task passes the all-reduce under DDP)."""
        self.reduce = reduce or (lambda t: t)
        self._value = torch.tensor(1.0 / num_classes, dtype=torch.float64)
        self.momentum = momentum
        self.steps = 0
        self.num_classes = num_classes

    @property
    def value(self) -> float:
        return float(self._value)

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        # 1. per image, the softmax mass on its positive classes; images without one do not count
        pos = targets > 0.5
        has = pos.any(dim=1)
        mass = (torch.softmax(scores.detach().float(), dim=1) * pos).sum(1)
        # 2. sum and count over the batch (and over the ranks), 3. the EMA where anything was counted
        stats = self.reduce(torch.stack([(mass * has).sum(), has.sum().to(mass.dtype)]))
        m = min(self.momentum, (1 + self.steps) / (10 + self.steps))
        value = self._value.to(stats.device)
        mean = (stats[0] / stats[1].clamp_min(1)).double()
        self._value = torch.where(stats[1] > 0, m * value + (1 - m) * mean, value)
        self.steps += 1

    def fraction(self) -> float:
        """f(status) in [0, 1]: 0 at chance level 1/C, 1 at a perfect score."""
        c = 1.0 / self.num_classes
        return float(min(max((self.value - c) / (1 - c), 0.0), 1.0))

    def state_dict(self) -> dict:
        return {"value": self.value, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self._value = torch.tensor(float(state["value"]), dtype=torch.float64, device=self._value.device)
        self.steps = int(state["steps"])


def adjustment_fraction(schedule: str, status_fraction: float, progress: float) -> float:
    """How far the student's rates have moved from start to end (Table 7 strategies)."""
    if schedule == "fixed":
        return 1.0
    if schedule == "linear":
        return float(min(max(progress, 0.0), 1.0))
    if schedule == "self-adaptive":
        return status_fraction
    raise ValueError(f"unknown adjustment schedule {schedule!r}")


def interpolate_rate(start: float, end: float, fraction: float) -> float:
    return start + (end - start) * fraction
