"""Printing a metrics dict (from ``usage evaluate``) as a rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_metrics(result: dict, quiet: bool = False) -> None:
    console = Console()
    shown = result.get("metrics", ["miou", "fpr", "fnr"])
    cols = [("iou", "miou", "IoU %"), ("fpr", "fpr", "FPR %"), ("fnr", "fnr", "FNR %")]
    cols = [c for c in cols if c[1] in shown]
    thr = result.get("threshold")
    where = f" at background threshold {thr:.2f} ({result['threshold_mode']})" if thr is not None else ""
    line = "  ".join(f"m{label.split()[0]} {_fmt(result[key])}" for _, key, label in cols)
    summary = f"{result['pred']} on {result['split']} ({result['num_images']} images{', ' + str(result['num_missing']) + ' missing' if result['num_missing'] else ''}): {line}{where}"
    if not quiet:
        table = Table(title=f"{result['dataset']} / {result['split']}")
        table.add_column("class")
        for _, _, label in cols:
            table.add_column(label, justify="right")
        for name, row in result["per_class"].items():
            if row["iou"] is not None:
                table.add_row(name, *(_fmt(row[k]) for k, _, _ in cols))
        table.add_row("[bold]mean[/]", *(f"[bold]{_fmt(result[key])}[/]" for _, key, _ in cols))
        console.print(table)
    empty = result.get("empty_seeds") or {}
    if empty.get("maps"):  # shown even with --quiet: empty seeds never pass silently
        console.print(f"[yellow]{empty_seeds_line(empty)}[/]", highlight=False, soft_wrap=True)
    console.print(summary, highlight=False, soft_wrap=True)


def empty_seeds_line(empty: dict) -> str:
    """What a seed store's empty seeds (``metrics.json``'s ``empty_seeds``) mean, in one line."""
    return (
        f"empty seeds: {empty['maps']} of {empty['pairs']} present-class seed maps are all zero (in {empty['images']} images); "
        f"those classes are never predicted there: the classifier gave them no positive activation"
    )
