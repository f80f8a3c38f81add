"""DeepLab-v3+ style segmentation network on a timm backbone.

* CNN backbones (resnet50/101, efficientnet_lite0/lite2, ConvNeXt, any CNN the backbone capabilities
  accept) run at output stride 8 or 16 through timm's dilation support; the decoder fuses the level at
  stride 4, chosen by its stride (level 1 of a ResNet or EfficientNet, level 0 of a ConvNeXt).
* ViT backbones (deit_t, deit_s, any timm VisionTransformer) give a stride-16 grid of patch tokens
  (prefix tokens dropped; position embeddings resized for any input size); no low-level feature.

Both come from ``models/backbones.py:DenseBackbone`` (the encoder; its timm model is kept as ``body``).

The whole network is described by a plain ``model_config`` dict, stored in the checkpoint, so
:func:`build_segnet` rebuilds it for inference without the training options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from usage_cli.artifacts.checkpoint import restore_network
from usage_cli.artifacts.seg_checkpoint import read_seg_checkpoint
from usage_cli.errors import ConfigError
from usage_cli.models.backbones import (
    DenseBackbone,
    Stats,
    capabilities,
    load_backbone_weights,
    recorded_norm_stats,
)

# load_backbone_weights is backbones.py's (one loader for every dense network), offered here beside build_segnet
__all__ = ["ASPP", "SegNet", "build_segnet", "load_backbone_weights", "load_segnet"]


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _sep_conv_bn_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise-separable 3x3 (DeepLab-v3+): depthwise dilated 3x3, then pointwise 1x1."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        _conv_bn_relu(cin, cout, 1),
    )


class ASPP(nn.Module):
    """DeepLab-v3+ atrous spatial pyramid pooling: 1x1, three separable dilated 3x3, image pooling, projection."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, cout, 1)] + [_sep_conv_bn_relu(cin, cout, r) for r in rates])
        # no BatchNorm on the 1x1 pooled branch: it would fail at batch size 1
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu(cout * (len(rates) + 2), cout, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, 1))


class SegNet(nn.Module):
    """Encoder + ASPP (+ v3+ decoder on the stride-4 feature for CNNs) -> per-pixel logits at input size."""

    weights_part = "dense encoder"  # named by a pretrained-weights error (backbones.load_backbone_weights)

    def __init__(self, model_config: dict[str, Any]):
        super().__init__()
        self.model_config = dict(model_config)
        os_ = int(model_config.get("output_stride", 16))
        if os_ not in (8, 16):
            raise ConfigError(f"output stride must be 8 or 16, got {os_}")
        # a CNN's stride-4 level for the decoder (level 1 of a ResNet, level 0 of a ConvNeXt) and its
        # deepest (dilated to the output stride); a ViT's final patch tokens (no finer level), its input
        # padded to the patch size
        caps = capabilities(model_config["backbone"])
        levels = None if caps.tokens else (caps.level_at(4), -1)
        self.encoder = DenseBackbone(
            model_config["backbone"], levels=levels, output_stride=os_, img_size=int(model_config.get("img_size", 224)), pad=True, attr="body"
        )  # fmt: skip
        ch = int(model_config.get("aspp_channels", 256))
        base = (6, 12, 18)
        rates = tuple(r * 16 // self.encoder.stride for r in base)
        self.aspp = ASPP(self.encoder.out_dim, ch, rates)
        low_dim = self.encoder.channels[0] if levels else 0
        self.low_proj = _conv_bn_relu(low_dim, 48, 1) if low_dim else None
        fuse_in = ch + (48 if self.low_proj is not None else 0)
        self.decoder = nn.Sequential(_sep_conv_bn_relu(fuse_in, ch), _sep_conv_bn_relu(ch, ch))
        self.classifier = nn.Conv2d(ch, int(model_config["num_classes"]), 1)

    @property
    def body(self) -> nn.Module:
        """The encoder's timm model, which backbone weights load into."""
        return self.encoder.body

    @property
    def caps(self):
        """The encoder's capabilities (``models/backbone_caps.py``)."""
        return self.encoder.caps

    def expected_norm(self) -> dict[str, list[float]]:
        """The input mean / std to train with, which train-seg records in ``model_config``: what the
        encoder's weights expect (0.5 / 0.5 for the EfficientNet-Lite ones)."""
        mean, std = self.encoder.norm_stats()
        return {"mean": list(mean), "std": list(std)}

    def input_norm(self) -> Stats:
        """The input mean / std the network was trained with (ImageNet's where it records none)."""
        return recorded_norm_stats(self.model_config)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained from scratch (10x learning rate)."""
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        # channels-last: up to 15x faster on CPU for tf_efficientnet's padded depthwise convs
        feats = self.encoder(x.contiguous(memory_format=torch.channels_last))
        low, high = feats if len(feats) == 2 else (None, feats[0])
        y = self.aspp(high)
        if self.low_proj is not None and low is not None:
            y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
            y = torch.cat([y, self.low_proj(low)], 1)
        y = self.classifier(self.decoder(y))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def build_segnet(model_config: dict[str, Any]) -> SegNet:
    """Build a randomly initialised network from its plain-dict config."""
    for key in ("backbone", "num_classes"):
        if key not in model_config:
            raise ConfigError(f"segmentation model config lacks '{key}'")
    return SegNet(model_config).to(memory_format=torch.channels_last)


def load_segnet(path: str | Path, device: str = "cpu"):
    """The network of a ``usage-seg-checkpoint`` (eval mode) and the checkpoint dict."""
    ckpt = read_seg_checkpoint(path)
    net = restore_network(path, ckpt, build_segnet, "retrain with `usage train-seg`")
    return net.to(device).eval(), ckpt
