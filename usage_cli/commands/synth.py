"""``usage synth``: the built-in synthetic WSSS dataset (VOC layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import runtime_options
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.runtime import DEFAULTS, Runtime


@runtime_options("synth", seed="Random seed (same seed, same dataset).", force="Overwrite a dataset made with other settings.")
def command(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="Dataset root to write (VOC layout). Required (here or in --config).")] = None,
    train: Annotated[int, typer.Option(help="Number of training images.")] = 96,
    val: Annotated[int, typer.Option(help="Number of validation images.")] = 32,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    classes: Annotated[int, typer.Option(help="Number of object classes, 2..20 (the first six are the default set).")] = 6,
    train_aug: Annotated[int, typer.Option(help="More images for the split train_aug only (train plus these, as VOC's train_aug is train plus SBD): the classifier's training set.")] = 0,
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Write a miniature WSSS dataset: discriminative parts, context bias, several objects per image."""
    from usage_cli.config import apply_cli_config
    from usage_cli.progress import log
    from usage_cli.stages.synth import SynthConfig, run

    cfg = SynthConfig(out=out, train=train, val=val, size=size, classes=classes, train_aug=train_aug, runtime=runtime)
    cfg = apply_cli_config(ctx, cfg, config, print_config)
    stats = run(cfg)
    log(f"synth: {stats['images']} images ({stats['empty']} without object, {stats['objects']} objects) in {cfg.out}")
