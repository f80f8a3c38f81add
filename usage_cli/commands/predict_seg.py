"""``usage predict-seg``: label PNGs of a split from a segmentation checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import data_options, runtime_options
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.dataspec import DataSpec
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Split to predict.")
@runtime_options("predict-seg", workers="CRF worker processes.")
def command(
    ctx: typer.Context,
    ckpt: Annotated[Path | None, typer.Option(help="checkpoint.pt written by `usage train-seg`. Required (here or in --config).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for <id>.png label maps and manifest.json. Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="val"),
    scales: Annotated[str, typer.Option(help="Comma-separated test scales, e.g. 0.5,1,1.5.")] = "1",
    flip: Annotated[bool, typer.Option(help="Also predict the mirrored image and fuse.")] = True,
    fuse: Annotated[str, typer.Option(help="Fuse view probabilities by mean or max.")] = "mean",
    crf: Annotated[bool, typer.Option(help="Dense-CRF post-processing (needs pydensecrf2).")] = False,
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Predict segmentation label maps (multi-scale + flip, optional CRF) as palette PNGs."""
    from usage_cli.algorithms.seg_infer import parse_scales
    from usage_cli.config import apply_cli_config
    from usage_cli.errors import ConfigError
    from usage_cli.progress import log
    from usage_cli.stages.predict_seg import PredictSegConfig, run

    try:
        scale_list = parse_scales(scales)
    except ValueError as e:
        raise ConfigError(f"--scales: {e}") from e
    cfg = PredictSegConfig(
        data=data, ckpt=ckpt, out=out, scales=scale_list, flip=flip, fuse=fuse, crf=crf, runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config)
    s = run(cfg)
    log(f"predict-seg: {s['images']} label maps in {s['out']} ({s['skipped']} kept from an interrupted run)", cfg.runtime.quiet)
