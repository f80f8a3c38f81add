"""``usage psa-labels``: seeds -> confident labels (PSA step 1, dense CRF), a label-PNG folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import data_options, runtime_options
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.dataspec import DataSpec
from usage_cli.presets import REFINE_PSA, preset_help, refine_psa_preset_help
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Split to label (the one AffinityNet trains on).")
@runtime_options("psa-labels", workers="CRF worker processes.")
def command(
    ctx: typer.Context,
    seeds: Annotated[Path | None, typer.Option(help="Seed store from `usage gen-seeds` (seeds.h5). Required (here or in --config).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: <id>.png confident labels, manifest.json. Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="train_aug"),
    preset: Annotated[str, typer.Option(help=refine_psa_preset_help())] = "auto",
    crf_la: Annotated[float | None, typer.Option(help=preset_help("crf_la", "Low background power for confident foreground.", REFINE_PSA))] = None,
    crf_ha: Annotated[float | None, typer.Option(help=preset_help("crf_ha", "High background power for confident background.", REFINE_PSA))] = None,
    crf: Annotated[bool, typer.Option(help="Dense CRF on the confident labels.")] = True,
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Confident labels from seeds (PSA step 1): a low and a high background power, each refined by a dense CRF."""
    from usage_cli.config import apply_cli_config
    from usage_cli.progress import log
    from usage_cli.stages.psa_labels import PsaLabelsConfig, resolve, run

    cfg = PsaLabelsConfig(
        data=data, seeds=seeds, out=out, preset=preset, crf_la=crf_la, crf_ha=crf_ha, crf=crf, runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config, resolve=resolve)
    res = run(cfg)
    log(f"psa-labels: wrote {res['images']} confident labels to {res['out']}", cfg.runtime.quiet)
