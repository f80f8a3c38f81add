"""Random walk (dense and local), pair affinities, pair labels, confident labels, balanced loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_cli.algorithms.affinity import (
    affinity_loss,
    background_power,
    confident_label,
    confident_label_for_image,
    pair_affinity,
    pair_labels,
    search_offsets,
    with_background,
)
from usage_cli.algorithms.random_walk import (
    affinity_matrix,
    local_random_walk,
    local_weights,
    random_walk,
    shift,
    transition_matrix,
    walk,
)


def _random_pair(b: int, h: int, w: int, radius: int, seed: int) -> tuple[torch.Tensor, list]:
    offsets = search_offsets(radius)
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(b, 4, h, w, generator=g, dtype=torch.float64)
    return pair_affinity(feat, offsets), offsets


def test_search_offsets_match_psa_count_and_half_plane():
    offs = search_offsets(5)
    assert len(offs) == 34
    assert offs[:4] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert all(dy > 0 or (dy == 0 and dx > 0) for dy, dx in offs)
    assert all(dy * dy + dx * dx < 25 for dy, dx in offs)
    assert len(search_offsets(2)) == 1 + 3  # (0,1) and (1,-1),(1,0),(1,1)


def test_shift_moves_values_and_fills():
    x = torch.arange(6.0).view(2, 3)
    assert shift(x, 0, 1, fill=-1).tolist() == [[1, 2, -1], [4, 5, -1]]
    assert shift(x, 1, -1, fill=-1).tolist() == [[-1, 3, 4], [-1, -1, -1]]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    beta=st.floats(0.5, 10.0),
    seed=st.integers(0, 10_000),
)
def test_transition_columns_sum_to_one(n, beta, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, n, generator=g, dtype=torch.float64)
    a = (a + a.T) / 2
    a.fill_diagonal_(1.0)
    t = transition_matrix(a, beta)
    torch.testing.assert_close(t.sum(0), torch.ones(n, dtype=torch.float64))
    assert (t >= 0).all()


@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), radius=st.integers(2, 4), seed=st.integers(0, 1000))
def test_local_weights_are_the_dense_columns(h, w, radius, seed):
    pair, offs = _random_pair(1, h, w, radius, seed)
    wts = local_weights(pair, offs, beta=3.0)
    torch.testing.assert_close(wts.sum(1), torch.ones(1, h, w, dtype=torch.float64))
    dense = transition_matrix(affinity_matrix(pair, offs), 3.0)
    torch.testing.assert_close(dense.sum(1), torch.ones(1, h * w, dtype=torch.float64))


def test_affinity_matrix_is_symmetric_with_unit_diagonal_and_radius_support():
    pair, offs = _random_pair(2, 5, 7, 3, 0)
    a = affinity_matrix(pair, offs)
    torch.testing.assert_close(a, a.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(a, dim1=1, dim2=2), torch.ones(2, 35, dtype=torch.float64))
    ys, xs = np.divmod(np.arange(35), 7)
    far = (ys[:, None] - ys[None]) ** 2 + (xs[:, None] - xs[None]) ** 2 >= 9
    assert (a[:, torch.from_numpy(far)] == 0).all()
    assert (a[:, torch.from_numpy(~far)] > 0).all()


def test_constant_map_is_a_fixed_point_of_the_walk():
    pair, offs = _random_pair(2, 6, 5, 4, 1)
    seeds = torch.full((2, 3, 6, 5), 0.7, dtype=torch.float64)
    for method in ("dense", "local"):
        out = walk(seeds, pair, offs, beta=8, logt=4, method=method).double()
        torch.testing.assert_close(out, seeds, atol=1e-5, rtol=0)


def test_identity_affinities_leave_the_seed_unchanged():
    offs = search_offsets(4)
    pair = torch.zeros(1, len(offs), 5, 6)
    seeds = torch.rand(1, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    trans = transition_matrix(torch.eye(30), 8)
    torch.testing.assert_close(random_walk(seeds.view(1, 4, 30), trans, 6).view(1, 4, 5, 6), seeds)
    for method in ("dense", "local"):
        torch.testing.assert_close(walk(seeds, pair, offs, 8, 6, method=method), seeds)


def test_local_walk_equals_dense_squaring():
    pair, offs = _random_pair(2, 7, 6, 5, 2)
    seeds = torch.rand(2, 3, 7, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dense = walk(seeds.double(), pair, offs, 2.0, 3, method="dense")
    trans = transition_matrix(affinity_matrix(pair, offs), 2.0)
    steps = seeds.view(2, 3, 42)
    for _ in range(8):  # 2**3 single steps
        steps = steps @ trans
    local = local_random_walk(seeds, local_weights(pair, offs, 2.0), 8)
    torch.testing.assert_close(dense.double(), steps.view(2, 3, 7, 6), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(local, steps.view(2, 3, 7, 6))


def test_walk_spreads_a_seed_inside_its_region_not_across_an_edge():
    # two regions (left 4 columns, right 4 columns) with features far apart
    feat = torch.zeros(1, 2, 6, 8)
    feat[:, :, :, 4:] = 10.0
    offs = search_offsets(3)
    pair = pair_affinity(feat, offs)
    seeds = torch.zeros(1, 2, 6, 8)
    seeds[0, 0, 2, 1] = 1.0  # class 0 seeded once on the left
    seeds[0, 1, 3, 6] = 1.0  # class 1 seeded once on the right
    out = walk(seeds, pair, offs, beta=8, logt=6, method="local")
    label = out.argmax(1)[0]
    assert (label[:, :4] == 0).all() and (label[:, 4:] == 1).all()


def test_pair_affinity_values_and_off_grid_zeros():
    feat = torch.zeros(1, 2, 1, 3)
    feat[0, :, 0, 1] = torch.tensor([1.0, 3.0])  # mean |diff| to neighbours: 2
    aff = pair_affinity(feat, [(0, 1), (0, 2)])
    expected_01 = [math.exp(-2), math.exp(-2), 0.0]  # (0,1): pixel 2 has no right partner
    expected_02 = [1.0, 0.0, 0.0]
    torch.testing.assert_close(aff[0, :, 0], torch.tensor([expected_01, expected_02]))


def test_pair_labels_kinds():
    label = torch.tensor([[[0, 0, 3, 255]]])
    bg, fg, neg = pair_labels(label, [(0, 1)])
    assert bg[0, 0, 0].tolist() == [1, 0, 0, 0]
    assert fg[0, 0, 0].tolist() == [0, 0, 0, 0]
    assert neg[0, 0, 0].tolist() == [0, 1, 0, 0]  # 0-3 differ; 3-255 ignored; last has no partner
    label = torch.tensor([[[3, 3], [3, 0]]])
    bg, fg, neg = pair_labels(label, [(1, 0)])
    assert fg[0, 0].tolist() == [[1, 0], [0, 0]] and neg[0, 0].tolist() == [[0, 1], [0, 0]]
    assert bg.sum() == 0


def test_balanced_loss_golden_values():
    # pair 0 background-positive at distance 1 (a = e^-1) -> 1; pair 1 foreground-positive at
    # distance 2 -> 2; pairs 2, 3 negative with 1 - a = e^-3 and e^-1 -> -log(1 - a) = 3 and 1,
    # mean 2; total 1/4 + 2/4 + 2/2 = 1.75
    dist = torch.tensor([1.0, 2.0, -math.log(1 - math.exp(-3)), -math.log(1 - math.exp(-1))], dtype=torch.float64)
    bg = torch.tensor([1.0, 0, 0, 0])
    fg = torch.tensor([0, 1.0, 0, 0])
    neg = torch.tensor([0, 0, 1.0, 1.0])
    out = affinity_loss(dist, bg, fg, neg)
    assert out["bg_loss"].item() == pytest.approx(1.0, abs=1e-4)
    assert out["fg_loss"].item() == pytest.approx(2.0, abs=1e-4)
    assert out["neg_loss"].item() == pytest.approx(2.0, abs=1e-3)
    assert out["loss"].item() == pytest.approx(1.75, abs=1e-3)
    empty = affinity_loss(dist, bg * 0, fg * 0, neg * 0)["loss"]
    assert empty.item() == 0.0


def test_balanced_loss_matches_psa_form_and_keeps_gradients_of_far_pairs():
    # PSA: -log(a + 1e-5) for positives; equal to the distance while a >> 1e-5
    dist = torch.tensor([0.5, 3.0, 20.0], dtype=torch.float64, requires_grad=True)
    fg = torch.tensor([1.0, 1.0, 1.0])
    zero = torch.zeros(3)
    out = affinity_loss(dist, zero, fg, zero)
    psa = (-torch.log(torch.exp(-dist[:2]) + 1e-5)).sum() / 2
    assert affinity_loss(dist[:2], zero[:2], fg[:2], zero[:2])["fg_loss"].item() == pytest.approx(psa.item(), rel=1e-3)
    out["loss"].backward()
    assert dist.grad[2].item() == pytest.approx(0.25 / 3, rel=1e-4)  # PSA's form: ~0 at a = e^-20


def test_background_power_and_stack():
    cams = np.array([[[0.5, 0.1]], [[0.2, 0.9]]], np.float32)
    np.testing.assert_allclose(background_power(cams, 2), [[0.25, 0.01]], rtol=1e-5)
    np.testing.assert_array_equal(background_power(cams[:0], 4), [[1, 1]])
    stacked = with_background(cams, 0.39)
    assert stacked.shape == (3, 1, 2)
    np.testing.assert_allclose(stacked[0], [[0.39, 0.39]], rtol=1e-6)
    np.testing.assert_array_equal(stacked[1:], cams)


def test_confident_label_band_without_crf():
    # one class (label value 7), seed values 0.5 / 0.1 / 0.01:
    #   la=4: bg = 0.5^4 = .0625 < .5 -> fg;  .9^4 = .656 > .1 -> not fg
    #   ha=32: .9^32 = .034 < .1 -> not bg (band, 255);  .99^32 = .725 > .01 -> bg
    cams = np.array([[[0.5, 0.1, 0.01]]], np.float32)
    label = confident_label_for_image(np.zeros((1, 3, 3), np.uint8), cams, [7], la=4, ha=32, crf=None)
    assert label.tolist() == [[7, 255, 0]]


def test_confident_label_background_from_ha_wins():
    la = np.array([[[0.1]], [[0.9]]])  # la: foreground
    ha = np.array([[[0.8]], [[0.2]]])  # ha: background
    assert confident_label(la, ha, [4]).tolist() == [[0]]


def test_confident_label_with_crf_follows_the_colour_edge():
    pytest.importorskip("pydensecrf")
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 255
    cams = np.zeros((1, 32, 32), np.float32)
    cams[0, :, 12:] = 0.6  # seed spills 4 columns past the edge into the black half
    label = confident_label_for_image(img, cams, [2], la=1, ha=12, crf={})
    assert (label[:, 16:] == 2).all()
    assert (label[:, :12] == 0).all()
