"""The page's figures per split (threshold curves, per-class bars: ``split_figures``), and its
Training and Per-image change sections (HTML, and the figures of the first).

``new_sections`` is what the report stage calls: ``training_figures`` draws one figure per training
stage found (the classifiers, the CAM baseline among them, then AffinityNet, then the segmentation
network), every run of that stage overlaid; ``training_html`` and ``changes_html`` write the two
sections of ``index.html``; the whole per-image table goes into ``per-image.csv`` beside it.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from usage_cli.report.changes import KINDS, ChangeTable, records, to_csv
from usage_cli.report.figures import (
    class_bars_figure,
    class_order,
    curve_of,
    save_png,
    threshold_figure,
    training_figure,
)
from usage_cli.report.inputs import Entry
from usage_cli.report.page import FigureRef, figure_html
from usage_cli.report.training import (
    KEY_HELP,
    TRAINING_STAGES,
    TrainingRun,
    describe,
    find_training_runs,
    keys_to_draw,
    last_values,
)

TOP = 20  # images listed per split on the page (the CSV has them all)
LOW_KEPT = 90.0  # a kept share below this is marked
PER_IMAGE_CSV = "per-image.csv"  # the whole per-image table, in the page's folder


def new_sections(entries: list[Entry], tables: list[ChangeTable], run_dirs: list[Path], out: Path, figures: dict) -> tuple[list[TrainingRun], dict]:
    """The training runs found, and the HTML of the Training and Per-image change sections (keyword
    arguments of ``page.render_page``); their figures and ``per-image.csv`` are written into ``out``."""
    runs = find_training_runs(entries, run_dirs)
    refs = training_figures(runs, out, figures)
    if tables:
        (out / PER_IMAGE_CSV).write_text(to_csv(records(tables)), encoding="utf-8")
    return runs, {"training": training_html(refs), "changes": changes_html(tables, PER_IMAGE_CSV if tables else None)}


def training_figures(runs: list[TrainingRun], out: Path, figures: dict | None = None) -> list[FigureRef]:
    """Per training stage with a log: its curves (``training-<stage>.png`` in ``out``), captioned
    with each run's epochs, the numbers at the last epoch one click away; runs without a log are
    named in the caption of their stage (or alone, when no run of it has one)."""
    refs = []
    for stage, what in TRAINING_STAGES.items():
        group = [r for r in runs if r.stage == stage]
        if not group:
            continue
        drawn = [r for r in group if r.epochs]
        caption = "; ".join(describe(r) for r in group) + "."
        keys = keys_to_draw(drawn)
        if not drawn or not keys:
            refs.append(FigureRef(f"{what} ({stage})", "", caption))
            continue
        fig = training_figure(drawn, keys, f"{what} ({stage}): {', '.join(r.label for r in drawn)}", KEY_HELP)
        name = f"training-{stage}.png"
        save_png(fig, out / name)
        if figures is not None:
            figures[name[:-4]] = fig
        refs.append(FigureRef(f"{what} ({stage})", name, caption, table=last_values(drawn, keys_to_draw(drawn, {"epoch"}))))
    return refs


def training_html(refs: list[FigureRef]) -> str:
    if not refs:
        return ""
    out = ['<h2 id="training">Training</h2>',
           '<p class="sub">Each training stage behind the artifacts, from its <code>log.jsonl</code> (one point an epoch; a '
           "resumed run continues its line): loss terms, learning rate and, where logged, val mAP and the AA diagnostics. "
           "Runs of one stage share a figure, one colour each.</p>"]  # fmt: skip
    for ref in refs:
        if ref.src:
            out.append(figure_html(ref))
        else:
            out += [f"<h3>{escape(ref.split)}</h3>", f'<p class="sub">{escape(ref.caption)} Nothing to draw.</p>']
    return "\n".join(out)


def changes_html(tables: list[ChangeTable], csv_name: str | None) -> str:
    """The section, for the splits whose chain has two artifacts or more (a stage to measure)."""
    tables = [t for t in tables if len(t.chain) > 1]
    if not tables:
        return ""
    link = f' All images: <a href="{escape(csv_name)}">{escape(csv_name)}</a>.' if csv_name else ""
    out = ['<h2 id="changes">Per-image change</h2>',
           '<p class="sub">What each stage did to each image, without ground truth: the foreground area (% of the image) of '
           "the seeds (cut at their own threshold), the pseudo masks and the predictions, and the share of the previous "
           "artifact's pixels whose class each stage kept. Sorted by change (100 minus the lowest kept share), most changed "
           f"first; per-image mIoU beside them where the artifact was scored.{link}</p>"]  # fmt: skip
    for t in tables:
        out.append(f"<h3>{escape(t.split)}</h3>")
        out.append(_most_changed(t))
        out.append(_table(t, t.rows[:TOP], f"the {min(TOP, len(t.rows))} most changed of {len(t.rows)} images"))
    return "\n".join(out)


def _most_changed(t: ChangeTable) -> str:
    kinds = [k for k in KINDS[1:] if k in t.chain]
    chain = " → ".join(f"{escape(t.chain[k])}" for k in t.chain)
    thr = f" (seeds cut at {t.seed_threshold:.2f}, their own threshold)" if t.seed_threshold is not None else ""
    items = []
    for k in kinds:
        prev = list(t.chain)[list(t.chain).index(k) - 1]
        worst = t.most_changed(k)
        ids = ", ".join(f"<code>{escape(r.id)}</code> ({r.kept[k]:.0f} %)" for r in worst)
        items.append(f"<li><b>{escape(t.made_by.get(k, k))}</b> ({escape(t.chain[prev])} → {escape(t.chain[k])}) changed most: "
                     f"{ids or 'none'}</li>")  # fmt: skip
    return f'<p class="sub">Chain: {chain}{thr}.</p>' + (f"<ul>{''.join(items)}</ul>" if items else "")


def _table(t: ChangeTable, rows, caption: str) -> str:
    kinds = list(t.chain)
    later = kinds[1:]
    scored = [k for k in kinds if any(r.score.get(k) is not None for r in t.rows)]
    head = ["image", "change %", *(f"fg % {t.chain[k]}" for k in kinds), *(f"kept % {t.chain[k]}" for k in later),
            *(f"mIoU {t.chain[k]}" for k in scored)]  # fmt: skip
    out = [f'<table class="changes"><caption class="sub">{escape(caption)}</caption><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [f"<td>{escape(r.id)}</td>", _num(r.change)]
        cells += [_num(r.area.get(k)) for k in kinds]
        cells += [_num(r.kept.get(k), warn=r.kept.get(k) is not None and r.kept[k] < LOW_KEPT) for k in later]
        cells += [_num(r.score.get(k)) for k in scored]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _num(v: float | None, warn: bool = False) -> str:
    return f'<td class="num{" warn" if warn else ""}">{"-" if v is None else f"{v:.1f}"}</td>'


def split_figures(by_split: dict[str, list[Entry]], tmp: Path, figures: dict) -> tuple[list[FigureRef], list[FigureRef]]:
    """Per split: the seed stores' threshold curves and the per-class IoU bars, saved as PNGs."""

    curves, bars = [], []
    for split, entries in by_split.items():
        scored = [e for e in entries if e.metrics is not None]
        found = [c for e in scored if (c := curve_of(e.name, e.metrics)) is not None]
        if found:
            fig = threshold_figure(found, f"{split}: seed metrics against the background threshold")
            name = f"curves-{_safe(split)}.png"
            save_png(fig, tmp / name)
            figures[f"curves-{split}"] = fig
            curves.append(FigureRef(split, name, f"{', '.join(c.name for c in found)}: mIoU, mean FPR and mean FNR (percent) "
                                                 "against the constant background score."))  # fmt: skip
        series = [(e.name, {k: v["iou"] for k, v in e.metrics["per_class"].items()}) for e in scored if e.metrics.get("per_class")]
        if series:
            how = f"sorted by {series[-1][0]} − {series[0][0]}, largest gain first" if len(series) > 1 else "worst first"
            fig = class_bars_figure(series, f"{split}: per-class IoU ({how})")
            name = f"classes-{_safe(split)}.png"
            save_png(fig, tmp / name)
            figures[f"classes-{split}"] = fig
            order, gaps = class_order(series)
            head = ("class", *(n for n, _ in series), *(("gap",) if len(series) > 1 else ()))
            absent = [c for c in dict.fromkeys(k for _, pc in series for k in pc) if c not in order]
            body = tuple((c, *(_pct(pc.get(c)) for _, pc in series), *((_pct(g, signed=True),) if len(series) > 1 else ()))
                         for c, g in zip(order + absent, gaps + [None] * len(absent), strict=True))  # fmt: skip
            caption = f"IoU per class (percent), {how}." + (f" Not in this split: {', '.join(absent)}." if absent else "")
            bars.append(FigureRef(split, name, caption, table=(head, *body)))
    return curves, bars


def _pct(v: float | None, signed: bool = False) -> str:
    return "-" if v is None else (f"{v:+.1f}" if signed else f"{v:.1f}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)
