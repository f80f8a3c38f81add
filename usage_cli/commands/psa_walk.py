"""``usage psa-walk``: seeds + a trained AffinityNet -> pseudo masks (PSA step 3, random walk)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import (
    Beta,
    BgConst,
    BgMode,
    BgPower,
    Logt,
    Radius,
    Walk,
    WalkNorm,
    data_options,
    runtime_options,
)
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.dataspec import DataSpec
from usage_cli.presets import refine_psa_preset_help
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Split to write masks for.")
@runtime_options("psa-walk")
def command(
    ctx: typer.Context,
    seeds: Annotated[Path | None, typer.Option(help="Seed store from `usage gen-seeds` (seeds.h5) covering --split. Required (here or in --config).")] = None,
    affinity: Annotated[Path | None, typer.Option(help="A trained AffinityNet (affinity.pt of `usage train-aff` or `usage refine-psa`). Required (here or in --config).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: <id>.png masks, manifest.json. Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="train_aug"),
    preset: Annotated[str, typer.Option(help=refine_psa_preset_help())] = "auto",
    beta: Beta = None,
    logt: Logt = None,
    bg_mode: BgMode = None,
    bg_power: BgPower = None,
    bg_const: BgConst = None,
    walk_norm: WalkNorm = None,
    radius: Radius = 5,
    walk: Walk = "auto",
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Walk seeds with a trained AffinityNet's affinities (PSA step 3) into pseudo-mask PNGs."""
    from usage_cli.config import apply_cli_config
    from usage_cli.progress import log
    from usage_cli.stages.psa_walk import PsaWalkConfig, resolve, run

    cfg = PsaWalkConfig(
        data=data, seeds=seeds, affinity=affinity, out=out, preset=preset, beta=beta, logt=logt, bg_mode=bg_mode, bg_power=bg_power, bg_const=bg_const, walk_norm=walk_norm,
        radius=radius, walk=walk, runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config, resolve=resolve)
    res = run(cfg)
    log(f"psa-walk: wrote {res['images']} masks to {res['out']}", cfg.runtime.quiet)
