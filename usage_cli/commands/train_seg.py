"""``usage train-seg``: DeepLab-style segmentation network trained on pseudo masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    masks: Annotated[Path, typer.Option(help="Folder of pseudo-mask PNGs with a manifest (from `usage refine-psa`).")],
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    out: Annotated[Path, typer.Option(help="Output folder: checkpoint.pt, manifest.json, last.pt, log.jsonl.")],
    dataset: Annotated[str, typer.Option(help="Dataset loader: voc or coco.")] = "voc",
    split: Annotated[str, typer.Option(help="Split to train on.")] = "train_aug",
    split_file: Annotated[Path | None, typer.Option(help="Explicit split list (bare ids or PSA pairs).")] = None,
    classes: Annotated[Path | None, typer.Option(help="classes.txt replacing the dataset's class names.")] = None,
    backbone: Annotated[str, typer.Option(help="resnet101, resnet50, efficientnet_lite0, deit_s, deit_t or a timm name.")] = "resnet101",
    pretrained: Annotated[bool, typer.Option(help="Start from ImageNet weights (efficientnet_lite0: bundled, offline).")] = False,
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights file (state dict).")] = None,
    output_stride: Annotated[int, typer.Option(help="CNN output stride: 8 or 16.")] = 16,
    aspp_channels: Annotated[int, typer.Option(help="Width of the ASPP head and decoder.")] = 256,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Images per step per process.")] = 8,
    crop: Annotated[int, typer.Option(help="Square training crop (padding labelled 255).")] = 321,
    lr: Annotated[float, typer.Option(help="Backbone learning rate (head: 10x), SGD, poly decay.")] = 0.007,
    img_size: Annotated[int, typer.Option(help="Transformer backbones: position-embedding grid size.")] = 224,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision (CUDA only).")] = True,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from <out>/last.pt.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train the segmentation network on pseudo masks (ignore 255, random scale/crop/flip, poly LR)."""
    from usage_cli.progress import log
    from usage_cli.stages.train_seg import TrainSegConfig, run

    cfg = TrainSegConfig(
        masks=masks, root=root, out=out, dataset=dataset, split=split, split_file=split_file, classes_file=classes,
        backbone=backbone, pretrained=pretrained, weights=weights, output_stride=output_stride, img_size=img_size,
        aspp_channels=aspp_channels,
        epochs=epochs, batch_size=batch_size, crop=crop, lr=lr, device=device, amp=amp, workers=workers, seed=seed,
        resume=resume, quiet=quiet,
    )  # fmt: skip
    log(f"train-seg: wrote {run(cfg)}", quiet)
