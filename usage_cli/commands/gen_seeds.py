"""``usage gen-seeds``: seed areas from a trained classifier into seeds.h5."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    ckpt: Annotated[Path, typer.Option(help="checkpoint.pt written by `usage train-cls`.")],
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    out: Annotated[Path, typer.Option(help="Output folder (seeds.h5, overlays/, manifest.json).")],
    dataset: Annotated[str, typer.Option(help="Dataset loader: voc or coco.")] = "voc",
    split: Annotated[str, typer.Option(help="Split to make seeds for.")] = "train",
    split_file: Annotated[Path | None, typer.Option(help="Explicit split list.")] = None,
    classes: Annotated[Path | None, typer.Option(help="classes.txt replacing the dataset's class names.")] = None,
    scales: Annotated[str, typer.Option(help="Comma-separated input scales.")] = "1.0,0.5,1.5,2.0",
    flip: Annotated[bool, typer.Option(help="Add horizontally flipped views.")] = True,
    refine: Annotated[str, typer.Option(help="patch-affinity | none | auto (patch-affinity for transformers).")] = "auto",
    affinity_layers: Annotated[int, typer.Option(help="Layers summed for the patch affinity.")] = 12,
    source: Annotated[str, typer.Option(help="cam | attn (class-to-patch attention x CAM, mct) | auto.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images of one size batched together (on a GPU: per forward pass; the CPU runs one view at a time, faster there).")] = 8,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    overlays: Annotated[int, typer.Option(help="Write overlay PNGs for this many images.")] = 8,
    overlay_threshold: Annotated[float, typer.Option(help="Background threshold of the overlays' seed column.")] = 0.3,
    force: Annotated[bool, typer.Option(help="Recompute everything (ignore an unfinished run).")] = False,
    quiet: Annotated[bool, typer.Option()] = False,
) -> None:
    """Multi-scale + flip seed maps of the present classes, normalised to [0, 1], in a resumable HDF5 file."""
    from usage_cli.errors import ConfigError
    from usage_cli.stages.gen_seeds import GenSeedsConfig, run

    try:
        scale_list = tuple(float(s) for s in scales.split(",") if s.strip())
    except ValueError as e:
        raise ConfigError(f"--scales must be comma-separated numbers, got '{scales}'") from e
    cfg = GenSeedsConfig(
        ckpt=ckpt, dataset=dataset, root=root, split=split, out=out, split_file=split_file, classes_file=classes,
        scales=scale_list, flip=flip, refine=refine, affinity_layers=affinity_layers, source=source, batch_size=batch_size,
        workers=workers, device=device, overlays=overlays, overlay_threshold=overlay_threshold, force=force, quiet=quiet,
    )  # fmt: skip
    typer.echo(f"gen-seeds: wrote {run(cfg)}")
