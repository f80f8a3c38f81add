"""``usage report``: one table from several metrics.json files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    metrics: Annotated[list[Path], typer.Argument(help="metrics.json files written by `usage evaluate --out`.")],
    out: Annotated[Path | None, typer.Option(help="Also write the rows as JSON here.")] = None,
) -> None:
    """Print seed / mask / segmentation metrics of several runs as one table."""
    from usage_cli.stages.report import ReportConfig, run

    run(ReportConfig(metrics=tuple(metrics), out=out))
