"""algorithms/psa_refine.py: PSA's per-image walk as pure functions (no files, no stage config).

The masks of `usage refine-psa` were checked byte for byte against the walk's earlier home in the
stage; these tests pin its contract on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from usage_cli.algorithms.psa_refine import WalkSettings, refine_image, rescale_walked, seed_scores

CONST = WalkSettings(radius=2, beta=8.0, logt=3, bg_mode="const", bg_power=16.0, bg_const=0.39)
POWER = WalkSettings(radius=2, beta=8.0, logt=3, bg_mode="power", bg_power=16.0, bg_const=0.39)
STRIDE = 4


def _flat_features(x: torch.Tensor) -> torch.Tensor:
    """Every cell alike: all affinities 1, so the walk only averages."""
    return torch.zeros(1, 8, x.shape[2] // STRIDE, x.shape[3] // STRIDE)


def _padded(h: int, w: int, multiple: int = 8) -> torch.Tensor:
    return torch.zeros(1, 3, -(-h // multiple) * multiple, -(-w // multiple) * multiple)


def test_seed_scores_put_background_first():
    cams = np.stack([np.full((3, 4), 0.5, np.float32), np.zeros((3, 4), np.float32)])
    s = seed_scores(cams, POWER)
    assert s.shape == (3, 3, 4) and torch.allclose(s[0], torch.full((3, 4), 0.5**16))
    assert torch.equal(seed_scores(cams, CONST)[0], torch.full((3, 4), 0.39))
    assert torch.equal(s[1:], torch.from_numpy(cams))


def test_no_present_class_is_all_background():
    out = refine_image(_flat_features, _padded(13, 21), np.zeros((0, 13, 21), np.float32), [], CONST, STRIDE)
    assert out.shape == (13, 21) and out.dtype == np.uint8 and not out.any()


@pytest.mark.parametrize("settings", [CONST, POWER], ids=["const", "power"])
def test_a_constant_seed_is_a_fixed_point_of_the_walk(settings):
    """A class scoring 0.9 everywhere beats either background everywhere, padding included."""
    cams = np.full((1, 13, 21), 0.9, np.float32)
    out = refine_image(_flat_features, _padded(13, 21), cams, [7], settings, STRIDE)
    assert out.shape == (13, 21) and (out == 7).all()


def test_labels_are_the_keys_or_background():
    rng = np.random.default_rng(0)
    cams = rng.random((2, 16, 24)).astype(np.float32)
    out = refine_image(lambda x: torch.randn(1, 8, x.shape[2] // STRIDE, x.shape[3] // STRIDE, generator=torch.Generator().manual_seed(0)),
                       _padded(16, 24), cams, [3, 12], CONST, STRIDE)  # fmt: skip
    assert out.shape == (16, 24) and set(np.unique(out)) <= {0, 3, 12}


def test_rescaling_the_walked_scores_leaves_the_background_as_walked():
    rw = torch.stack([torch.full((3, 4), 0.3), torch.linspace(0, 0.5, 12).view(3, 4), torch.linspace(0, 0.25, 12).view(3, 4)])[None]
    assert torch.equal(rescale_walked(rw, "none"), rw)
    per_class = rescale_walked(rw, "class-max")
    assert torch.equal(per_class[0, 0], rw[0, 0]) and torch.allclose(per_class[0, 1:].amax(dim=(1, 2)), torch.ones(2))
    joint = rescale_walked(rw, "max")  # IRN: one maximum for all classes, their ratio kept
    assert torch.equal(joint[0, 0], rw[0, 0]) and torch.isclose(joint[0, 1:].max(), torch.tensor(1.0))
    assert torch.allclose(joint[0, 2], joint[0, 1] / 2)
    # a walked class that stays zero is not divided by zero
    assert torch.isfinite(rescale_walked(torch.zeros(1, 2, 3, 4), "class-max")).all()


def test_a_peak_shrinks_in_the_walk_unless_rescaled():
    """The walk averages a peaked class map down while a constant background keeps its value: as walked,
    the peak can fall below a background it beat before the walk; rescaled to its maximum, it cannot."""
    cams = np.zeros((1, 16, 16), np.float32)
    cams[0, 6:10, 6:10] = 1.0
    s = WalkSettings(radius=2, beta=8.0, logt=4, bg_mode="const", bg_power=16.0, bg_const=0.6)
    walked = refine_image(_flat_features, _padded(16, 16), cams, [5], s, STRIDE)
    kept = refine_image(_flat_features, _padded(16, 16), cams, [5], WalkSettings(**{**s.__dict__, "norm": "class-max"}), STRIDE)
    assert not (walked == 5).any() and (kept == 5).any()
