"""``usage report``: one table (and, with ``--html``, one page) from metrics.json files or run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    metrics: Annotated[
        list[Path],
        typer.Argument(help="metrics.json files written by `usage evaluate --out`, or RUN_DIRs (their metrics/*.json and artifacts).", metavar="METRICS.json|RUN_DIR", show_default=False),
    ],
    out: Annotated[Path | None, typer.Option(help="Also write the rows as JSON here.")] = None,
    html: Annotated[
        Path | None,
        typer.Option(help="Also write a self-contained page here (a folder: index.html + images). Needs the `viz` extra (matplotlib)."),
    ] = None,
    gallery: Annotated[int, typer.Option(help="Gallery images per split with --html (half the worst, half a fixed sample); 0: none.")] = 24,
    ids: Annotated[
        list[str] | None,
        typer.Option("--ids", help="Gallery images to show instead (comma-separated and/or repeated)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="With --html: draw an artifact over the data set found even when it was made from another one (noted on the page).")
    ] = False,
    format: Annotated[
        str,
        typer.Option("--format", help="What to print: table (the metrics), or csv | json: the per-image table (foreground area of "
                     "seeds, masks and predictions, the share each stage kept, per-image mIoU where scored) instead."),
    ] = "table",
    order: Annotated[
        str, typer.Option(help="Gallery order with --html: worst (per-image mIoU, worst first) or changed (most changed by a stage first; no ground truth needed).")
    ] = "worst",
) -> None:
    """Print seed / mask / segmentation metrics of several runs as one table, optionally as an HTML page."""
    from usage_cli.stages.report import ReportConfig, run

    wanted = tuple(i.strip() for arg in ids or () for i in arg.split(",") if i.strip())
    run(ReportConfig(metrics=tuple(metrics), out=out, html=html, gallery=gallery, ids=wanted, force=force, format=format, order=order))
