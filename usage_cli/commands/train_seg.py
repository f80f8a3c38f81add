"""``usage train-seg``: DeepLab-style segmentation network trained on pseudo masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import (
    data_options,
    number_pair,
    runtime_options,
)
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.dataspec import DataSpec
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Split to train on.")
@runtime_options(
    "train-seg", workers="Data-loading worker processes.",
    force="Replace a finished or unfinished run of other options in OUT; also train on masks made from another data set than the one given (recorded in the manifest).",
)  # fmt: skip
def command(
    ctx: typer.Context,
    masks: Annotated[Path | None, typer.Option(help="Folder of pseudo-mask PNGs with a manifest (from `usage refine-psa`). Required (here or in --config).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: checkpoint.pt, manifest.json, last.pt, log.jsonl. Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="train_aug"),
    backbone: Annotated[str, typer.Option(help="resnet101, resnet50, efficientnet_lite0, deit_s, deit_t or a timm name of a supported family (ViT / DeiT, ResNet, EfficientNet, ConvNeXt, ...; docs/architecture.md).")] = "resnet101",
    pretrained: Annotated[bool, typer.Option(help="Start from ImageNet weights, as the paper's DeepLab (efficientnet_lite0/lite2: bundled, offline; others: hub, or --weights FILE).")] = True,
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights file (state dict).")] = None,
    output_stride: Annotated[int, typer.Option(help="CNN output stride: 8 or 16.")] = 16,
    aspp_channels: Annotated[int, typer.Option(help="Width of the ASPP head and decoder.")] = 256,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Images per step per process.")] = 8,
    crop: Annotated[int, typer.Option(help="Square training crop (padding labelled 255).")] = 321,
    lr: Annotated[float, typer.Option(help="Backbone learning rate (head: 10x), SGD, poly decay.")] = 0.007,
    optimizer: Annotated[str, typer.Option(help="sgd | adamw.")] = "sgd",
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 1e-4,
    head_lr_mult: Annotated[float, typer.Option(help="Learning-rate factor of the head.")] = 10.0,
    scale: Annotated[str, typer.Option(help="Random rescale range of the training crops, LOW:HIGH.")] = "0.7:1.3",
    img_size: Annotated[int, typer.Option(help="Transformer backbones: position-embedding grid size.")] = 224,
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Train the segmentation network on pseudo masks (ignore 255, random scale/crop/flip, poly LR)."""
    from usage_cli.config import apply_cli_config
    from usage_cli.progress import log
    from usage_cli.stages.train_seg import TrainSegConfig, run

    cfg = TrainSegConfig(
        data=data, masks=masks, out=out, backbone=backbone, pretrained=pretrained, weights=weights, output_stride=output_stride, img_size=img_size,
        aspp_channels=aspp_channels,
        epochs=epochs, batch_size=batch_size, crop=crop, lr=lr, optimizer=optimizer,
        weight_decay=weight_decay, head_lr_mult=head_lr_mult, scale=number_pair(scale, "--scale"), runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config)
    log(f"train-seg: wrote {run(cfg)}", cfg.runtime.quiet)
