"""Dense CRF wrapper and the process-pool map."""

from __future__ import annotations

import numpy as np
import pytest

from usage_cli.algorithms.crf import crf_map, dense_crf
from usage_cli.errors import ConfigError

pytest.importorskip("pydensecrf")


def _edge_image(h: int = 40, w: int = 40, edge: int = 20) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, edge:] = 255
    return img


def _misaligned_probs(h: int = 40, w: int = 40, boundary: int = 26, p: float = 0.6) -> np.ndarray:
    probs = np.full((2, h, w), 1 - p, np.float32)
    probs[0, :, :boundary] = p
    probs[1, :, boundary:] = p
    return probs


def test_crf_moves_a_misaligned_boundary_to_the_colour_edge():
    img, probs = _edge_image(), _misaligned_probs()
    before = probs.argmax(0)
    after = dense_crf(img, probs).argmax(0)
    truth = np.zeros((40, 40), np.int64)
    truth[:, 20:] = 1
    assert (before != truth).sum() == 40 * 6  # the 6 columns between the edge and the boundary
    assert (after != truth).sum() == 0


def test_crf_returns_a_distribution_per_pixel():
    q = dense_crf(_edge_image(), _misaligned_probs() * 0.3)  # unnormalised input is fine
    assert q.shape == (2, 40, 40) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_crf_keeps_a_confident_uniform_map():
    img = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    probs = np.zeros((3, 24, 32), np.float32)
    probs[1] = 1.0
    assert (dense_crf(img, probs).argmax(0) == 1).all()


def test_crf_single_channel_is_returned_unchanged():
    probs = np.random.default_rng(1).random((1, 8, 9)).astype(np.float32)
    np.testing.assert_array_equal(dense_crf(_edge_image(8, 9, 4), probs), probs)


def test_crf_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="probs must be"):
        dense_crf(_edge_image(), np.ones((2, 10, 10), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(_edge_image().astype(np.float32), _misaligned_probs())


def _crf_label(item: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    image, probs = item
    return dense_crf(image, probs).argmax(0)


def test_crf_map_in_processes_matches_serial_and_keeps_order():
    items = [(_edge_image(edge=e), _misaligned_probs(boundary=e + 5)) for e in (10, 15, 20, 25)]
    serial = crf_map(_crf_label, items, workers=1)
    pooled = crf_map(_crf_label, items, workers=2)
    for e, a, b in zip((10, 15, 20, 25), serial, pooled, strict=True):
        np.testing.assert_array_equal(a, b)
        assert (a[:, :e] == 0).all() and (a[:, e:] == 1).all()


def test_crf_map_rejects_negative_workers():
    with pytest.raises(ConfigError, match="--workers"):
        crf_map(_crf_label, [], workers=-1)
