"""What a timm architecture offers the networks, asked once on the meta device (no weights, no memory):
the capabilities :class:`~usage_cli.models.backbones.DenseBackbone` and everything above it ask
instead of comparing a family name.

Two ways of reading dense features are supported:

* ``tokens`` — a plain ViT (timm's ``VisionTransformer``: DeiT, ViT, DeiT-III, ...): one grid of patch
  tokens at the patch size's stride after any block, global attention whose queries and keys can be
  read (patch affinity, MCTformer's class tokens), inputs a multiple of the patch size;
* ``stages`` — a CNN whose timm model lists NCHW feature stages (``feature_info``) and dilates its
  last stages to an output stride of 8 or 16 (ResNet, EfficientNet, ConvNeXt, RegNet, ...):
  levels chosen by their stride, no attention.

Anything else (Swin and other hierarchical or windowed transformers, EfficientFormer, LeViT, BEiT,
EVA, MobileNetV3, DenseNet, VGG, ...) is refused with one line saying what it lacks. docs/architecture.md has the
table of families.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD
from usage_cli.errors import ConfigError

Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class BackboneCaps:
    """The capabilities of one backbone (``name``, timm's ``timm``, its class ``arch``)."""

    name: str
    timm: str
    arch: str
    reads: str  # "tokens" | "stages"
    level_strides: tuple[int, ...]  # of every feature level: a CNN's stages, a ViT's blocks
    level_channels: tuple[int, ...]
    final_channels: int  # of the final features (the classifier's)
    input_multiple: int  # input sides must be a multiple of this (a ViT's patch size; 1 for a CNN)
    attention_layers: int  # layers whose queries and keys can be read (0: none)
    attention_heads: int
    mean: tuple[float, ...]  # what its weights expect
    std: tuple[float, ...]

    @property
    def tokens(self) -> bool:
        """A patch-token grid (class tokens, attention) rather than convolutional stages."""
        return self.reads == "tokens"

    @property
    def family(self) -> str:
        """The recipe family the presets (and bench/) are keyed by: ``transformer`` or ``cnn``."""
        return "transformer" if self.tokens else "cnn"

    def level_at(self, stride: int) -> int:
        """The index of the first feature level at ``stride`` (e.g. a decoder's stride-4 feature: level 1
        of a ResNet, level 0 of a ConvNeXt); a ConfigError when it has none."""
        if stride not in self.level_strides:
            raise ConfigError(f"backbone '{self.name}' has no feature level at stride {stride} (its levels: {', '.join(map(str, self.level_strides))})")
        return self.level_strides.index(stride)


SUPPORTED = "ViT / DeiT, ResNet, EfficientNet, ConvNeXt, RegNet, ... (docs/architecture.md)"


@functools.lru_cache(maxsize=64)
def backbone_caps(name: str, resolved: str) -> BackboneCaps:
    """The capabilities of timm model ``resolved`` (alias ``name``), or a ConfigError naming what it
    lacks. Read from a model on the meta device."""
    with torch.device("meta"):
        model = timm.create_model(resolved, pretrained=False, num_classes=0)
    pc = getattr(model, "pretrained_cfg", {}) or {}
    stats = tuple(pc.get("mean", IMAGENET_MEAN)), tuple(pc.get("std", IMAGENET_STD))
    token_gap, stage_gap = _token_gap(model), _stage_gap(model, resolved)
    if token_gap and stage_gap:
        raise ConfigError(f"backbone '{name}' ({type(model).__name__}) is not supported: not a plain ViT ({token_gap}), not a CNN with dilatable stages ({stage_gap}); supported: {SUPPORTED}")
    info = list(getattr(model, "feature_info", []))
    common = dict(name=name, timm=resolved, arch=type(model).__name__, final_channels=int(model.num_features), mean=stats[0], std=stats[1])
    if not token_gap:
        patch = int(model.patch_embed.patch_size[0])
        layers, heads = len(model.blocks), int(model.blocks[0].attn.num_heads)
        return BackboneCaps(reads="tokens", level_strides=(patch,) * layers, level_channels=(int(model.embed_dim),) * layers,
                            input_multiple=patch, attention_layers=layers, attention_heads=heads, **common)  # fmt: skip
    return BackboneCaps(reads="stages", level_strides=tuple(int(f["reduction"]) for f in info), level_channels=tuple(int(f["num_chs"]) for f in info),
                        input_multiple=1, attention_layers=0, attention_heads=1, **common)  # fmt: skip


def _token_gap(model: nn.Module) -> str:
    """What a model lacks to be read as a plain ViT ('' when nothing): timm's ``VisionTransformer``, the
    blocks ``models/vit.py`` runs and reads the queries and keys of."""
    if isinstance(model, VisionTransformer):
        return ""
    if hasattr(model, "patch_embed") and not isinstance(getattr(model, "blocks", None), nn.Sequential | nn.ModuleList):
        return "a hierarchical transformer, no single grid of patch tokens"
    if hasattr(model, "patch_embed"):
        return "its blocks are not timm's ViT blocks, so their attention cannot be read"
    return "no patch tokens"


def _stage_gap(model: nn.Module, resolved: str) -> str:
    """What a model lacks to be read as a CNN of NCHW stages that dilates to output stride 8 / 16 ('' when nothing)."""
    info = getattr(model, "feature_info", None)
    if not info:
        return "no feature stages"
    if str(getattr(model, "output_fmt", "NCHW")).split(".")[-1] != "NCHW":
        return f"its features are {model.output_fmt} token maps, not NCHW"
    for what, extra in (("its final features", {"num_classes": 0}), ("its feature stages", {"features_only": True})):
        try:
            with torch.device("meta"):
                timm.create_model(resolved, pretrained=False, output_stride=8, **extra)
        except (TypeError, AssertionError, ValueError, RuntimeError):
            return f"{what} have no output stride (dilation), which dense features at stride 8 / 16 need"
    return ""
