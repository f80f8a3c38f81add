"""CAM inference: the scale x flip views of same-size images through a classifier -> one fused,
not yet normalised C x H x W map per image (the seeds' step before ``fuse.seed_maps``).

Per view the activation map (or, for class tokens, the class-to-patch attention x CAM) is optionally
refined with the patch-to-patch attention affinity (transformers, MCTformer), then ReLU'd,
un-flipped, resized to the image size and summed (``fuse.fuse_views``).

The classifier is asked, not inspected: its backbone's ``attention_layers``, ``net.mapping_spec`` (class tokens, seed
sources), ``net.input_norm()`` and the geometry of ``net.backbone`` (``size_multiple``,
``num_prefix_tokens``, ``attention_layers``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from usage_cli.algorithms.fuse import (
    fuse_views,
    refine_with_affinity,
    refine_with_attention,
    relu_views,
    scaled_size,
)
from usage_cli.errors import ConfigError

REFINES = ("patch-affinity", "none")
SOURCES = ("cam", "attn")
AFFINITY_PASSES = ("auto", "single", "recompute")


@dataclass(frozen=True)
class CamInference:
    """How views become maps; ``refine`` and ``source`` resolved (see :func:`resolve_options`)."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    refine: str = "none"  # patch-affinity | none
    source: str = "cam"  # cam | attn (class-to-patch attention x CAM, class tokens only)
    affinity_layers: int = 12  # the last layers whose attention makes the patch affinity
    amp: bool = False  # the network in bfloat16 autocast
    affinity_pass: str = "auto"  # single | recompute | auto (by device, :func:`affinity_pass`)
    normalise: str = "max"  # how the views are fused (ReLU'd or not) for fuse.seed_maps; see fuse.NORMALISE


def auto_refine(attention: bool, pretrained: bool) -> tuple[str, str]:
    """``--refine auto``: the refinement the seed-step study supports for this classifier (``attention``:
    its backbone's attention can be read), and why (docs/results.md, "The seed step")."""
    if not attention:
        return "none", "a CNN has no attention to refine with"
    if pretrained:
        return "patch-affinity", "a transformer with ImageNet weights: MCTformer's patch affinity from its attention (the paper's setting)"
    return "none", ("a transformer trained from scratch: its attention is diffuse, and propagating the maps along it "
                    "flattens them (the seed-step study: DeiT-Ti cm seeds lost 10-11 mIoU with it)")  # fmt: skip


def auto_normalise(refine: str) -> tuple[str, str]:
    """``--normalise auto`` for a resolved refinement, and why."""
    if refine == "patch-affinity":
        return "minmax", "refined maps have a raised floor everywhere: min-max, as MCTformer's seed export"
    return "max", "ReLU'd maps whose floor is 0: divided by the maximum, as PSA and IRN"


def resolve_options(net, refine: str = "auto", source: str = "auto", affinity_layers: int = 12, pretrained: bool = False) -> tuple[str, str]:
    """``--refine`` / ``--source`` with ``auto`` replaced by what the classifier supports and the study
    supports (:func:`auto_refine`; the mapping's first seed source); an impossible choice is a ConfigError.
    ``pretrained``: the classifier was trained from ImageNet weights."""
    backbone = net.model_config["backbone"]
    if refine == "auto":
        refine = auto_refine(net.backbone.attention_layers > 0, pretrained)[0]
    if refine not in REFINES:
        raise ConfigError(f"unknown --refine '{refine}'; choose patch-affinity, none or auto")
    if refine == "patch-affinity" and not net.backbone.attention_layers:
        raise ConfigError(f"--refine patch-affinity needs a classifier whose attention can be read (a ViT / DeiT), not {backbone}")
    layers = net.backbone.attention_layers
    if refine == "patch-affinity" and affinity_layers > layers:
        raise ConfigError(f"--affinity-layers {affinity_layers}: {backbone} has only {layers} layers")
    sources = net.mapping_spec.seed_sources
    chosen = sources[0] if source == "auto" else source
    if chosen not in SOURCES:
        raise ConfigError(f"unknown --source '{source}'; choose cam, attn or auto")
    if chosen not in sources:
        raise ConfigError(f"--source {chosen} needs an mct checkpoint (class tokens), not mapping '{net.mapping}'")
    return refine, chosen


def resolve_seed_step(net, train_config: dict, refine: str, source: str, normalise: str, affinity_layers: int) -> dict:
    """``--refine`` / ``--source`` / ``--normalise`` with ``auto`` resolved for this classifier (its
    checkpoint's ``train_config`` says whether it started from ImageNet weights), and why."""
    pretrained = bool(train_config.get("pretrained") or train_config.get("weights"))
    refine_r, source_r = resolve_options(net, refine, source, affinity_layers, pretrained=pretrained)
    step = {"refine": refine_r, "source": source_r, "classifier_pretrained": pretrained}
    step["normalise"] = auto_normalise(refine_r)[0] if normalise == "auto" else normalise
    step["refine_rule"] = auto_refine(net.backbone.attention_layers > 0, pretrained)[1] if refine == "auto" else "set by --refine"
    step["normalise_rule"] = auto_normalise(refine_r)[1] if normalise == "auto" else "set by --normalise"
    return step


def views_per_forward(device: torch.device) -> int:
    """How many views (images x flips of one scale) go through the network in one forward: on a GPU
    all of them; on the CPU one: batching VOC-sized views there was slower, not faster
    (efficientnet_lite0, 4 scales x flip: 0.25 images/s at 8 images a batch against 0.44 one view at
    a time, as the reference implementations do), since the activations of a batch outgrow the caches.
    Nothing else bounds a batch: what the refinement keeps of each layer (its queries and keys) grows
    with the tokens, as the forward's own activations do."""
    return 1 if device.type == "cpu" else 1 << 30


@torch.no_grad()
def views_to_maps(net, images: torch.Tensor, opts: CamInference) -> list[torch.Tensor]:
    """Fused (not yet normalised) C x H x W maps for a batch of same-size uint8 images (B x H x W x 3).
    On the CPU the images go one at a time, so only one image's views exist at once (a batch of 8
    500x375 images has 140 MB of views at scale 2); on a GPU all together."""
    size, relu = tuple(images.shape[1:3]), relu_views(opts.normalise)
    maps = []
    for part in images.split(views_per_forward(images.device)):
        views, flips = view_maps(net, part, opts)
        # per image: every view (ReLU'd unless the normalisation keeps the raw values), un-flipped, resized and summed
        maps += [fuse_views([v[i] for v in views], flips, size, relu) for i in range(part.shape[0])]
    return maps


@torch.no_grad()
def view_maps(net, images: torch.Tensor, opts: CamInference) -> tuple[list[torch.Tensor], list[bool]]:
    """The maps of every scale x flip view (each B x C x h_s x w_s, refined, not yet ReLU'd, resized
    or un-flipped) of a batch of same-size uint8 images, in the order scales, then (plain, flipped)."""
    # 1. normalise as the classifier was trained
    mean, std = (torch.tensor(s, device=images.device).view(1, 3, 1, 1) for s in net.input_norm())
    x0 = (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    H, W = x0.shape[-2:]
    views, flips = [], []
    for s in opts.scales:
        # 2. per scale: the images and their mirror images, in forwards of at most views_per_forward views
        x = F.interpolate(x0, size=scaled_size(H, W, s, net.backbone.size_multiple), mode="bilinear", align_corners=False)
        batch = torch.cat([x, x.flip(-1)]) if opts.flip else x
        z = torch.cat([_forward_maps(net, part, opts) for part in batch.split(views_per_forward(batch.device))])
        n = x.shape[0]
        views.append(z[:n])
        flips.append(False)
        if opts.flip:
            views.append(z[n:])
            flips.append(True)
    return views, flips


def affinity_pass(device: torch.device, choice: str = "auto") -> str:
    """How the patch affinity's product with the maps is made (both exact, equal within 1e-4):
    ``single``: in the forward, each kept layer's attention formed a block of query rows at a time
    and summed into one N x N affinity per view (34 MB at scale 2 of a 500x375 image), times the maps
    after it; ``recompute``: every layer through the fused kernel, its queries and keys kept (linear
    in the tokens), the product the fused kernel again with the maps as values. ``auto``: single on
    the CPU, where it measured faster (DeiT-S, one 500x375 view: 0.95 / 0.79 of the bare forward at
    scales 1 / 2 against 0.78 / 0.64, bench/affinity_passes.py); recompute elsewhere, where the fused
    kernel is what a GPU is fast at and all views share a forward (N x N per view would bound the batch)."""
    if choice not in AFFINITY_PASSES:
        raise ConfigError(f"unknown affinity pass '{choice}'; choose {', '.join(AFFINITY_PASSES)}")
    if choice != "auto":
        return choice
    return "single" if device.type == "cpu" else "recompute"


def _forward_maps(net, part: torch.Tensor, opts: CamInference) -> torch.Tensor:
    """The float32 maps (V x C x h x w) of one forward of views: the source, refined."""
    keep = opts.affinity_layers if opts.refine == "patch-affinity" else 0
    single = bool(keep) and affinity_pass(part.device, opts.affinity_pass) == "single"
    # 1. the network in bfloat16 autocast (amp); for the refinement either the affinity of the last
    #    affinity_layers layers summed in the forward (single), or their queries and keys kept, every
    #    layer through the fused attention kernel (recompute)
    with torch.autocast(part.device.type, dtype=torch.bfloat16, enabled=opts.amp):
        out = net(part, keep_qk=0 if single else keep, cls_attn=opts.source == "attn", affinity=keep if single else 0)
    # 2. the source: the activation maps, or (class tokens) the class-to-patch attention x the ReLU'd maps
    cams = out["cams"].float()
    z = out["cls_attn"].float() * torch.relu(cams) if opts.source == "attn" else cams
    # 3. MCTformer's patch affinity (ReLU first, as MCTformer-V2): the summed affinity x the maps
    #    (float32), or the fused kernel with the maps as values (float32 unless amp kept bfloat16 keys)
    if single:
        z = refine_with_affinity(out["affinity"], torch.relu(z))
    elif keep:
        z = refine_with_attention(out["qk"], torch.relu(z), net.backbone.num_prefix_tokens)
    return z
