"""The report's plots, drawn with matplotlib (optional dependency group ``viz``).

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas (no pyplot, no global backend
state), returned to the caller so tests read their data, and saved with :func:`save_png`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usage_cli.errors import MissingDependencyError

VIZ_HINT = "usage report --html draws its plots with matplotlib: pip install 'usage-wsss[viz]' (or `make install`)"


def require_matplotlib():
    """A ``Figure`` factory on the Agg canvas, or a :class:`MissingDependencyError` naming the extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependencyError(VIZ_HINT) from e

    def agg_figure(**kw) -> Figure:
        fig = Figure(**kw)
        FigureCanvasAgg(fig)  # the Agg canvas on this figure only: pyplot's global backend is left alone
        return fig

    return agg_figure


@dataclass(frozen=True)
class Curve:
    """A seed store's metrics against the background threshold (percent), from its metrics.json."""

    name: str
    thresholds: np.ndarray
    miou: np.ndarray
    fpr: np.ndarray | None
    fnr: np.ndarray | None
    chosen: float | None
    own: float | None = None  # the store's own threshold (gen-seeds --bg-threshold auto), scored as `pipeline`
    own_at: dict | None = None  # its exact miou / fpr / fnr there (`pipeline`)


def curve_of(name: str, metrics: dict) -> Curve | None:
    """The threshold curve of a seed store's metrics (None for label maps or a fixed threshold)."""
    curve = metrics.get("curve")
    if not curve or len(curve) < 2:
        return None
    keys = sorted(curve, key=float)

    def values(key: str) -> np.ndarray | None:
        c = metrics.get(key)
        if not c or set(c) != set(curve):
            return None  # files from before FPR / FNR curves were recorded: mIoU only
        return np.array([np.nan if c[k] is None else c[k] for k in keys], float)

    return Curve(
        name=name,
        thresholds=np.array([float(k) for k in keys]),
        miou=values("curve"),
        fpr=values("curve_fpr"),
        fnr=values("curve_fnr"),
        chosen=metrics.get("threshold"),
        own=(metrics.get("pipeline") or {}).get("threshold"),
        own_at=metrics.get("pipeline"),
    )


def threshold_figure(curves: list[Curve], title: str):
    """mIoU | mean FPR | mean FNR against the background threshold, one colour per seed store, its
    chosen threshold marked (dotted line and dot) and its own no-ground-truth threshold, where the store
    records one (dashed line and cross)."""
    Figure = require_matplotlib()
    panels = [(label, key) for label, key in (("mIoU %", "miou"), ("mean FPR %", "fpr"), ("mean FNR %", "fnr"))
              if any(getattr(c, key) is not None for c in curves)]  # fmt: skip
    fig = Figure(figsize=(4.0 * len(panels), 3.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, key) in zip(axes, panels, strict=True):
        for i, c in enumerate(curves):
            y = getattr(c, key)
            if y is None:
                continue
            colour = f"C{i}"
            tag = c.name
            if c.chosen is not None:
                at = float(np.interp(c.chosen, c.thresholds, y))
                tag = f"{c.name} (t={c.chosen:.2f}: {at:.1f})"
                ax.axvline(c.chosen, color=colour, ls=":", lw=1)
                ax.scatter([c.chosen], [at], color=colour, s=22, zorder=3)
            if c.own is not None:
                exact = (c.own_at or {}).get(key)
                at = float(exact) if exact is not None else float(np.interp(c.own, c.thresholds, y))
                tag += f"; no-GT t={c.own:.2f}: {at:.1f}"
                ax.axvline(c.own, color=colour, ls="--", lw=0.8, alpha=0.7)
                ax.scatter([c.own], [at], color=colour, marker="x", s=30, zorder=3)
            ax.plot(c.thresholds, y, color=colour, lw=1.6, label=tag)
        ax.set_xlabel("background threshold")
        ax.set_ylabel(label)
        ax.set_xlim(float(min(c.thresholds[0] for c in curves)), float(max(c.thresholds[-1] for c in curves)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return fig


def class_order(series: list[tuple[str, dict[str, float | None]]]) -> tuple[list[str], list[float | None]]:
    """Classes to show and their gap (last artifact's IoU - first's), largest gain first; classes
    absent from one of the two go last. With one artifact: its IoU, worst first (gap None)."""
    classes = [c for c in dict.fromkeys(k for _, pc in series for k in pc) if any(pc.get(c) is not None for _, pc in series)]
    if len(series) < 2:
        only = series[0][1] if series else {}
        return sorted(classes, key=lambda c: (only.get(c) is None, only.get(c) or 0.0)), [None] * len(classes)
    first, last = series[0][1], series[-1][1]

    def gap(c: str) -> float | None:
        a, b = first.get(c), last.get(c)
        return None if a is None or b is None else b - a

    order = sorted(classes, key=lambda c: (gap(c) is None, -(gap(c) or 0.0), c))
    return order, [gap(c) for c in order]


def class_bars_figure(series: list[tuple[str, dict[str, float | None]]], title: str):
    """Per-class IoU, one bar per artifact side by side, classes sorted by :func:`class_order`;
    the gap is written at the right of each class."""
    Figure = require_matplotlib()
    order, gaps = class_order(series)
    n = max(1, len(series))
    height = 0.8 / n
    fig = Figure(figsize=(7.5, 1.3 + len(order) * (0.14 * n + 0.12)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(order))
    for i, (name, per_class) in enumerate(series):
        values = [np.nan if per_class.get(c) is None else per_class[c] for c in order]
        ax.barh(y - 0.4 + height * (i + 0.5), values, height=height, color=f"C{i}", label=name)
    ax.set_yticks(y, order)
    ax.set_ylim(len(order) - 0.5, -0.5)  # first class on top
    ax.set_xlim(0, 112 if len(series) > 1 else 100)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("IoU %")
    ax.grid(axis="x", alpha=0.3)
    if len(series) > 1:
        ax.text(111, -0.5, "gap", va="bottom", ha="right", fontsize=7, color="grey")
        for yi, g in zip(y, gaps, strict=True):
            if g is not None:
                ax.text(111, yi, f"{g:+.1f}", va="center", ha="right", fontsize=7, color="green" if g > 0 else "firebrick" if g < 0 else "grey")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(n, 4), frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def save_png(fig, path: Path, dpi: int = 100) -> Path:
    fig.savefig(path, dpi=dpi, format="png")
    return path


def training_figure(runs, keys: list[str], title: str, help_text: dict[str, str] | None = None, ncols: int = 4):
    """One panel per logged key (loss terms, learning rate, val mAP, AA diagnostics ...) against the
    epoch, one colour per training run (``runs``: objects with ``label`` and ``series(key)``, e.g.
    :class:`usage_cli.report.training.TrainingRun`), so two runs, or a classifier and its CAM baseline,
    overlay. Each run's points are joined by one line: a resumed run's epochs continue it."""
    Figure = require_matplotlib()
    ncols = max(1, min(ncols, len(keys)))
    nrows = max(1, -(-len(keys) // ncols))
    fig = Figure(figsize=(3.3 * ncols, 0.6 + 2.35 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        for i, run in enumerate(runs):
            x, y = run.series(key)
            if x:
                ax.plot(x, y, color=f"C{i}", lw=1.5, marker="o" if len(x) <= 30 else None, ms=2.5, label=run.label)
        ax.set_title(f"{key}" + (f": {help_text[key]}" if help_text and key in help_text else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.suptitle(f"{title} (x: epoch)", fontsize=10)
    return fig
