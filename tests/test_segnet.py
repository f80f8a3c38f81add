"""Joint transforms, the segmentation network and multi-scale inference fusion."""

from __future__ import annotations

import numpy as np
import pytest

from usage_cli.data.joint_transforms import MEAN_PIXEL, normalize, random_scale_crop_flip

COLOURS = np.array([[0, 0, 0], [250, 10, 10], [10, 250, 10], [10, 10, 250]], dtype=np.uint8)


def _block_image(h: int = 48, w: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise-constant image (8 px blocks) and the label map drawn from its colours."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, size=(h // 8, w // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    return COLOURS[label], label


def _label_from_colour(image: np.ndarray) -> np.ndarray:
    d = ((image[:, :, None, :].astype(int) - COLOURS[None, None].astype(int)) ** 2).sum(-1)
    return d.argmin(-1).astype(np.uint8)


def test_crop_padding_is_ignore_and_image_mean():
    img, lab = _block_image(24, 16)
    out_img, (out_lab,) = random_scale_crop_flip(
        img, [lab], crop=32, scale=(1.0, 1.0), flip=False, rng=np.random.default_rng(0)
    )
    assert out_img.shape == (32, 32, 3) and out_lab.shape == (32, 32)
    # the image sits at the top-left; everything right of / below it is padding
    assert (out_lab[24:, :] == 255).all() and (out_lab[:, 16:] == 255).all()
    assert (out_img[24:, :] == np.array(MEAN_PIXEL, dtype=np.uint8)).all()
    np.testing.assert_array_equal(out_lab[:24, :16], lab)
    np.testing.assert_array_equal(out_img[:24, :16], img)


@pytest.mark.parametrize("seed", range(6))
def test_label_stays_aligned_with_image(seed):
    img, lab = _block_image(seed=seed)
    rng = np.random.default_rng(seed)
    out_img, (out_lab, out_lab2) = random_scale_crop_flip(img, [lab, lab.copy()], crop=40, rng=rng)
    np.testing.assert_array_equal(out_lab, out_lab2)
    valid = out_lab != 255
    assert valid.any()
    assert set(np.unique(out_lab[valid])) <= set(np.unique(lab))
    # nearest-neighbour labels vs bilinear image: only block edges may disagree
    agree = (_label_from_colour(out_img) == out_lab)[valid].mean()
    assert agree > 0.9, agree


def test_unit_scale_is_an_exact_crop_or_its_mirror():
    img, lab = _block_image(seed=3)
    flipped = 0
    for seed in range(10):
        out_img, (out_lab,) = random_scale_crop_flip(
            img, [lab], crop=24, scale=(1.0, 1.0), rng=np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(_label_from_colour(out_img), out_lab)
        # the crop is a window of the original, possibly mirrored
        found = False
        for cand in (out_lab, out_lab[:, ::-1]):
            for y in range(lab.shape[0] - 23):
                for x in range(lab.shape[1] - 23):
                    if np.array_equal(lab[y:y + 24, x:x + 24], cand):
                        found = True
        assert found
        flipped += not np.array_equal(out_img, random_scale_crop_flip(
            img, [lab], crop=24, scale=(1.0, 1.0), flip=False, rng=np.random.default_rng(seed))[0])
    assert 0 < flipped < 10


def test_normalize_maps_mean_pixel_to_near_zero():
    img = np.broadcast_to(np.array(MEAN_PIXEL, dtype=np.uint8), (4, 5, 3))
    x = normalize(img)
    assert tuple(x.shape) == (3, 4, 5)
    assert float(x.abs().max()) < 0.01
