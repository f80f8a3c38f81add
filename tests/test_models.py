"""Backbones, classifier mappings, adjustable rates, real EfficientNet-Lite0 / Lite2 weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD
from usage_cli.errors import ConfigError
from usage_cli.losses.generation import cam_scores, cm_scores, mil_scores
from usage_cli.models.adjust import (
    drop_path_modules,
    dropout_modules,
    set_adjustment,
    stochastic_eval,
)
from usage_cli.models.affinitynet import build_affinitynet
from usage_cli.models.backbones import (
    backbone_family,
    build_backbone,
    norm_stats,
    recorded_norm_stats,
)
from usage_cli.models.classifier import build_classifier
from usage_cli.models.mappings import MAPPINGS, get_mapping
from usage_cli.models.segnet import build_segnet


@pytest.mark.parametrize("mapping", ["cam", "mil", "cm", "mct"])
def test_transformer_classifier_shapes(mapping):
    m = build_classifier({"backbone": "deit_t", "num_classes": 5, "mapping": mapping, "img_size": 64})
    out = m(torch.randn(2, 3, 64, 48), keep_qk=12, cls_attn=mapping == "mct")
    assert out["cams"].shape == (2, 5, 4, 3) and out["logits"].shape == (2, 5)
    assert len(out["qk"]) == 12
    prefix = 5 if mapping == "mct" else 1
    q, k, scale = out["qk"][0]
    assert q.shape == k.shape == (2, 3, prefix + 12, 64) and scale == 64**-0.5
    if mapping == "mct":
        assert out["cls_attn"].shape == (2, 5, 4, 3)


def test_cnn_classifier_shapes_and_output_stride():
    m = build_classifier({"backbone": "efficientnet_lite0", "num_classes": 3, "mapping": "cm", "tau1": 50.0, "img_size": 64})
    assert m(torch.randn(1, 3, 64, 64))["cams"].shape == (1, 3, 4, 4)  # stride 16
    m8 = build_classifier({"backbone": "resnet50", "num_classes": 3, "output_stride": 8})
    assert m8(torch.randn(1, 3, 64, 64))["cams"].shape == (1, 3, 8, 8)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown backbone 'vgg_nonsense'; supported: deit_s, deit_t, efficientnet_lite0"):
        build_backbone("vgg_nonsense")
    m = build_classifier({"backbone": "deit_t", "num_classes": 2, "img_size": 64})
    with pytest.raises(ConfigError, match="image size 60x64 is not divisible by the patch size 16"):
        m(torch.randn(1, 3, 60, 64))
    with pytest.raises(ConfigError, match="needs class tokens: a ViT / DeiT backbone"):
        build_classifier({"backbone": "resnet50", "num_classes": 2, "mapping": "mct"})
    with pytest.raises(ConfigError, match="unknown mapping 'gap'"):
        build_classifier({"backbone": "deit_t", "num_classes": 2, "mapping": "gap"})
    assert backbone_family("deit_t") == "transformer" and backbone_family("efficientnet_lite0") == "cnn"


def test_weights_of_another_architecture_are_refused(tmp_path):
    other = build_backbone("resnet50").model.state_dict()
    torch.save(other, tmp_path / "r50.pth")
    with pytest.raises(ConfigError, match=r"r50\.pth: weights of another architecture"):
        build_backbone("deit_t", weights=str(tmp_path / "r50.pth"), img_size=64)
    own = build_backbone("deit_t", img_size=64)
    torch.save({"model": {"module." + k: v for k, v in own.model.state_dict().items()}}, tmp_path / "deit.pth")
    again = build_backbone("deit_t", weights=str(tmp_path / "deit.pth"), img_size=64)
    torch.testing.assert_close(again.model.pos_embed, own.model.pos_embed)


@pytest.mark.parametrize("name", ["deit_t", "efficientnet_lite0", "resnet50"])
def test_adjustment_changes_the_stochastic_behaviour(name):
    torch.manual_seed(0)
    m = build_classifier({"backbone": name, "num_classes": 3, "img_size": 64})
    x = torch.randn(2, 3, 64, 64)
    m.eval()
    ref = m(x)["cams"]
    stochastic_eval(m)
    set_adjustment(m, 0.0, 0.0)
    torch.testing.assert_close(m(x)["cams"], ref)  # rates 0: deterministic, BN frozen
    set_adjustment(m, 0.5, 0.3)
    assert drop_path_modules(m)[-1].drop_prob == 0.5 and {d.p for d in dropout_modules(m)} == {0.3}  # the deepest block at the rate
    assert not torch.allclose(m(x)["cams"], ref)


@pytest.mark.parametrize(
    "resolved,n,size,lo,hi", [("tf_efficientnet_lite0", 247, 224, 0.5, 0.9), ("tf_efficientnet_lite2", 322, 260, 0.3, 0.6)]
)
def test_real_efficientnet_lite_weights_rank_the_voc_bus_photo_as_school_bus(resolved, n, size, lo, hi):
    import timm
    from conftest import shared_path
    from PIL import Image

    from usage_cli.models.weights import packaged_state_dict

    jpg = shared_path("voc2012", "VOCdevkit", "VOC2012", "JPEGImages", "2011_000025.jpg")
    model = timm.create_model(resolved, pretrained=False)
    sd = packaged_state_dict(resolved, model)
    assert len(sd) == n
    model.load_state_dict(sd, strict=False)
    model.eval()
    img = np.asarray(Image.open(jpg).convert("RGB").resize((size, size), Image.BICUBIC), np.float32) / 255
    x = (torch.from_numpy(img).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        p = model(x).softmax(-1)[0]
    assert int(p.argmax()) == 779  # ImageNet 'school bus'
    assert lo < float(p[779]) < hi


# ---------------------------------------------------------------- one owner: backbones.py, mappings.py


def test_norm_stats_come_from_the_weights_and_fall_back_to_imagenet_in_one_place():
    imagenet = (IMAGENET_MEAN, IMAGENET_STD)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert build_backbone("deit_t", img_size=64).norm_stats() == imagenet
    lite = build_classifier({"backbone": "efficientnet_lite0", "num_classes": 3, "img_size": 64})
    assert lite.backbone.norm_stats() == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's config of the Lite weights
    assert norm_stats(nn.Linear(2, 2)) == imagenet  # no pretrained config: ImageNet's
    # a classifier's input: what its config records (train-cls), ImageNet's for configs without
    assert lite.input_norm() == imagenet
    recorded = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    assert recorded_norm_stats(recorded) == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2)) and recorded_norm_stats({}) == imagenet
    lite.model_config.update(recorded)
    assert lite.input_norm() == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))


@pytest.mark.parametrize("name,family", [("deit_t", "transformer"), ("efficientnet_lite0", "cnn")])
def test_every_network_takes_name_and_family_from_backbones(name, family):
    nets = [build_classifier({"backbone": name, "num_classes": 3, "img_size": 64}),
            build_segnet({"backbone": name, "num_classes": 3, "aspp_channels": 8, "img_size": 64}),
            build_affinitynet({"backbone": name, "img_size": 64})]  # fmt: skip
    assert backbone_family(name) == family and [n.caps.family for n in nets] == [family] * 3
    for build in (lambda: build_segnet({"backbone": "vgg_nonsense", "num_classes": 3}), lambda: build_affinitynet({"backbone": "vgg_nonsense"})):
        with pytest.raises(ConfigError, match="unknown backbone 'vgg_nonsense'; supported: deit_s, deit_t, efficientnet_lite0"):
            build()


def test_attention_geometry_is_asked_of_the_backbone():
    vit = build_classifier({"backbone": "deit_t", "num_classes": 5, "img_size": 64}).backbone
    blocks = vit.model.blocks  # the timm internals the questions hide
    assert (vit.attention_layers, vit.attention_heads) == (len(blocks), blocks[0].attn.num_heads) == (12, 3)
    assert vit.size_multiple == 16 and vit.num_tokens(48, 64) == 3 * 4 + 1
    mct = build_classifier({"backbone": "deit_t", "num_classes": 5, "mapping": "mct", "img_size": 64}).backbone
    assert mct.num_tokens(48, 64) == 3 * 4 + 5  # one class token per class
    cnn = build_classifier({"backbone": "efficientnet_lite0", "num_classes": 3, "img_size": 64}).backbone
    assert (cnn.attention_layers, cnn.attention_heads, cnn.size_multiple) == (0, 1, 1)


def test_the_mapping_table_says_what_each_mapping_needs():
    assert list(MAPPINGS) == ["cam", "mil", "cm", "mct"]
    with pytest.raises(ConfigError, match=r"^unknown mapping 'gap'; choose from cam, mil, cm, mct$"):
        get_mapping("gap")
    assert [m.name for m in MAPPINGS.values() if m.class_tokens] == ["mct"] and get_mapping("mct").cls_attn_layers == 3
    assert get_mapping("mct").seed_sources == ("attn", "cam") and get_mapping("cm").seed_sources == ("cam",)
    assert [get_mapping(n).tau(7.0) for n in MAPPINGS] == [None, 1.0, 7.0, None]
    z = torch.randn(2, 3, 4, 5)
    assert torch.equal(get_mapping("cam").scores(z, 7.0, 0.3), cam_scores(z))  # each mapping by its own function
    assert torch.equal(get_mapping("mil").scores(z, 7.0, 0.3), mil_scores(z, 0.3))
    assert torch.equal(get_mapping("cm").scores(z, 7.0, 0.3), cm_scores(z, 7.0, 0.3))
    assert torch.equal(get_mapping("mct").scores(z, 7.0, 0.3), cam_scores(z))
    m = build_classifier({"backbone": "deit_t", "num_classes": 3, "mapping": "mil", "bg_const": 0.3, "img_size": 32}).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 32, 32))
    assert m.mapping == "mil" and m.mapping_spec is get_mapping("mil")
    assert torch.equal(out["logits"], mil_scores(out["cams"], 0.3))  # the classifier scores by the table


# ---------------------------------------------------------------- backbone families: what each offers, built on the meta device


@pytest.mark.parametrize(
    "name,tokens,strides,multiple,attention,stride4,mean",
    [("deit_tiny_patch16_224", True, (16,) * 12, 16, 12, None, (0.485, 0.456, 0.406)),
     ("resnet18", False, (2, 4, 8, 16, 32), 1, 0, 1, (0.485, 0.456, 0.406)),
     ("tf_efficientnet_lite0", False, (2, 4, 8, 16, 32), 1, 0, 1, (0.5, 0.5, 0.5)),
     ("convnext_atto", False, (4, 8, 16, 32), 1, 0, 0, (0.485, 0.456, 0.406))],
)  # fmt: skip
def test_one_tiny_model_per_family_offers_its_capabilities(name, tokens, strides, multiple, attention, stride4, mean):
    """ViT / DeiT, ResNet, EfficientNet and ConvNeXt: levels by stride, token grid and attention, input
    multiple, mean / std — and the three networks built on the meta device take what they need from
    them (the segmentation decoder the level at stride 4: ConvNeXt's level 0, not its stride-8 level 1)."""
    from usage_cli.models.backbones import capabilities

    caps = capabilities(name)
    assert (caps.tokens, caps.level_strides, caps.input_multiple, caps.attention_layers, caps.mean) == (tokens, strides, multiple, attention, mean)
    assert (caps.level_at(4) if not tokens else None) == stride4
    with torch.device("meta"):
        seg = build_segnet({"backbone": name, "num_classes": 3, "aspp_channels": 8, "img_size": 64, "output_stride": 16})
        aff = build_affinitynet({"backbone": name, "img_size": 64})
        cls = build_classifier({"backbone": name, "num_classes": 3, "img_size": 64})
    if tokens:
        assert seg.encoder.levels is None and seg.encoder.strides == [16] and aff.strides == [16, 16, 16]
        assert (cls.backbone.attention_layers, cls.backbone.attention_heads, cls.backbone.size_multiple) == (12, 3, 16)
        assert cls.backbone.num_tokens(64, 48) == 4 * 3 + 1
    else:
        assert seg.encoder.levels == (stride4, -1) and seg.encoder.strides == [4, 16]
        assert seg.encoder.channels[0] == caps.level_channels[stride4] and aff.strides == [8, 16, 32]
        assert (cls.backbone.attention_layers, cls.backbone.size_multiple, cls.backbone.stride) == (0, 1, 16)
    assert seg.expected_norm()["mean"] == list(mean) and cls.backbone.norm_stats()[0] == mean


@pytest.mark.parametrize(
    "name,lacks",
    [("swin_tiny_patch4_window7_224", r"a hierarchical transformer, no single grid of patch tokens.*features are NHWC"),
     ("efficientformer_l1", r"no patch tokens.*no output stride \(dilation\)"),
     ("beit_base_patch16_224", r"not timm's ViT blocks, so their attention cannot be read"),
     ("densenet121", r"no output stride \(dilation\)")],
)  # fmt: skip
def test_a_family_the_networks_cannot_read_is_refused_with_what_it_lacks(name, lacks):
    from usage_cli.models.backbones import capabilities

    with pytest.raises(ConfigError, match=rf"backbone '{name}' \(\w+\) is not supported: .*{lacks}.*; supported: ViT / DeiT, ResNet"):
        capabilities(name)
    with pytest.raises(ConfigError, match="is not supported"):
        build_segnet({"backbone": name, "num_classes": 3})
