"""The no-ground-truth thresholds of the seeds (algorithms/thresholds.py): hand-derived values."""

from __future__ import annotations

import numpy as np
import pytest

from usage_cli.algorithms.thresholds import (
    BINS,
    fg_histogram,
    hist_mean,
    otsu,
    threshold_from_histogram,
)


def test_histogram_of_the_per_pixel_maximum():
    cam = np.array([[[0.0, 0.25], [0.75, 1.0]], [[0.5, 0.125], [0.375, 0.0]]], np.float16)
    h = fg_histogram(cam)
    # per-pixel max: 0.5, 0.25, 0.75, 1.0 -> bins 50, 25, 75, 99 (1.0 joins the last bin)
    assert h.sum() == 4 and h[50] == h[25] == h[75] == h[99] == 1
    assert fg_histogram(np.zeros((0, 2, 2), np.float16)).sum() == 0  # an image without labelled classes adds nothing


def test_otsu_cuts_between_two_modes():
    hist = np.zeros(BINS)
    hist[5:15] = 100  # background: values 0.05 - 0.15
    hist[60:80] = 30  # objects: values 0.60 - 0.80
    t = otsu(hist)
    assert 0.15 <= t <= 0.60
    # the cut moves with the modes, not with a constant
    shifted = np.roll(hist, 10)
    assert otsu(shifted) == pytest.approx(t + 0.10)


def test_otsu_golden_two_bins():
    hist = np.zeros(BINS)
    hist[10], hist[70] = 3, 1  # values 0.105 and 0.705: every cut between them separates them exactly
    assert otsu(hist) == pytest.approx(0.11)  # the first (lowest) of the equally good cuts: just above the low mode


def test_mean_fixed_and_errors():
    hist = np.zeros(BINS)
    hist[10], hist[30] = 1, 1
    assert hist_mean(hist) == pytest.approx((0.105 + 0.305) / 2)
    assert threshold_from_histogram(hist, 0.39) == 0.39
    with pytest.raises(ValueError, match="unknown threshold rule"):
        threshold_from_histogram(hist, "median")
    with pytest.raises(ValueError, match="lie in"):
        threshold_from_histogram(hist, 1.5)
    with pytest.raises(ValueError, match="empty"):
        otsu(np.zeros(BINS))


def test_power_for_cut_and_the_auto_constants():
    from usage_cli.algorithms.thresholds import power_for_cut, psa_constants

    # PSA's powers cut where (1 - m)^alpha = m: 4 -> 0.276, 32 -> 0.077, 16 -> 0.123
    for alpha, cut in ((4, 0.2755), (32, 0.077), (16, 0.123)):
        assert power_for_cut(cut) == pytest.approx(alpha, rel=0.01)
    for t in (0.05, 0.3, 0.5, 0.8):
        assert (1 - t) ** power_for_cut(t) == pytest.approx(t)
    c = psa_constants(0.3, fg=1.5, bg=0.5)  # foreground above 0.45, background below 0.15, walk at 0.3
    assert c["bg_const"] == 0.3 and c["crf_la"] == pytest.approx(power_for_cut(0.45), abs=1e-4) and c["crf_ha"] == pytest.approx(power_for_cut(0.15), abs=1e-4)
    assert c["crf_la"] < c["crf_ha"]  # the low power (strong background) is the confident-foreground one
    assert psa_constants(0.9, fg=1.5, bg=0.5)["crf_la"] == pytest.approx(power_for_cut(0.95), abs=1e-4)  # cuts stay inside (0, 1)
