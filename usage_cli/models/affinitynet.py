"""AffinityNet (PSA, Ahn & Kwak 2018): multi-level backbone features -> one affinity feature map.

PSA projects three levels of a ResNet38 (1x1 convs to 64, 128 and 256 channels, ELU), concatenates
them and mixes them with a 1x1 conv to 448 channels (ELU). Here the backbone is any supported timm model
(``models/backbone_caps.py``):

* CNNs (``features_only``): the last three levels (strides 8, 16, 32 for ResNets, EfficientNets, ConvNeXts)
  are projected, the coarser two upsampled bilinearly to the stride-8 grid, then mixed.
* Transformers (DeiT / ViT): the patch tokens of the last three blocks (stride 16), projected and
  mixed the same way.

The whole network is a plain ``model_config`` dict (stored in ``affinity.pt``), so
:func:`build_affinitynet` rebuilds it for inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from usage_cli.artifacts.aff_checkpoint import read_aff_checkpoint
from usage_cli.artifacts.checkpoint import restore_network
from usage_cli.errors import ConfigError
from usage_cli.models.backbones import (
    DenseBackbone,
    Stats,
    load_backbone_weights,
    recorded_norm_stats,
)

# load_backbone_weights is backbones.py's (one loader for every dense network), offered here beside build_affinitynet
__all__ = ["AffinityNet", "build_affinitynet", "check_crop", "load_affinitynet", "load_backbone_weights", "pad_to_multiple"]

LEVELS = (-3, -2, -1)  # a CNN's last three stages, a transformer's last three blocks
PROJ_DIMS = (64, 128, 256)
OUT_DIM = 448


class AffinityNet(DenseBackbone):
    """``forward(x)`` -> B x 448 x ceil(H/stride) x ceil(W/stride) affinity features.

    The network is its dense backbone (the last three levels, the timm model kept as ``body``) plus
    PSA's projection layers, as PSA's AffinityNet extends its ResNet38; its checkpoint keys are the
    backbone's ``body.*`` beside ``proj.*`` and ``mix.*``. ``stride`` is its output grid's (the finest
    level's); inputs should be padded to a multiple of :attr:`pad_multiple`, the coarsest level's (see
    :func:`pad_to_multiple`).
    """

    weights_part = "affinity backbone"  # named by a pretrained-weights error (backbones.load_backbone_weights)

    def __init__(self, model_config: dict[str, Any]):
        super().__init__(model_config["backbone"], levels=LEVELS, img_size=int(model_config.get("img_size", 224)), attr="body")
        self.model_config = dict(model_config)
        self.stride, self.pad_multiple = self.strides[0], self.strides[-1]
        self.proj = nn.ModuleList(nn.Conv2d(d, p, 1, bias=False) for d, p in zip(self.channels, PROJ_DIMS, strict=True))
        self.mix = nn.Conv2d(sum(PROJ_DIMS), OUT_DIM, 1, bias=False)
        for conv in self.proj:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.mix.weight, gain=4)  # PSA's f9 initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. three backbone levels; 2. project each (ELU) onto the finest grid; 3. mix (ELU)
        feats = super().forward(x)
        size = feats[0].shape[-2:]
        out = []
        for f, conv in zip(feats, self.proj, strict=True):
            y = F.elu(conv(f))
            out.append(y if y.shape[-2:] == size else F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return F.elu(self.mix(torch.cat(out, 1)))

    def expected_norm(self) -> dict[str, list[float]]:
        """The input mean / std to train with, which train-aff records in ``model_config``: what the
        backbone's weights expect (0.5 / 0.5 for the EfficientNet-Lite ones)."""
        mean, std = self.norm_stats()
        return {"mean": list(mean), "std": list(std)}

    def input_norm(self) -> Stats:
        """The input mean / std the network was trained with (ImageNet's where it records none)."""
        return recorded_norm_stats(self.model_config)

    def head_parameters(self) -> list[nn.Parameter]:
        """Layers trained from scratch (PSA: 10x learning rate)."""
        return list(self.proj.parameters()) + list(self.mix.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.body.parameters() if p.requires_grad]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad a B x C x H x W tensor at the bottom/right to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))


def check_crop(net: AffinityNet, crop: int) -> None:
    """A training crop must be a multiple of the network's coarsest stride (its label grid must align)."""
    if crop % net.pad_multiple:
        raise ConfigError(f"--crop must be a multiple of {net.pad_multiple} for backbone {net.model_config['backbone']}, got {crop}")


def build_affinitynet(model_config: dict[str, Any]) -> AffinityNet:
    if "backbone" not in model_config:
        raise ConfigError("affinity model config lacks 'backbone'")
    return AffinityNet(model_config).to(memory_format=torch.channels_last)


def load_affinitynet(path: str | Path, device: str = "cpu"):
    """The network of an ``affinity.pt`` (eval mode, on ``device``) and the checkpoint dict."""
    ckpt = read_aff_checkpoint(path)
    net = restore_network(path, ckpt, build_affinitynet, "retrain with `usage train-aff` (or `usage refine-psa`)")
    return net.to(device).eval(), ckpt
