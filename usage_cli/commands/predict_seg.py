"""``usage predict-seg``: label PNGs of a split, or of a folder of new photos, from a segmentation checkpoint."""

from __future__ import annotations

from dataclasses import replace
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
    images: Annotated[Path | None, typer.Option(help="A folder of new photos to segment instead of a dataset: every image below it (subfolders too; no labels, split or masks). The same as --dataset images --root DIR; OUT also gets classes.txt and overlays/<id>.jpg (each photo beside its prediction, the classes named).")] = None,
    scales: Annotated[str, typer.Option(help="Comma-separated test scales, e.g. 0.5,1,1.5.")] = "1",
    flip: Annotated[bool, typer.Option(help="Also predict the mirrored image and fuse.")] = True,
    fuse: Annotated[str, typer.Option(help="Fuse view probabilities by mean or max.")] = "mean",
    crf: Annotated[bool, typer.Option(help="Dense-CRF post-processing (needs pydensecrf2).")] = False,
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Predict segmentation label maps (multi-scale + flip, optional CRF) as palette PNGs, for a split or for new photos (--images DIR)."""
    from usage_cli.algorithms.seg_infer import parse_scales
    from usage_cli.config import apply_cli_config
    from usage_cli.errors import ConfigError
    from usage_cli.progress import log
    from usage_cli.stages.predict_seg import PredictSegConfig, run

    if images is not None and data.root is not None:
        raise ConfigError(f"--images {images} and --root {data.root}: give one (--images is --dataset images --root DIR)")

    def new_photos(c):  # --images is a flag: it wins over a --config file's dataset keys too
        return c if images is None else replace(c, data=replace(c.data, dataset="images", root=images, split="images"))

    try:
        scale_list = parse_scales(scales)
    except ValueError as e:
        raise ConfigError(f"--scales: {e}") from e
    cfg = PredictSegConfig(
        data=data, ckpt=ckpt, out=out, scales=scale_list, flip=flip, fuse=fuse, crf=crf, runtime=runtime,
    )  # fmt: skip
    cfg = new_photos(apply_cli_config(ctx, new_photos(cfg), config, print_config, resolve=new_photos))
    s = run(cfg)
    seen = f"; to look at: {s['overlays']}" if s.get("overlays") else ""
    log(f"predict-seg: {s['images']} label maps in {s['out']} ({s['skipped']} kept from an interrupted run){seen}", cfg.runtime.quiet)
