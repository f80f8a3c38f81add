"""``usage evaluate``: mIoU / FPR / FNR of seeds, pseudo masks or predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import data_options, runtime_options
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.dataspec import DataSpec
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Split to score.")
@runtime_options(
    "evaluate", workers="Worker processes for decoding and counting.", quiet="Print only the summary line.",
    force="Score a prediction made from another data set than the one given (same ids, other images or labels); the metrics record it.",
)
def command(
    ctx: typer.Context,
    pred: Annotated[Path | None, typer.Option(help="Folder of label PNGs (<id>.png) or a seeds.h5 file. Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="val"),
    metric: Annotated[str, typer.Option(help="Comma-separated metrics to show: miou,fpr,fnr.")] = "miou,fpr,fnr",
    out: Annotated[Path | None, typer.Option(help="Write metrics.json here.")] = None,
    bg_thresholds: Annotated[str, typer.Option(help="Seeds: background thresholds to sweep, start:stop:step or a list.")] = "0.00:0.95:0.01",
    bg_threshold: Annotated[float | None, typer.Option(help="Seeds: one fixed background threshold (no tuning on ground truth).")] = None,
    bg_power: Annotated[float | None, typer.Option(help="Seeds: PSA/IRN background (1-max)^ALPHA instead of a threshold.")] = None,
    allow_missing: Annotated[bool, typer.Option(help="Count ids without prediction as all background.")] = False,
    runtime: Runtime = DEFAULTS,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Score predictions against the ground-truth masks: one confusion matrix over the split."""
    from usage_cli.config import apply_cli_config
    from usage_cli.metrics.report import print_metrics
    from usage_cli.stages.evaluate import EvaluateConfig, run

    cfg = EvaluateConfig(
        data=data, pred=pred, metrics=tuple(m.strip() for m in metric.split(",") if m.strip()), out=out, bg_thresholds=bg_thresholds,
        bg_threshold=bg_threshold, bg_power=bg_power, allow_missing=allow_missing, runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config)
    print_metrics(run(cfg), quiet=cfg.runtime.quiet)
