"""``usage predict-seg``: label PNGs of a split from a segmentation checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    ckpt: Annotated[Path, typer.Option(help="checkpoint.pt written by `usage train-seg`.")],
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    out: Annotated[Path, typer.Option(help="Folder for <id>.png label maps and manifest.json.")],
    dataset: Annotated[str, typer.Option(help="Dataset loader: voc or coco.")] = "voc",
    split: Annotated[str, typer.Option(help="Split to predict.")] = "val",
    split_file: Annotated[Path | None, typer.Option(help="Explicit split list (bare ids or PSA pairs).")] = None,
    classes: Annotated[Path | None, typer.Option(help="classes.txt replacing the dataset's class names.")] = None,
    scales: Annotated[str, typer.Option(help="Comma-separated test scales, e.g. 0.5,1,1.5.")] = "1",
    flip: Annotated[bool, typer.Option(help="Also predict the mirrored image and fuse.")] = True,
    fuse: Annotated[str, typer.Option(help="Fuse view probabilities by mean or max.")] = "mean",
    crf: Annotated[bool, typer.Option(help="Dense-CRF post-processing (needs pydensecrf2).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[int, typer.Option(help="CRF worker processes.")] = 2,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Predict segmentation label maps (multi-scale + flip, optional CRF) as palette PNGs."""
    from usage_cli.algorithms.seg_infer import parse_scales
    from usage_cli.errors import ConfigError
    from usage_cli.progress import log
    from usage_cli.stages.predict_seg import PredictSegConfig, run

    try:
        scale_list = parse_scales(scales)
    except ValueError as e:
        raise ConfigError(f"--scales: {e}") from e
    cfg = PredictSegConfig(
        ckpt=ckpt, root=root, out=out, dataset=dataset, split=split, split_file=split_file, classes_file=classes,
        scales=scale_list, flip=flip, fuse=fuse, crf=crf, device=device, workers=workers, quiet=quiet,
    )  # fmt: skip
    s = run(cfg)
    log(f"predict-seg: {s['images']} label maps in {s['out']} ({s['skipped']} kept from an interrupted run)", quiet)
