"""``usage gen-seeds``: seed areas from a trained classifier into seeds.h5."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import data_options, runtime_options
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.dataspec import DataSpec
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Split to make seeds for.")
@runtime_options(
    "gen-seeds", workers="Image-decoding worker processes.",
    force="Recompute everything: ignore an unfinished run, replace a finished one of other options.",
)  # fmt: skip
def command(
    ctx: typer.Context,
    ckpt: Annotated[Path | None, typer.Option(help="checkpoint.pt written by `usage train-cls`. Required (here or in --config).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (seeds.h5, overlays/, manifest.json). Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="train"),
    scales: Annotated[str, typer.Option(help="Comma-separated input scales.")] = "1.0,0.5,1.5,2.0",
    flip: Annotated[bool, typer.Option(help="Add horizontally flipped views.")] = True,
    refine: Annotated[str, typer.Option(help="patch-affinity | none | auto (patch-affinity for a transformer trained from ImageNet weights, none otherwise).")] = "auto",
    normalise: Annotated[str, typer.Option(help="max (ReLU views, sum, / max) | minmax (ReLU views, sum, min-max) | raw-minmax (sum, min-max: no empty seeds) | auto (minmax after patch affinity, else max).")] = "auto",
    bg_threshold: Annotated[str, typer.Option(help="The seeds' foreground/background cut, computed from the seed maps alone (no ground truth) and recorded in the store for refine-psa and evaluate: auto | otsu | mean | a number in [0, 1].")] = "auto",
    affinity_layers: Annotated[int, typer.Option(help="Layers summed for the patch affinity.")] = 12,
    source: Annotated[str, typer.Option(help="cam | attn (class-to-patch attention x CAM, mct) | auto.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images of one size batched together (on a GPU: per forward pass; the CPU runs one view at a time, faster there).")] = 8,
    runtime: Runtime = DEFAULTS,
    overlays: Annotated[int, typer.Option(help="Write overlay PNGs for this many images.")] = 8,
    overlay_threshold: Annotated[float | None, typer.Option(help="Background threshold of the overlays' seed column (default: the store's --bg-threshold).")] = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Multi-scale + flip seed maps of the present classes, normalised to [0, 1], in a resumable HDF5 file."""
    from usage_cli.config import apply_cli_config
    from usage_cli.errors import ConfigError
    from usage_cli.progress import log
    from usage_cli.stages.gen_seeds import GenSeedsConfig, run

    try:
        scale_list = tuple(float(s) for s in scales.split(",") if s.strip())
    except ValueError as e:
        raise ConfigError(f"--scales must be comma-separated numbers, got '{scales}'") from e
    cfg = GenSeedsConfig(
        data=data, ckpt=ckpt, out=out, scales=scale_list, flip=flip, refine=refine, normalise=normalise, bg_threshold=bg_threshold, affinity_layers=affinity_layers, source=source, batch_size=batch_size,
        runtime=runtime, overlays=overlays, overlay_threshold=overlay_threshold,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config)
    log(f"gen-seeds: wrote {run(cfg)}", cfg.runtime.quiet)
