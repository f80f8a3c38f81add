"""The report's ``index.html``: plain HTML and inline CSS, no script, every image a relative path.

Sections: the metrics table (what ``usage report`` prints), where each artifact came from (its
manifest), the threshold curves, the per-class IoU bars (with their numbers), the gallery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape

from usage_cli.registry import STAGES
from usage_cli.report.gallery import Gallery
from usage_cli.report.inputs import Entry

# the config keys that say most about an artifact, per producing stage (the rest is one click away)
KEY_CONFIG = {s.name: s.shown for s in STAGES if s.shown}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1500px;
       padding: 0 24px 48px; color: #1d1f23; background: #fff; }
h1 { font-size: 22px; margin: 20px 0 2px; } h2 { font-size: 18px; margin: 34px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 20px 0 6px; } .sub { color: #666; font-size: 13px; }
nav a { margin-right: 14px; } code { font-size: 12px; background: #f4f4f6; padding: 0 3px; border-radius: 3px; }
table { border-collapse: collapse; margin: 6px 0 10px; } th, td { padding: 3px 10px; border-bottom: 1px solid #e6e6ea; }
th { text-align: left; background: #f7f7f9; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.warn { color: #a15c00; font-weight: 600; } .prov td { vertical-align: top; font-size: 13px; }
details summary { cursor: pointer; color: #345; font-size: 13px; } .fig { max-width: 100%; height: auto; }
.note { color: #8a5a00; background: #fff7e6; border: 1px solid #f1d9a6; padding: 4px 10px; border-radius: 4px; display: inline-block; }
.row { border: 1px solid #e3e3e8; border-radius: 6px; padding: 8px 10px; margin: 10px 0; }
.row-head { font-weight: 600; margin-bottom: 6px; } .row-head .score { color: #b03030; margin-left: 8px; }
.row-head .chg { color: #35557a; margin-left: 8px; }
.groups { display: flex; flex-wrap: wrap; gap: 8px 14px; } .group { border-left: 3px solid #d6d9e0; padding-left: 6px; }
.gtitle { font-size: 12px; font-weight: 600; color: #345; margin-bottom: 2px; }
.tiles { display: flex; gap: 4px; } figure { margin: 0; width: 160px; }
figure img { width: 160px; height: auto; display: block; border-radius: 3px; background: #eee; }
figcaption { font-size: 11.5px; color: #333; line-height: 1.3; margin-top: 2px; word-break: break-word; }
figure.heat figcaption { color: #7a2a00; } figure.gt figcaption { font-weight: 600; }
.legend { margin-top: 6px; font-size: 12px; } .sw { display: inline-block; width: 12px; height: 12px; vertical-align: -2px;
       border: 1px solid #888; margin: 0 4px 0 10px; }
"""


@dataclass(frozen=True)
class FigureRef:
    """A saved figure and what it shows."""

    split: str
    src: str
    caption: str
    table: tuple[tuple[str, ...], ...] = field(default=())  # header row + rows of numbers shown under it


def render_page(
    title: str,
    sources: list[str],
    created: str,
    version: str,
    rows: list[dict],
    entries: list[Entry],
    curves: list[FigureRef],
    bars: list[FigureRef],
    galleries: list[Gallery],
    palette: tuple[int, ...],
    notes: list[str],
    training: str = "",
    changes: str = "",
) -> str:
    """The page; ``training`` and ``changes`` are the HTML of those sections (report/sections.py), or ""."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<div class="sub">usage {escape(version)} · written {escape(created)} · from {", ".join(f"<code>{escape(s)}</code>" for s in sources)}</div>',
        '<nav class="sub"><a href="#metrics">metrics</a><a href="#provenance">provenance</a>'
        + ('<a href="#training">training</a>' if training else "")
        + ('<a href="#curves">threshold curves</a>' if curves else "")
        + ('<a href="#classes">per-class IoU</a>' if bars else "")
        + ('<a href="#changes">per-image change</a>' if changes else "")
        + ('<a href="#gallery">gallery</a>' if galleries else "")
        + "</nav>",
        *(f'<p class="note">{escape(n)}</p>' for n in notes),
        _metrics_table(rows),
        _provenance(entries),
    ]
    if training:
        parts.append(training)
    if curves:
        parts.append('<h2 id="curves">Threshold curves</h2>')
        parts.append('<p class="sub">Each seed store scored at every background threshold; the dotted line and dot mark the threshold '
                     "its metrics use (the best of the sweep); the dashed line and cross, the threshold gen-seeds chose from the seed maps alone (no-GT).</p>")  # fmt: skip
        parts += [figure_html(f) for f in curves]
    if bars:
        parts.append('<h2 id="classes">Per-class IoU</h2>')
        parts += [figure_html(f) for f in bars]
    if changes:
        parts.append(changes)
    if galleries:
        parts.append('<h2 id="gallery">Gallery</h2>')
        parts += [_gallery(g, palette) for g in galleries]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def no_gt_scores(rows: list[dict]) -> list[tuple[float | None, float | None]]:
    """Per row: the mIoU a user without ground truth gets (a seed store at its own threshold, label
    maps as they are; None for a store without one) and its gain over the previous row of the same
    split (the stage before it, in the order the rows are given)."""
    out, last = [], {}
    for r in rows:
        if r["threshold"] is None:
            score = r["miou"]
        else:
            score = (r.get("pipeline") or {}).get("miou")
        prev = last.get(r["split"])
        out.append((score, None if score is None or prev is None else score - prev))
        if score is not None:
            last[r["split"]] = score
    return out


def _metrics_table(rows: list[dict]) -> str:
    if not rows:
        return '<h2 id="metrics">Metrics</h2><p class="sub">No metrics files: nothing here was scored against ground truth.</p>'
    with_empty = any(r.get("empty_seeds") for r in rows)
    with_auto = any(r.get("pipeline") for r in rows)
    head = ["artifact", "split", "images", "mIoU %", "FPR %", "FNR %", "bg thr"]
    head += (["no-GT thr", "no-GT mIoU %", "gain"] if with_auto else []) + (["empty seeds"] if with_empty else [])
    out = ['<h2 id="metrics">Metrics</h2><table><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for r, (score, gain) in zip(rows, no_gt_scores(rows), strict=True):
        thr = "" if r.get("threshold") is None else f"{r['threshold']:.2f}"
        stale = ' <span style="color:#b00020;font-weight:600" title="its input changed since it was scored">stale</span>' if r.get("stale") else ""
        cells = [f"<td>{escape(r['name'])}{stale}</td>", f"<td>{escape(str(r['split']))}</td>", f'<td class="num">{r.get("num_images") or ""}</td>']
        cells += [f'<td class="num">{_pct(r[k])}</td>' for k in ("miou", "fpr", "fnr")]
        cells.append(f'<td class="num">{thr}</td>')
        if with_auto:
            auto = (r.get("pipeline") or {}).get("threshold")
            cells.append(f'<td class="num">{"" if auto is None else f"{auto:.2f}"}</td>')
            cells.append(f'<td class="num">{"" if score is None else _pct(score)}</td>')
            cells.append(f'<td class="num{" warn" if gain is not None and gain < 0 else ""}">{"" if gain is None else f"{gain:+.1f}"}</td>')
        if with_empty:
            e = r.get("empty_seeds")
            text = f"{e['maps']}/{e['pairs']}" if e else ""
            cells.append(f'<td class="num{" warn" if e and e["maps"] else ""}">{text}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    out.append('<p class="sub">IoU + FPR + FNR = 100 per class (FP and FN over the union); means over the classes present, '
               "background included. Seeds: at the background threshold shown (the best of the sweep, tuned on this "
               "split's labelled masks). No-GT: what a user without labelled masks gets: a seed store at the threshold "
               "gen-seeds chose from its own maps, label maps as they are; gain: over the row above of the same split.</p>")  # fmt: skip
    return "\n".join(out)


def _provenance(entries: list[Entry]) -> str:
    out = ['<h2 id="provenance">Provenance</h2><table class="prov"><tr><th>artifact</th><th>path</th><th>stage · date</th>'
           "<th>key config</th><th>inputs (sha256)</th></tr>"]  # fmt: skip
    for e in entries:
        m = e.manifest or {}
        path = str(e.artifact) if e.artifact is not None else f"{e.recorded} (not found from here)"
        stage = f"{m.get('stage', '?')} · {str(m.get('created', '?')).replace('T', ' ').replace('+00:00', ' UTC')}" if m else "no manifest"
        cfg = m.get("config", {})
        keys = KEY_CONFIG.get(m.get("stage"), tuple(k for k, v in cfg.items() if not isinstance(v, dict | list))[:6])
        key_cfg = "<br>".join(f"{escape(k)} = <code>{escape(_short(cfg[k]))}</code>" for k in keys if k in cfg)
        if cfg:
            key_cfg += (f"<details><summary>full config (hash {escape(str(m.get('config_hash', ''))[:12])})</summary>"
                        f"<pre>{escape(json.dumps(cfg, indent=1, default=str))}</pre></details>")  # fmt: skip
        made_by = dict(e.upstream)
        inputs = "<br>".join(f"{escape(k)}: <code>{escape(str(v.get('path')))}</code> {escape(str(v.get('sha256', ''))[:12])}"
                             + (_made_by(made_by[k]) if k in made_by else "") for k, v in m.get("inputs", {}).items())  # fmt: skip
        out.append(f"<tr><td>{escape(e.name)}</td><td><code>{escape(path)}</code></td><td>{escape(stage)}</td>"
                   f"<td>{key_cfg}</td><td>{inputs}</td></tr>")  # fmt: skip
    out.append("</table>")
    return "\n".join(out)


def _made_by(m: dict) -> str:
    """``← train-cls (mapping = cam, ...)``: the stage behind an input and its key settings."""
    cfg = m.get("config", {})
    keys = [k for k in KEY_CONFIG.get(m.get("stage"), ()) if k in cfg]
    settings = ", ".join(f"{escape(k)} = {escape(_short(cfg[k], 40))}" for k in keys)
    return f'<br><span class="sub">← {escape(str(m.get("stage", "?")))}{f" ({settings})" if settings else ""}</span>'


def figure_html(f: FigureRef) -> str:
    out = [f"<h3>{escape(f.split)}</h3>", f'<img class="fig" src="{escape(f.src)}" alt="{escape(f.caption)}">',
           f'<p class="sub">{escape(f.caption)}</p>']  # fmt: skip
    if f.table:
        head, *body = f.table
        out.append("<details><summary>the numbers</summary><table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" if i == 0 else f'<td class="num">{escape(c)}</td>' for i, c in enumerate(r)) + "</tr>"
                for r in body]  # fmt: skip
        out.append("</table></details>")
    return "\n".join(out)


def _gallery(g: Gallery, palette: tuple[int, ...]) -> str:
    scored = g.reference and any(r.score is not None for r in g.rows)
    how = f"worst first by per-image mIoU of <b>{escape(g.reference)}</b>" if scored else "a fixed sample (no scores to sort by)"
    if g.order == "changed":
        how = "most changed first (the share of its pixels a stage relabelled, without ground truth; see Per-image change)"
    out = [f"<h3>{escape(g.split)}</h3>", f'<p class="sub">{len(g.rows)} images, {how}.</p>']
    if g.note:
        out.append(f'<p class="note">{escape(g.note)}</p>')
    for r in g.rows:
        score = f'<span class="score">{escape(g.reference or "")} mIoU {r.score:.1f}</span>' if r.score is not None else ""
        if r.change is not None:
            score += f'<span class="chg">{r.change:.1f} % changed by {escape(r.changed_by or "?")}</span>'
        out.append(f'<div class="row"><div class="row-head">{escape(r.id)}{score}</div><div class="groups">')
        for grp in r.groups:
            out.append(f'<div class="group"><div class="gtitle">{escape(grp.title)}</div><div class="tiles">')
            out += [f'<figure class="{t.kind}"><img src="{escape(t.src)}" alt="{escape(t.caption)} ({escape(grp.title)})" loading="lazy">'
                    f"<figcaption>{escape(t.caption)}</figcaption></figure>" for t in grp.tiles]  # fmt: skip
            out.append("</div></div>")
        out.append("</div>")
        if r.legend:
            out.append('<div class="legend">' + "".join(f'<span class="sw" style="background:{_rgb(palette, v)}"></span>{escape(name)}'
                                                        for v, name in r.legend) + "</div>")  # fmt: skip
        out.append("</div>")
    return "\n".join(out)


def _rgb(palette: tuple[int, ...], v: int) -> str:
    r, g, b = palette[3 * v : 3 * v + 3]
    return f"rgb({r},{g},{b})"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _short(v, limit: int = 60) -> str:
    s = json.dumps(v, default=str) if isinstance(v, list | dict | bool) or v is None else str(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"
