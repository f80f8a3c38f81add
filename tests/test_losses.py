"""USAGE losses: hand-derived values, float64 gradcheck, the limits the paper states."""

from __future__ import annotations

import math

import pytest
import torch

from usage_cli.losses.generation import (
    alpha_distribution,
    cam_scores,
    classification_loss,
    cm_scores,
    mil_scores,
)
from usage_cli.losses.regularization import (
    LearningStatus,
    aa_loss,
    adjustment_fraction,
    gt_loss,
    interpolate_rate,
    normalise_cam,
    oaa_loss,
    oaa_update,
)

LN3 = math.log(3.0)


def _z():
    return torch.tensor([[[[0.0, LN3]]]], dtype=torch.float64)  # B=1, C=1, 1x2 locations


def test_hand_derived_mapping_values():
    # alpha with a 0 background: 1/2 at the first location, 3/4 at the second
    a = alpha_distribution(_z())
    assert a[0, 0, 0].tolist() == pytest.approx([0.5, 0.75])
    assert cam_scores(_z()).item() == pytest.approx(LN3 / 2)
    assert mil_scores(_z()).item() == pytest.approx(0.6 * LN3)  # weights 0.4, 0.6
    assert cm_scores(_z(), 0.5).item() == pytest.approx(9 / 13 * LN3)  # weights (1/4, 9/16) normalised
    # a background constant of ln 3 gives alpha = 1/4 and 1/2: weights 1/3, 2/3
    assert cm_scores(_z(), 1.0, bg_const=LN3).item() == pytest.approx(2 / 3 * LN3)


def test_limits_stated_by_the_paper():
    torch.manual_seed(0)
    z = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    # tau1 -> infinity: the plain average of Eq. 3
    torch.testing.assert_close(cm_scores(z, 1e9), cam_scores(z))
    # tau1 = 1: Eq. 6 (MIL)
    torch.testing.assert_close(cm_scores(z, 1.0, 0.3), mil_scores(z, 0.3))
    # small tau1 sharpens towards the most activated location... of alpha
    sharp = cm_scores(z, 1e-4)
    log_alpha = torch.log_softmax(torch.cat([z, torch.zeros_like(z[:, :1])], 1), 1)[:, :-1].flatten(2)
    torch.testing.assert_close(sharp, z.flatten(2).gather(-1, log_alpha.argmax(-1, keepdim=True))[..., 0])


def test_alpha_sums_to_one_over_classes_and_background():
    z = torch.randn(2, 5, 4, 4) * 10
    a = alpha_distribution(z, bg_const=2.0)
    assert a.shape == (2, 6, 4, 4)
    torch.testing.assert_close(a.sum(1), torch.ones(2, 4, 4))


def test_gradcheck_float64():
    z = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: cm_scores(t, 0.7, 0.2), (z,))
    zt = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: aa_loss(t, zt, 0.1, 0.0), (z,))
    present = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: aa_loss(t, zt, 0.5, 0.0, present=present), (z,))


def test_aa_loss_hand_values_and_minimum():
    tau2 = 0.5
    zt = torch.tensor([[[[0.5 * LN3]]]])  # z_t / tau2 = ln 3 -> teacher target (3/4, 1/4)
    zs = torch.zeros(1, 1, 1, 1)
    assert aa_loss(zs, zt, tau2).item() == pytest.approx(0.25 * math.log(2))
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert aa_loss(zt.clone(), zt, tau2).item() == pytest.approx(0.25 * entropy, rel=1e-5)
    # the student equal to the teacher is a stationary point; no gradient reaches the teacher
    z = torch.randn(2, 3, 4, 4)
    zs, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    aa_loss(zs, zt, 0.1).backward()
    assert zs.grad.abs().max() < 1e-6 and zt.grad is None


def test_classification_loss_is_mean_bce():
    s = torch.tensor([[0.0, 2.0]])
    y = torch.tensor([[1.0, 0.0]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert classification_loss(s, y).item() == pytest.approx(expected)


def test_gt_and_oaa_helpers():
    z = torch.rand(1, 2, 4, 4)
    view = torch.nn.functional.interpolate(z, size=(2, 2), mode="bilinear", align_corners=False).flip(-1)
    assert gt_loss(z, view).item() == pytest.approx(0.0, abs=1e-6)
    assert gt_loss(z, view.flip(-1)).item() > 0.01
    acc = oaa_update(torch.zeros(1, 2, 4, 4), normalise_cam(z))
    assert acc.max().item() == pytest.approx(1.0, abs=1e-4)
    present = torch.tensor([[1.0, 0.0]])
    assert oaa_loss(z, acc, present) < oaa_loss(z, 1 - acc, present)


def test_learning_status_and_schedules():
    s = LearningStatus(4, momentum=0.999)
    assert s.value == 0.25 and s.fraction() == 0.0
    y = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    for _ in range(200):
        s.update(torch.tensor([[-9.0, 9.0, -9.0, -9.0]]), y)
    assert s.fraction() > 0.9  # confident and right: the gap has opened
    assert adjustment_fraction("fixed", 0.0, 0.0) == 1.0
    assert adjustment_fraction("linear", 0.9, 0.25) == 0.25
    assert adjustment_fraction("self-adaptive", 0.4, 0.9) == 0.4
    assert interpolate_rate(0.05, 0.15, 0.5) == pytest.approx(0.10)
    with pytest.raises(ValueError):
        adjustment_fraction("cosine", 0, 0)
