"""Gather several ``metrics.json`` files (from ``usage evaluate``) into one table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from usage_cli.errors import ArtifactError


@dataclass(frozen=True)
class ReportConfig:
    metrics: tuple[Path, ...]
    out: Path | None = None


def load_rows(paths: tuple[Path, ...]) -> list[dict]:
    rows = []
    for p in paths:
        try:
            m = json.loads(Path(p).read_text())
        except FileNotFoundError as e:
            raise ArtifactError(f"{p}: metrics file not found; run `usage evaluate --out {p}` first") from e
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{p}: not a metrics.json ({e})") from e
        if not {"miou", "fpr", "fnr"} <= m.keys():
            raise ArtifactError(f"{p}: not a usage metrics.json (no miou/fpr/fnr keys)")
        rows.append(
            {
                "name": Path(p).stem,
                "split": m.get("split", "?"),
                "miou": m["miou"],
                "fpr": m["fpr"],
                "fnr": m["fnr"],
                "threshold": m.get("threshold"),
                "num_images": m.get("num_images"),
                "empty_seeds": m.get("empty_seeds"),  # seed stores only
            }
        )
    return rows


def render(rows: list[dict]) -> Table:
    table = Table(title="usage: seed / pseudo-mask / segmentation quality")
    with_empty = any(r.get("empty_seeds") for r in rows)
    for col in ("artifact", "split", "images", "mIoU %", "FPR %", "FNR %", "bg thr") + (("empty seeds",) if with_empty else ()):
        # the artifact name never wraps: "seeds-cam-train" and "seeds-usage-train" must stay apart
        table.add_column(col, justify="left" if col in ("artifact", "split") else "right", no_wrap=col == "artifact")
    for r in rows:
        thr = "" if r["threshold"] is None else f"{r['threshold']:.2f}"
        cells = [r["name"], str(r["split"]), str(r["num_images"] or ""), f"{r['miou']:.1f}", f"{r['fpr']:.1f}", f"{r['fnr']:.1f}", thr]
        table.add_row(*cells, *([_empty_cell(r.get("empty_seeds"))] if with_empty else []))
    return table


def _empty_cell(empty: dict | None) -> str:
    """Empty seed maps / present-class maps, yellow when any (blank for label-map rows)."""
    if not empty:
        return ""
    text = f"{empty['maps']}/{empty['pairs']}"
    return f"[yellow]{text}[/]" if empty["maps"] else text


def run(cfg: ReportConfig) -> list[dict]:
    rows = load_rows(cfg.metrics)
    Console().print(render(rows))
    if cfg.out is not None:
        from usage_cli.artifacts.atomic import write_text_atomic

        write_text_atomic(cfg.out, json.dumps(rows, indent=2) + "\n")
    return rows
