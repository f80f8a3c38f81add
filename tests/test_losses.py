"""USAGE losses: hand-derived values, float64 gradcheck, the limits the paper states."""

from __future__ import annotations

import math

import pytest
import torch

from usage_cli.losses.generation import (
    cam_scores,
    classification_loss,
    cm_scores,
    log_alpha,
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
    a = log_alpha(_z()).exp()
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
    a = log_alpha(z, bg_const=2.0).exp()
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


# ---------------------------------------------------------------- mixed precision (the GPU's path, on the CPU)


def _loss_cases():
    """Every loss on bfloat16 inputs, as the training autocast hands them over; name -> (fn, float inputs)."""
    from usage_cli.algorithms.affinity import (
        affinity_loss,
        pair_distance,
        pair_labels,
        search_offsets,
    )
    from usage_cli.models.mappings import get_mapping
    from usage_cli.tasks.segmentation import seg_loss

    g = torch.Generator().manual_seed(0)
    z, zt = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    acc = torch.rand(2, 3, 4, 4, generator=g)
    offsets = search_offsets(3)
    label = torch.randint(0, 3, (2, 4, 4), generator=g)
    label[0, 0] = 255
    feat = torch.randn(2, 8, 4, 4, generator=g)
    return {
        "classification (cm)": (lambda t: classification_loss(get_mapping("cm").scores(t, 1.0, 0.0), y), z),
        "classification (mil)": (lambda t: classification_loss(get_mapping("mil").scores(t, 1.0, 0.0), y), z),
        "classification (cam)": (lambda t: classification_loss(get_mapping("cam").scores(t, 1.0, 0.0), y), z),
        "aa": (lambda t: aa_loss(t, zt.to(t.dtype), 0.1, 0.0), z),
        "aa (present)": (lambda t: aa_loss(t, zt.to(t.dtype), 0.1, 0.0, present=y), z),
        "gt": (lambda t: gt_loss(t, torch.nn.functional.interpolate(t, size=(2, 2), mode="bilinear").flip(-1) + 0.1), z),
        "oaa": (lambda t: oaa_loss(t, acc, y), z),
        "affinity": (lambda t: affinity_loss(pair_distance(t, offsets), *pair_labels(label, offsets))["loss"], feat),
        "segmentation": (lambda t: seg_loss(t, label), z),
    }


@pytest.mark.parametrize("name", list(_loss_cases()))
def test_every_loss_runs_under_bf16_autocast_without_an_op_cuda_autocast_refuses(name):
    from conftest import refused_under_autocast

    fn, x = _loss_cases()[name]
    reference = fn(x.clone()).item()
    t = x.to(torch.bfloat16).requires_grad_(True)
    with refused_under_autocast() as guard, torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(t)
    assert guard.calls == [], f"{name} calls {guard.calls} inside autocast: CUDA autocast refuses it"
    loss.float().backward()
    assert torch.isfinite(loss.float()) and torch.isfinite(t.grad.float()).all()
    assert loss.float().item() == pytest.approx(reference, rel=0.05, abs=0.02)  # bfloat16 inputs: ~3 digits


def test_the_autocast_guard_sees_what_cuda_would_refuse():
    from conftest import refused_under_autocast

    p = torch.rand(4).requires_grad_(True)
    with refused_under_autocast() as guard, torch.autocast("cpu", dtype=torch.bfloat16):
        torch.nn.functional.binary_cross_entropy(p, torch.rand(4))  # what oaa_loss did before
        with torch.autocast("cpu", enabled=False):
            torch.nn.functional.binary_cross_entropy(p, torch.rand(4))  # outside autocast: allowed
    assert guard.calls == ["binary_cross_entropy"]


def test_learning_status_is_a_device_tensor_equal_to_the_host_rule():
    s = LearningStatus(4, momentum=0.9)
    expected, g = 0.25, torch.Generator().manual_seed(1)
    for step in range(30):
        scores, y = torch.randn(3, 4, generator=g), (torch.rand(3, 4, generator=g) > 0.6).float()
        s.update(scores, y)
        has = (y > 0.5).any(1)
        if has.any():
            mass = (torch.softmax(scores, 1) * (y > 0.5)).sum(1)[has].mean().item()
            m = min(0.9, (1 + step) / (10 + step))
            expected = m * expected + (1 - m) * mass
    assert torch.is_tensor(s._value) and s.value == pytest.approx(expected, rel=1e-6)
    s2 = LearningStatus(4)
    s2.load_state_dict(s.state_dict())
    assert s2.value == s.value and s2.steps == s.steps
