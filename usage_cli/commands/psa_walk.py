"""``usage psa-walk``: seeds + a trained AffinityNet -> pseudo masks (PSA step 3, random walk)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import Classes, Dataset, Root, SplitFile, runtime_options
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.presets import REFINE_PSA, preset_help, refine_psa_preset_help
from usage_cli.runtime import DEFAULTS, Runtime


@runtime_options("psa-walk")
def command(
    ctx: typer.Context,
    seeds: Annotated[Path | None, typer.Option(help="Seed store from `usage gen-seeds` (seeds.h5) covering --split. Required (here or in --config).")] = None,
    affinity: Annotated[Path | None, typer.Option(help="A trained AffinityNet (affinity.pt of `usage train-aff` or `usage refine-psa`). Required (here or in --config).")] = None,
    root: Root = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: <id>.png masks, manifest.json. Required (here or in --config).")] = None,
    dataset: Dataset = "voc",
    split: Annotated[str, typer.Option(help="Split to write masks for.")] = "train_aug",
    split_file: SplitFile = None,
    classes: Classes = None,
    preset: Annotated[str, typer.Option(help=refine_psa_preset_help())] = "auto",
    beta: Annotated[float | None, typer.Option(help=preset_help("beta", "Affinity sharpening power.", REFINE_PSA))] = None,
    logt: Annotated[int | None, typer.Option(help=preset_help("logt", "log2 of the number of walk steps.", REFINE_PSA))] = None,
    bg_mode: Annotated[str | None, typer.Option(help=preset_help("bg_mode", "Walk background: power or const.", REFINE_PSA))] = None,
    bg_power: Annotated[float | None, typer.Option(help=preset_help("bg_power", "Background (1-max)^power in the walk.", REFINE_PSA))] = None,
    bg_const: Annotated[float | None, typer.Option(help=preset_help("bg_const", "Constant background score in the walk.", REFINE_PSA))] = None,
    walk_norm: Annotated[str | None, typer.Option(help=preset_help("walk_norm", "The walked class scores before the arg-max: none (as walked), class-max (each / its max, as the seeds) or max (all / their joint max, IRN).", REFINE_PSA))] = None,
    radius: Annotated[int, typer.Option(help="Affinity radius on the feature grid.")] = 5,
    walk: Annotated[str, typer.Option(help="Random walk: auto, dense (GPU) or local (low memory).")] = "auto",
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Walk seeds with a trained AffinityNet's affinities (PSA step 3) into pseudo-mask PNGs."""
    from usage_cli.config import apply_cli_config
    from usage_cli.progress import log
    from usage_cli.stages.psa_walk import PsaWalkConfig, resolve, run

    cfg = PsaWalkConfig(
        seeds=seeds, affinity=affinity, root=root, out=out, dataset=dataset, split=split, split_file=split_file,
        classes_file=classes, preset=preset, beta=beta, logt=logt, bg_mode=bg_mode, bg_power=bg_power, bg_const=bg_const, walk_norm=walk_norm,
        radius=radius, walk=walk, runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config, resolve=resolve)
    res = run(cfg)
    log(f"psa-walk: wrote {res['images']} masks to {res['out']}", cfg.runtime.quiet)
