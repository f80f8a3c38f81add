"""Gather ``metrics.json`` files (from ``usage evaluate``) into one table and, with ``--html``, one page.

The page (``usage_cli.report``) shows the table, each artifact's manifest, the curves of the training
runs behind them, the seed stores' threshold curves, per-class IoU bars, what each stage changed in
each image (no ground truth needed) and a gallery; it is written into a temporary folder that replaces
the output folder only when complete. ``--format csv|json`` prints the per-image table instead of the
metrics table.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rich.console import Console
from rich.table import Table

from usage_cli import __version__
from usage_cli.artifacts.atomic import atomic_dir, write_text_atomic
from usage_cli.artifacts.claims import Output, json_is, owned_files, owns_outputs
from usage_cli.artifacts.manifest import build_manifest, write_manifest
from usage_cli.artifacts.metrics_file import stale_inputs
from usage_cli.artifacts.replaceable import check_replaceable_folder
from usage_cli.data.records import voc_palette
from usage_cli.errors import ArtifactError, check_options
from usage_cli.progress import log
from usage_cli.report import gallery  # render_gallery through the module: a test makes it fail
from usage_cli.report.changes import by_image, change_tables, records, to_csv, to_json
from usage_cli.report.figures import require_matplotlib
from usage_cli.report.gallery import pick_ids
from usage_cli.report.inputs import Entry, check_datasets, load_entries, open_datasets
from usage_cli.report.page import no_gt_scores, render_page
from usage_cli.report.sections import new_sections, split_figures

FORMATS = ("table", "csv", "json")  # what stdout gets: the metrics table, or the per-image table
ORDERS = ("worst", "changed")  # the gallery's order


@dataclass(frozen=True)
class ReportConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out", "file", "a usage report table", json_is(lambda doc: is_rows_file(doc))),
                                            "html": Output("--html", "page", check=lambda p: check_replaceable_folder(p, "report", "--html"))}  # checked first
    metrics: tuple[Path, ...]  # metrics.json files and/or RUN_DIRs
    out: Path | None = None
    html: Path | None = None  # write the page into this folder
    gallery: int = 24  # images per split in the gallery (0: none)
    ids: tuple[str, ...] = ()  # show these images instead
    force: bool = False  # draw artifacts over a data set other than the one they were made from
    format: str = "table"  # stdout: the metrics table, or the per-image table as csv / json (report/changes.py)
    order: str = "worst"  # the gallery: worst first (per-image mIoU), or most changed first (no ground truth)


@dataclass
class HtmlReport:
    """What ``--html`` wrote: the page, and the figures and galleries on it (tests read their data)."""

    index: Path
    figures: dict = field(default_factory=dict)  # "curves-<split>" / "classes-<split>" / "training-<stage>" -> matplotlib Figure
    galleries: list = field(default_factory=list)
    changes: list = field(default_factory=list)  # report.changes.ChangeTable per split
    training: list = field(default_factory=list)  # report.training.TrainingRun found


def _row(name: str, m: dict) -> dict:
    return {
        "name": name,
        "split": m.get("split", "?"),
        "miou": m["miou"],
        "fpr": m["fpr"],
        "fnr": m["fnr"],
        "threshold": m.get("threshold"),
        "num_images": m.get("num_images"),
        "empty_seeds": m.get("empty_seeds"),  # seed stores only
        "pipeline": m.get("pipeline"),  # seed stores with a threshold chosen without ground truth
        "stale": sorted(stale_inputs(m)),  # inputs changed since they were scored: the scores are not of them
    }


def render(rows: list[dict]) -> Table:
    table = Table(title="usage: seed / pseudo-mask / segmentation quality")
    with_empty = any(r.get("empty_seeds") for r in rows)
    with_auto = any(r.get("pipeline") for r in rows)
    cols = ("artifact", "split", "images", "mIoU %", "FPR %", "FNR %", "bg thr")
    cols += ("no-GT thr", "no-GT mIoU %", "gain") if with_auto else ()
    for col in cols + (("empty seeds",) if with_empty else ()):
        # the artifact name never wraps: "seeds-cam-train" and "seeds-usage-train" must stay apart
        table.add_column(col, justify="left" if col in ("artifact", "split") else "right", no_wrap=col == "artifact")
    for r, (score, gain) in zip(rows, no_gt_scores(rows), strict=True):
        thr = "" if r["threshold"] is None else f"{r['threshold']:.2f}"
        cells = [r["name"] + (" [red](stale)[/]" if r.get("stale") else ""), str(r["split"]), str(r["num_images"] or ""), f"{r['miou']:.1f}", f"{r['fpr']:.1f}", f"{r['fnr']:.1f}", thr]
        if with_auto:
            auto = (r.get("pipeline") or {}).get("threshold")
            cells += ["" if auto is None else f"{auto:.2f}", "" if score is None else f"{score:.1f}", _gain_cell(gain)]
        table.add_row(*cells, *([_empty_cell(r.get("empty_seeds"))] if with_empty else []))
    return table


def _gain_cell(gain: float | None) -> str:
    if gain is None:
        return ""
    text = f"{gain:+.1f}"
    return f"[red]{text}[/]" if gain < 0 else text


def _empty_cell(empty: dict | None) -> str:
    """Empty seed maps / present-class maps, yellow when any (blank for label-map rows)."""
    if not empty:
        return ""
    text = f"{empty['maps']}/{empty['pairs']}"
    return f"[yellow]{text}[/]" if empty["maps"] else text


@owns_outputs
def run(cfg: ReportConfig) -> list[dict]:
    check_options([(0 <= cfg.gallery <= 10_000, f"--gallery must be in 0..10000 images per split, got {cfg.gallery}"),
                   (cfg.format in FORMATS, f"--format must be one of {', '.join(FORMATS)}, got {cfg.format!r}"),
                   (cfg.order in ORDERS, f"--order must be one of {', '.join(ORDERS)}, got {cfg.order!r}")])  # fmt: skip
    if cfg.html is not None:
        require_matplotlib()  # before any work: say which extra to install
    entries = load_entries(cfg.metrics)
    plan = plan_html(entries, cfg) if cfg.html is not None else None  # its refusals come before any output
    rows = [_row(e.name, e.metrics) for e in entries if e.metrics is not None]
    for e in entries:  # a score is of the file it was computed from: say when that file changed since
        for name, what in stale_inputs(e.metrics or {}).items():
            log(f"[yellow]report: {e.name}: stale: its {name} {what} — rerun `usage evaluate` for current figures[/]")
    # a pipe or a log file has no width: rich would fold the table to 80 columns and cut every cell;
    # with --format csv / json stdout is the per-image table alone, and the rest goes to stderr
    console = Console(stderr=cfg.format != "table", width=None if sys.stdout.isatty() else 200)
    if cfg.format != "table":
        recs = records(change_tables(_by_split(entries)))
        sys.stdout.write(to_csv(recs) if cfg.format == "csv" else to_json(recs))
    elif rows:
        console.print(render(rows))
    else:
        console.print(f"report: no metrics files, {len(entries)} artifact(s) without ground-truth scores")
    if cfg.out is not None:
        write_text_atomic(cfg.out, json.dumps(rows, indent=2) + "\n")
    if cfg.html is not None:
        report = write_html(entries, rows, cfg, plan)
        console.print(f"report: {report.index}", highlight=False, soft_wrap=True)
    return rows


def plan_html(entries: list[Entry], cfg: ReportConfig) -> tuple[dict, dict, list[str]]:
    """Where the page goes (a new folder, or one holding only an earlier report's files, which its
    manifest lists), its splits and their datasets, each entry made from the one it is drawn over:
    (entries by split, datasets by split, notes for the page)."""
    check_replaceable_folder(Path(cfg.html), "report", "--html")
    by_split = _by_split(entries)
    datasets, notes = open_datasets(by_split)
    notes += check_datasets(by_split, datasets, cfg.force)
    return by_split, datasets, notes


def _by_split(entries: list[Entry]) -> dict[str, list[Entry]]:
    return {s: [e for e in entries if e.split == s] for s in dict.fromkeys(e.split for e in entries)}


def write_html(entries: list[Entry], rows: list[dict], cfg: ReportConfig, plan: tuple | None = None) -> HtmlReport:
    """Figures, gallery and page of ``entries`` into the folder ``cfg.html`` (replaced atomically)."""

    # 1. where it goes, which splits, which datasets (:func:`plan_html`, unless given), what each stage
    # changed in each image, which images
    out = Path(cfg.html)
    by_split, datasets, notes = plan or plan_html(entries, cfg)
    tables = change_tables(by_split)
    changes = by_image(tables)
    picks = pick_ids(by_split, datasets, cfg.gallery, cfg.ids, changes=changes if cfg.order == "changed" else None)
    report = HtmlReport(index=out / "index.html", changes=tables)
    try:
        with atomic_dir(out) as tmp:
            # 2. curves and bars per split; the training curves, the per-image table; 3. galleries; 4. the page
            curves, bars = split_figures(by_split, tmp, report.figures)
            report.training, sections = new_sections(entries, tables, [Path(p) for p in cfg.metrics if Path(p).is_dir()], tmp, report.figures)
            for split, ids in picks.items():
                report.galleries.append(gallery.render_gallery(split, ids, by_split[split], datasets[split], tmp / "gallery",
                                                               changes=changes.get(split), order=cfg.order))  # fmt: skip
            palette = next(iter(datasets.values())).meta.palette if datasets else tuple(voc_palette())
            html = _page(cfg, entries, rows, curves, bars, report.galleries, palette, notes, __version__, sections)
            (tmp / "index.html").write_text(html, encoding="utf-8")
            config = {"metrics": [str(p) for p in cfg.metrics], "gallery": cfg.gallery, "ids": list(cfg.ids), "force": cfg.force, "order": cfg.order}
            write_manifest(tmp, build_manifest("report", config, files=owned_files(tmp, ("*",))))  # what a rerun may replace
    except OSError as e:  # reading errors are UsageErrors already: this is the output folder
        raise ArtifactError(f"--html {out}: cannot write the report there ({e})") from e
    return report


def is_rows_file(doc) -> bool:
    """A table ``usage report --out`` wrote (the only file ``--out`` replaces): a list of metric rows."""
    return isinstance(doc, list) and all(isinstance(r, dict) and {"name", "miou"} <= r.keys() for r in doc)


def _page(cfg, entries, rows, curves, bars, galleries, palette, notes, version, sections) -> str:
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return render_page(
        title="usage report", sources=[str(p) for p in cfg.metrics], created=created, version=version, rows=rows,
        entries=entries, curves=curves, bars=bars, galleries=galleries, palette=palette, notes=notes, **sections,
    )  # fmt: skip
