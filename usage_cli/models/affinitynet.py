"""AffinityNet (PSA, Ahn & Kwak 2018): multi-level backbone features -> one affinity feature map.

PSA projects three levels of a ResNet38 (1x1 convs to 64, 128 and 256 channels, ELU), concatenates
them and mixes them with a 1x1 conv to 448 channels (ELU). Here the backbone is any timm model:

* CNNs (``features_only``): the last three levels (strides 8, 16, 32 for ResNets and EfficientNets)
  are projected, the coarser two upsampled bilinearly to the stride-8 grid, then mixed.
* Transformers (DeiT / ViT): the patch tokens of the last three blocks (stride 16), projected and
  mixed the same way.

The whole network is a plain ``model_config`` dict (stored in ``affinity.pt``), so
:func:`build_affinitynet` rebuilds it for inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from usage_cli.artifacts.aff_checkpoint import read_aff_checkpoint
from usage_cli.artifacts.checkpoint import restore_network
from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD
from usage_cli.errors import ConfigError
from usage_cli.models.backbones import (
    Stats,
    backbone_family,
    load_backbone_weights,
    recorded_norm_stats,
    timm_name,
)

# load_backbone_weights is backbones.py's (one loader for every dense network), offered here beside build_affinitynet
__all__ = ["AffinityNet", "build_affinitynet", "load_affinitynet", "load_backbone_weights", "pad_to_multiple"]

PROJ_DIMS = (64, 128, 256)
OUT_DIM = 448

class AffinityNet(nn.Module):
    """``forward(x)`` -> B x 448 x ceil(H/stride) x ceil(W/stride) affinity features.

    Inputs should be padded to a multiple of :attr:`pad_multiple` (see :func:`pad_to_multiple`).
    """

    weights_part = "affinity backbone"  # named by a pretrained-weights error (backbones.load_backbone_weights)

    def __init__(self, model_config: dict[str, Any]):
        super().__init__()
        self.model_config = dict(model_config)
        resolved = timm_name(model_config["backbone"])
        self.family = backbone_family(resolved)
        if self.family == "cnn":
            try:
                self.body = timm.create_model(resolved, pretrained=False, features_only=True, out_indices=(-3, -2, -1))
            except (TypeError, RuntimeError, AssertionError) as e:
                raise ConfigError(f"backbone '{resolved}' cannot give multi-level features ({e})") from e
            dims = self.body.feature_info.channels()
            reductions = self.body.feature_info.reduction()
            self.stride, self.pad_multiple = reductions[0], reductions[-1]
        else:
            img_size = int(model_config.get("img_size", 224))
            self.body = timm.create_model(resolved, pretrained=False, num_classes=0, img_size=img_size, dynamic_img_size=True)
            dims = [self.body.embed_dim] * 3
            self.stride = self.pad_multiple = int(self.body.patch_embed.patch_size[0])
            # forward_intermediates(intermediates_only=True) never reaches the final norm or the pooling
            # head: frozen, so DDP (find_unused_parameters=False) meets no parameter without a gradient.
            # Kept in the model, so checkpoints and weight files keep their keys
            for name in ("norm", "fc_norm", "attn_pool", "head"):
                if isinstance(getattr(self.body, name, None), nn.Module):
                    getattr(self.body, name).requires_grad_(False)
        self.proj = nn.ModuleList(nn.Conv2d(d, p, 1, bias=False) for d, p in zip(dims, PROJ_DIMS, strict=True))
        self.mix = nn.Conv2d(sum(PROJ_DIMS), OUT_DIM, 1, bias=False)
        for conv in self.proj:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.mix.weight, gain=4)  # PSA's f9 initialisation

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.family == "cnn":
            # channels-last: many times faster on CPU for tf_efficientnet's padded depthwise convs
            return list(self.body(x.contiguous(memory_format=torch.channels_last)))
        return list(self.body.forward_intermediates(x, indices=3, output_fmt="NCHW", intermediates_only=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. three backbone levels; 2. project each (ELU) onto the finest grid; 3. mix (ELU)
        feats = self.levels(x)
        size = feats[0].shape[-2:]
        out = []
        for f, conv in zip(feats, self.proj, strict=True):
            y = F.elu(conv(f))
            out.append(y if y.shape[-2:] == size else F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return F.elu(self.mix(torch.cat(out, 1)))

    def expected_norm(self) -> dict[str, list[float]]:
        """The input mean / std to train with, which train-aff records in ``model_config``."""
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

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
