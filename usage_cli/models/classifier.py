"""The multi-label classifier of USAGE: dense backbone -> 1x1 linear classifier -> activation maps z
(Eq. 2) -> class scores by the chosen mapping (cam / mil / cm, Eq. 3, 6, 8), or MCTformer's class
tokens (mct, Eq. 10-11); what each mapping needs is said in ``models/mappings.py``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from usage_cli.artifacts.checkpoint import restore_network
from usage_cli.artifacts.cls_checkpoint import read_cls_checkpoint
from usage_cli.errors import ConfigError
from usage_cli.models.backbones import Stats, build_backbone, recorded_norm_stats
from usage_cli.models.mappings import get_mapping
from usage_cli.models.vit import rows_attention, summing_affinity, vit_forward

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "backbone": "deit_s",
    "num_classes": 20,
    "mapping": "cm",
    "tau1": 1.0,
    "bg_const": 0.0,
    "img_size": 224,
    "output_stride": 16,
    "tokens": "final-norm",  # transformers; checkpoints written before the option used the final norm
}


class Classifier(nn.Module):
    def __init__(self, model_config: dict[str, Any], *, pretrained: bool = False, weights: str | None = None):
        super().__init__()
        cfg = {**DEFAULT_MODEL_CONFIG, **model_config}
        spec = get_mapping(cfg["mapping"])
        if cfg["tau1"] <= 0:
            raise ConfigError(f"--tau1 must be > 0 (got {cfg['tau1']})")
        self.model_config = cfg
        self.mapping = spec.name
        self.mapping_spec = spec
        self.num_classes = int(cfg["num_classes"])
        self.backbone = build_backbone(
            cfg["backbone"], pretrained=pretrained, weights=weights, img_size=cfg["img_size"],
            output_stride=cfg["output_stride"], num_class_tokens=self.num_classes if spec.class_tokens else 0,
            tokens=cfg["tokens"],
        )  # fmt: skip
        self.caps = self.backbone.caps
        if spec.class_tokens and not self.caps.tokens:
            raise ConfigError(f"mapping '{spec.name}' needs class tokens: a ViT / DeiT backbone, not {cfg['backbone']}")
        self.feat_drop = nn.Dropout2d(0.0)  # feature-map dropout driven by the adjustment
        # PyTorch's default init, U(+-1/sqrt(D)), as MCTformer's patch head. Not N(0, 0.01): with Adam
        # every weight moves by about lr a step whatever its scale, so a 4x smaller head makes the
        # backbone's updates move the scores 4x less; a DeiT from scratch then learns little beyond
        # the class frequencies, pushed into the map (no bias) as negative activations everywhere
        # (docs/results.md, bench/diag_transformer.py)
        self.head = nn.Conv2d(self.backbone.out_dim, self.num_classes, kernel_size=1, bias=False)
        if not self.caps.tokens:  # depthwise convolutions are far faster channels-last on CPU
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, keep_qk: int = 0, cls_attn: bool = False, affinity: int = 0) -> dict[str, torch.Tensor]:
        """``keep_qk``: also ``out["qk"]``, the queries and keys of the last ``keep_qk`` layers
        (:class:`~usage_cli.models.vit.QK`; every layer still runs the fused attention kernel). ``mct``
        with ``cls_attn``: ``out["cls_attn"]``, the seeds' class-to-patch attention. ``affinity``: also
        ``out["affinity"]``, MCTformer's patch affinity of the last ``affinity`` layers (B x N x N),
        summed in this forward (:func:`~usage_cli.models.vit.summing_affinity`). Training needs none."""
        if affinity:
            with summing_affinity(self.backbone.model, affinity) as got:
                out = self.forward(x, keep_qk, cls_attn)
            return {**out, "affinity": got.total}
        if not self.caps.tokens:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mapping_spec.class_tokens:
            return self._forward_mct(x, keep_qk, cls_attn)
        feats, qk = self.backbone(x, keep_qk=keep_qk) if keep_qk else (self.backbone(x), None)
        z = self.head(self.feat_drop(feats[-1]))  # Eq. 2 at every location
        out = {"cams": z, "logits": self.mapping_spec.scores(z, self.model_config["tau1"], self.model_config["bg_const"])}
        if keep_qk:
            out["qk"] = qk
        return out

    def _forward_mct(self, x: torch.Tensor, keep_qk: int, with_cls_attn: bool) -> dict[str, torch.Tensor]:
        """MCTformer (V1 class-token scores + V2 patch CAM): logits from the class tokens (mean over
        channels, Eq. 10), patch CAM scores by GAP; seeds from class-to-patch attention."""
        bb = self.backbone
        bb.check_size(x.shape[-2], x.shape[-1])
        n = self.mapping_spec.cls_attn_layers
        # queries and keys only where they are used: the last n layers for cls_attn, and the asked-for ones
        tokens, qk = vit_forward(bb.model, x, keep_qk=max(keep_qk, n if with_cls_attn else 0))
        C = self.num_classes
        h, w = x.shape[-2] // bb.stride, x.shape[-1] // bb.stride
        feat = tokens[:, C:].transpose(1, 2).reshape(x.shape[0], -1, h, w)
        z = self.head(self.feat_drop(feat))
        out = {"cams": z, "logits": tokens[:, :C].mean(-1), "patch_logits": z.mean((2, 3))}
        if with_cls_attn:  # class-to-patch attention of the last n layers, averaged over heads, summed over layers
            out["cls_attn"] = sum(rows_attention(layer, C) for layer in qk[-n:]).reshape(x.shape[0], C, h, w)
        if keep_qk:
            out["qk"] = qk[-keep_qk:]
        return out

    def input_norm(self) -> Stats:
        """The input mean / std of the classifier as trained (train-cls records its backbone's
        :func:`~usage_cli.models.backbones.norm_stats`; ImageNet's for checkpoints without)."""
        return recorded_norm_stats(self.model_config)


def build_classifier(model_config: dict[str, Any], *, pretrained: bool = False, weights: str | None = None) -> Classifier:
    return Classifier(model_config, pretrained=pretrained, weights=weights)


def load_classifier(path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the network of a ``usage train-cls`` checkpoint; refuse anything else clearly."""

    ckpt = read_cls_checkpoint(path)  # the format and version check
    net = restore_network(path, ckpt, build_classifier, "retrain with `usage train-cls`")
    return net.to(device).eval(), ckpt
