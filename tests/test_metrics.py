"""The confusion-matrix evaluator and the one-pass threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_cli.metrics.confusion import ConfusionMatrix, metrics_from_confusion
from usage_cli.metrics.sweep import (
    binned_counts,
    confusions_from_counts,
    fg_max_argmax,
    parse_thresholds,
    power_prediction,
)


def test_golden_values_hand_derived():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 1, 2, 0]), np.array([0, 0, 1, 1, 2, 2]))
    assert cm.mat.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    r = cm.compute()
    np.testing.assert_allclose(r["iou"], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(r["fpr"], [1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(r["fnr"], [1 / 3, 0, 1 / 2])
    assert r["miou"] == pytest.approx(0.5) and r["mfpr"] == pytest.approx(2 / 9) and r["mfnr"] == pytest.approx(5 / 18)


def test_absent_classes_are_excluded_and_ignore_is_skipped():
    mat = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 3]])
    r = metrics_from_confusion(mat)
    assert np.isnan(r["iou"][1])
    assert r["miou"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    cm = ConfusionMatrix(3)
    cm.update(np.array([1, 1, 2]), np.array([255, 255, 2]))
    assert cm.mat.sum() == 1


def test_predicted_ignore_is_a_miss_of_the_ground_truth_class():
    cm = ConfusionMatrix(2)
    cm.update(np.array([255, 1, 0]), np.array([1, 1, 0]))
    r = cm.compute()
    assert cm.pred_ignored.tolist() == [0, 1]
    np.testing.assert_allclose(r["iou"], [1.0, 0.5])
    np.testing.assert_allclose(r["fnr"], [0.0, 0.5])
    with pytest.raises(ValueError, match="predicted label 7"):
        cm.update(np.array([7]), np.array([1]))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(1, 200), st.integers(0, 2**31 - 1))
def test_properties_perfect_sum_to_one_order_free(n, size, seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, n, size)
    pred = rng.integers(0, n, size)
    perfect = ConfusionMatrix(n)
    perfect.update(gt, gt)
    r = perfect.compute()
    assert r["miou"] == 1.0 and r["mfpr"] == 0.0 and r["mfnr"] == 0.0
    a = ConfusionMatrix(n)
    a.update(pred, gt)
    r = a.compute()
    present = ~np.isnan(r["iou"])
    np.testing.assert_allclose((r["iou"] + r["fpr"] + r["fnr"])[present], 1.0)
    assert r["miou"] + r["mfpr"] + r["mfnr"] == pytest.approx(1.0)
    # split into two "images" in either order: same matrix
    b = ConfusionMatrix(n)
    k = size // 2
    b.update(pred[k:], gt[k:])
    b.update(pred[:k], gt[:k])
    assert (a.mat == b.mat).all()


def test_parse_thresholds():
    t = parse_thresholds("0.00:0.95:0.01")
    assert len(t) == 96 and t[0] == 0.0 and t[-1] == pytest.approx(0.95)
    assert parse_thresholds("0.3,0.1").tolist() == [0.1, 0.3]
    with pytest.raises(ValueError):
        parse_thresholds("0:2:0.5")


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_sweep_equals_direct_per_threshold_computation(n_keys, seed):
    rng = np.random.default_rng(seed)
    n, shape = 5, (6, 7)
    keys = np.sort(rng.choice(np.arange(1, n), n_keys, replace=False))
    cam = rng.random((n_keys, *shape)).astype(np.float16)
    cam[:, 0, 0] = 0.5  # exact ties with a threshold: background wins
    gt = rng.integers(0, n, shape).astype(np.uint8)
    gt[0, 1] = 255
    thr = parse_thresholds("0.0:0.9:0.1")
    m, a = fg_max_argmax(cam, keys, shape)
    mats = confusions_from_counts(binned_counts(m, a, gt, thr, n))
    for i, t in enumerate(thr):
        full = np.concatenate([np.full((1, *shape), t, np.float32), cam.astype(np.float32)])
        pred = np.concatenate([[0], keys])[full.argmax(0)]
        cm = ConfusionMatrix(n)
        cm.update(pred, gt)
        assert (mats[i] == cm.mat).all()


def test_power_background():
    m = np.array([0.9, 0.3, 0.6])
    a = np.array([2, 3, 4])
    # (1-m)^1: 0.1, 0.7, 0.4 -> fg, bg, fg
    assert power_prediction(m, a, 1.0).tolist() == [2, 0, 4]


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_uint8_fast_path_equals_the_general_path(n, seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, n, 300).astype(np.uint8)
    pred = rng.integers(0, n, 300).astype(np.uint8)
    gt[rng.random(300) < 0.1] = 255
    pred[rng.random(300) < 0.1] = 255
    fast, slow = ConfusionMatrix(n), ConfusionMatrix(n)
    fast.update(pred, gt)
    slow.update(pred.astype(np.int64), gt.astype(np.int64))
    assert (fast.mat == slow.mat).all() and (fast.pred_ignored == slow.pred_ignored).all()


def test_uint8_fast_path_range_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="predicted label 9 outside 0..2"):
        cm.update(np.array([9], np.uint8), np.array([1], np.uint8))
    with pytest.raises(ValueError, match="ground-truth label 4 outside 0..2"):
        cm.update(np.array([1], np.uint8), np.array([4], np.uint8))
