"""``usage train-aff``: AffinityNet (PSA step 2) trained on a folder of confident labels."""

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


@data_options(split="Split to train on (the labels must cover it).")
@runtime_options("train-aff", workers="Data-loading worker processes.")
def command(
    ctx: typer.Context,
    labels: Annotated[Path | None, typer.Option(help="Confident-label folder from `usage psa-labels`. Required (here or in --config).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: affinity.pt, manifest.json, last.pt, log.jsonl. Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="train_aug"),
    radius: Annotated[int, typer.Option(help="Affinity radius on the feature grid.")] = 5,
    backbone: Annotated[str, typer.Option(help="resnet50, resnet101, efficientnet_lite0, deit_s, deit_t or a timm name of a supported family (ViT / DeiT, ResNet, EfficientNet, ConvNeXt, ...; docs/architecture.md).")] = "resnet50",
    pretrained: Annotated[bool, typer.Option(help="Start from ImageNet weights, as both refine-psa presets (efficientnet_lite0/lite2: bundled, offline; others: hub, or --weights FILE).")] = True,
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights file.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Crops per step per process.")] = 8,
    crop: Annotated[int, typer.Option(help="Square training crop (a multiple of the backbone's stride).")] = 448,
    lr: Annotated[float, typer.Option(help="Backbone learning rate (new layers 10x), SGD, poly.")] = 0.01,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay.")] = 5e-4,
    head_lr_mult: Annotated[float, typer.Option(help="Learning-rate factor of the new layers.")] = 10.0,
    scale: Annotated[str, typer.Option(help="Random rescale range of the training crops, LOW:HIGH.")] = "0.7:1.3",
    img_size: Annotated[int, typer.Option(help="Transformer backbones: position-embedding grid size.")] = 224,
    aff_out: Annotated[Path | None, typer.Option(help="Where to write the AffinityNet checkpoint (default <out>/affinity.pt).")] = None,
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Train AffinityNet on confident labels (PSA step 2); the labels are only read, never remade."""
    from usage_cli.config import apply_cli_config
    from usage_cli.progress import log
    from usage_cli.stages.train_aff import TrainAffConfig, run

    cfg = TrainAffConfig(
        data=data, labels=labels, out=out, radius=radius, backbone=backbone, pretrained=pretrained, weights=weights, img_size=img_size, epochs=epochs,
        batch_size=batch_size, crop=crop, scale=number_pair(scale, "--scale"), lr=lr, weight_decay=weight_decay,
        head_lr_mult=head_lr_mult, aff_out=aff_out, runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config)
    log(f"train-aff: wrote {run(cfg)}", cfg.runtime.quiet)
