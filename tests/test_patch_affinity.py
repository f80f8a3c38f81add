"""MCTformer's patch affinity without forming whole attention: gen-seeds' maps, by either pass
(``single``: the affinity summed in the forward from blocks of query rows; ``recompute``: the fused
kernel with the maps as values), equal the explicit computation they replaced
(``bench/explicit_affinity.py``: each layer's attention weights formed, the head-mean patch blocks
summed, times the maps); recompute never makes a T x T tensor, single never a layer's whole attention."""

from __future__ import annotations

import pytest
import torch
from bench_module import load_bench
from torch.utils._python_dispatch import TorchDispatchMode

from usage_cli.algorithms import cam_infer
from usage_cli.algorithms.cam_infer import CamInference, affinity_pass, views_to_maps
from usage_cli.algorithms.fuse import refine_with_affinity, refine_with_attention
from usage_cli.errors import ConfigError
from usage_cli.models import vit
from usage_cli.models.classifier import build_classifier

ref = load_bench("explicit_affinity")


def _softmax(q, k, scale):
    return ((q * scale) @ k.transpose(-2, -1)).softmax(-1)


def test_uniform_attention_spreads_every_map_evenly():
    # q = 0: every query attends to all T tokens with weight 1/T; the prefix tokens carry no map, so
    # each patch receives (sum of the map over the patches) / T from every layer
    B, heads, d, prefix, h, w = 2, 3, 8, 2, 3, 4
    T = prefix + h * w
    cams = torch.rand(B, 5, h, w)
    qk = [(torch.zeros(B, heads, T, d), torch.randn(B, heads, T, d), 0.5) for _ in range(3)]
    expected = 3 * cams.sum((2, 3), keepdim=True).expand(-1, -1, h, w) / T
    torch.testing.assert_close(refine_with_attention(qk, cams, prefix), expected)


def test_attention_to_oneself_keeps_the_maps():
    # keys equal to queries far apart: each token attends (almost) only to itself, so every layer
    # gives the maps back
    B, heads, prefix, h, w = 1, 2, 1, 2, 3
    T = prefix + h * w
    q = 40.0 * torch.eye(T).expand(B, heads, T, T)  # d = T: one direction per token
    cams = torch.rand(B, 4, h, w)
    torch.testing.assert_close(refine_with_attention([(q, q, 1.0)] * 2, cams, prefix), 2 * cams)


@pytest.mark.parametrize("classes", [5, 19])  # 19 > the head width 8: values in two slices
@pytest.mark.parametrize("prefix", [1, 5])
def test_the_product_equals_the_explicit_affinity_times_the_maps(classes, prefix):
    torch.manual_seed(0)
    B, heads, d, h, w = 2, 3, 8, 4, 5
    T = prefix + h * w
    qk = [(2 * torch.randn(B, heads, T, d), 2 * torch.randn(B, heads, T, d), d**-0.5) for _ in range(4)]
    cams = torch.randn(B, classes, h, w).relu()
    affinity = ref.patch_affinity([_softmax(q, k, s) for q, k, s in qk], prefix, layers=4)
    expected = ref.refine_with_affinity(cams, affinity)
    assert (refine_with_attention(qk, cams, prefix) - expected).abs().max() < 1e-5


def _sharp_classifier(mapping: str, classes: int = 5):
    """A random DeiT-Ti classifier whose attention is far from uniform (its query/key weights x6)."""
    torch.manual_seed(0)
    net = build_classifier({"backbone": "deit_t", "num_classes": classes, "mapping": mapping, "img_size": 64}).eval()
    with torch.no_grad():
        for blk in net.backbone.model.blocks:
            blk.attn.qkv.weight[: 2 * blk.attn.qkv.out_features // 3].mul_(6)
    return net


CASES = [("cm", "cam"), ("mct", "cam"), ("mct", "attn")]  # prefix tokens 1, and C = 5 class tokens


PASSES = ["single", "recompute"]


@pytest.fixture
def small_rows(monkeypatch):
    """The single pass forms 8 query rows at a time: the tests' 6-49 token views take several blocks,
    the last one partial, and one that straddles the prefix tokens (C = 5 class tokens)."""
    monkeypatch.setattr(vit, "ROWS", 8)


@pytest.mark.parametrize("way", PASSES)
@pytest.mark.parametrize("layers", [1, 12])
@pytest.mark.parametrize(("mapping", "source"), CASES)
def test_seed_maps_equal_the_explicit_computation(mapping, source, layers, way, small_rows):
    net = _sharp_classifier(mapping)
    opts = CamInference(refine="patch-affinity", source=source, affinity_layers=layers, affinity_pass=way)
    with torch.no_grad():
        for size in [(32, 48), (64, 64), (80, 48), (96, 128)]:
            x = torch.randn(2, 3, *size)
            new, old = cam_infer._forward_maps(net, x, opts), ref.explicit_forward_maps(net, x, opts)
            diff, top = (new - old).abs().max(), old.abs().max()
            assert top > 0.01 and diff < 1e-4 and diff < 1e-4 * top, (size, diff, top)  # also relative: the attn maps are small


@pytest.mark.parametrize("way", PASSES)
def test_fused_maps_of_every_view_equal_the_explicit_computation(monkeypatch, way, small_rows):
    net = _sharp_classifier("mct")
    images = torch.randint(0, 256, (2, 48, 64, 3), dtype=torch.uint8)
    opts = CamInference(scales=(1.0, 0.5, 1.5), flip=True, refine="patch-affinity", source="attn", affinity_layers=12, normalise="minmax",
                        affinity_pass=way)  # fmt: skip
    new = views_to_maps(net, images, opts)
    monkeypatch.setattr(cam_infer, "_forward_maps", ref.explicit_forward_maps)
    old = views_to_maps(net, images, opts)
    for a, b in zip(new, old, strict=True):
        assert (a - b).abs().max() < 1e-4


class _Shapes(TorchDispatchMode):
    """Every tensor an operator returns: its shape."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in (out if isinstance(out, tuple | list) else [out]) if isinstance(t, torch.Tensor)]
        return out


@pytest.mark.parametrize(("mapping", "source"), CASES)
def test_no_token_by_token_matrix_is_ever_formed_by_recompute(mapping, source):
    net = _sharp_classifier(mapping)
    x = torch.randn(1, 3, 64, 96)  # 24 patches
    prefix = net.backbone.num_prefix_tokens
    sizes = {24, 24 + prefix}  # N and T

    def square(shapes):
        return [s for s in shapes if len(s) >= 2 and s[-1] in sizes and s[-2] in sizes]

    opts = CamInference(refine="patch-affinity", source=source, affinity_layers=12, affinity_pass="recompute")
    with torch.no_grad(), _Shapes() as seen:
        cam_infer._forward_maps(net, x, opts)
    assert not square(seen.shapes)
    with torch.no_grad(), _Shapes() as seen:  # the check sees the explicit computation's matrices
        ref.explicit_forward_maps(net, x, opts)
    assert square(seen.shapes)


@pytest.mark.parametrize(("mapping", "source"), CASES)
def test_the_single_pass_forms_blocks_of_query_rows_and_one_affinity(mapping, source, small_rows):
    net = _sharp_classifier(mapping)
    x = torch.randn(1, 3, 64, 96)  # 24 patches
    T = 24 + net.backbone.num_prefix_tokens
    opts = CamInference(refine="patch-affinity", source=source, affinity_layers=12, affinity_pass="single")
    with torch.no_grad(), _Shapes() as seen:
        cam_infer._forward_maps(net, x, opts)
    # attention weights only in blocks of at most 8 query rows (B x heads x rows x T), never T x T
    assert (1, 3, 8, T) in seen.shapes and not [s for s in seen.shapes if len(s) == 4 and s[-2:] == (T, T)]
    assert (1, 24, 24) in seen.shapes  # the one affinity of the view


def test_the_summed_affinity_is_the_head_mean_patch_block_of_the_last_layers(small_rows):
    net = _sharp_classifier("mct")  # 5 class tokens
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        _, attn = ref.explicit_vit_forward(net.backbone.model, x, 12)
        for layers in (1, 3, 12):
            expected = ref.patch_affinity(attn, 5, layers=layers)
            assert (net(x, affinity=layers)["affinity"] - expected).abs().max() < 1e-5, layers
    # the product: a patch that attends only to its right neighbour takes that neighbour's map
    cams = torch.rand(2, 4, 3, 5)
    shift = torch.diag(torch.ones(14), 1).expand(2, 15, 15)
    torch.testing.assert_close(refine_with_affinity(shift, cams).flatten(2)[..., :14], cams.flatten(2)[..., 1:])


def test_the_affinity_pass_is_single_on_the_cpu_and_recompute_elsewhere():
    assert affinity_pass(torch.device("cpu")) == "single"
    assert affinity_pass(torch.device("cuda")) == "recompute"
    assert affinity_pass(torch.device("cuda"), "single") == "single"
    with pytest.raises(ConfigError, match="unknown affinity pass"):
        affinity_pass(torch.device("cpu"), "twice")
