"""The gallery: for a few images of a split, the image, each seed store's heat map per present class
(named) and its seed at the chosen threshold, each pseudo mask / prediction, and the ground truth,
label maps drawn in the VOC palette over the image; worst images (by per-image mIoU) first.

Which images: ``--ids``, or N of the split chosen reproducibly: when metrics.json has per-image
scores, the N/2 worst by the reference artifact (the last of the split: predictions, else pseudo
masks, else seeds) plus N/2 of the rest in a fixed pseudo-random order (sha1 of the id); without
them, N in that order. Only the chosen images are read, so the cost is the gallery's, not the split's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from usage_cli.artifacts.labels import label_path, read_label_png
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data.io import read_image, read_mask
from usage_cli.data.records import Dataset
from usage_cli.errors import ConfigError
from usage_cli.metrics.confusion import ConfusionMatrix, metrics_from_confusion
from usage_cli.metrics.sweep import fg_max_argmax, power_prediction
from usage_cli.report.inputs import Entry, sample_key
from usage_cli.report.overlays import jet, paint

IGNORE = 255
IGNORE_NAME = "ignore / unlabelled"


@dataclass(frozen=True)
class Tile:
    src: str  # path relative to the report folder
    caption: str
    kind: str  # "image" | "heat" | "seed" | "mask" | "gt"


@dataclass(frozen=True)
class Group:
    """The tiles of one source in a row: the image, one artifact, or the ground truth."""

    title: str
    tiles: tuple[Tile, ...]


@dataclass(frozen=True)
class Row:
    id: str
    score: float | None  # per-image mIoU (percent) of the reference artifact: the sort key
    groups: tuple[Group, ...]
    legend: tuple[tuple[int, str], ...]  # (label value, class name) drawn in this row's label maps
    change: float | None = None  # % of the image a stage changed (report/changes.py): the sort key of --order changed
    changed_by: str | None = None  # the artifact of the stage that changed it most

    @property
    def tiles(self) -> tuple[Tile, ...]:
        return tuple(t for g in self.groups for t in g.tiles)


@dataclass(frozen=True)
class Gallery:
    split: str
    reference: str | None  # the artifact whose per-image mIoU orders the rows
    rows: tuple[Row, ...]
    note: str = ""
    order: str = "worst"  # "worst": by the reference's mIoU, worst first; "changed": most changed first


def choose_ids(candidates: list[str], n: int, scores: dict[str, float | None] | None) -> list[str]:
    """N ids: half the worst by ``scores`` and the rest in sha1 order (or all in sha1 order)."""
    if n <= 0:
        return []
    candidates = list(dict.fromkeys(candidates))
    chosen: list[str] = []
    if scores:
        scored = sorted((s, i) for i in candidates if (s := scores.get(i)) is not None)
        chosen = [i for _, i in scored[: math.ceil(n / 2)]]
    taken = set(chosen)
    chosen += sorted((i for i in candidates if i not in taken), key=sample_key)[: n - len(chosen)]
    return chosen


def reference_entry(entries: list[Entry]) -> Entry | None:
    """The artifact whose per-image mIoU orders a split's gallery: the last one found (predictions,
    else pseudo masks, else seeds, in report order)."""
    return next((e for e in reversed(entries) if e.artifact is not None), None)


def pick_ids(
    by_split: dict[str, list[Entry]], datasets: dict[str, Dataset], n: int, wanted: tuple[str, ...] = (), changes: dict | None = None,
) -> dict[str, list[str]]:
    """The gallery's ids per split: ``wanted`` where they are (an unknown one is an error), else
    :func:`choose_ids` by the split's reference artifact's per-image scores, or with ``changes``
    (split -> id -> (% changed, by what), ``--order changed``) by how much the stages changed each image."""
    if wanted:
        known = {s: {r.id for r in ds.records} for s, ds in datasets.items()}
        unknown = [i for i in wanted if not any(i in k for k in known.values())]
        if unknown:
            where = ", ".join(f"{s} of {datasets[s].root}" for s in known) or "no dataset found"
            raise ConfigError(f"--ids: {len(unknown)} unknown id(s) {', '.join(unknown[:5])} (looked in: {where})")
        return {s: [i for i in dict.fromkeys(wanted) if i in known[s]] for s in datasets if any(i in known[s] for i in wanted)}
    if n <= 0:
        return {}
    picks = {}
    for split, ds in datasets.items():
        ref = reference_entry(by_split[split])
        scores = (ref.metrics or {}).get("per_image") if ref is not None else None
        if changes is not None:  # most changed first: the lowest "score" is the largest change
            scores = {i: -c for i, (c, _) in (changes.get(split) or {}).items() if c is not None}
        picks[split] = choose_ids([r.id for r in ds.records], n, scores)
    return picks


def palette_rgb(palette: tuple[int, ...]) -> np.ndarray:
    return np.array(palette, np.uint8).reshape(-1, 3)


def heat(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    return (0.5 * image + 0.5 * jet(np.asarray(m, np.float32))).astype(np.uint8)


def image_miou(pred: np.ndarray, gt: np.ndarray | None, n: int) -> float | None:
    """One image's mIoU in percent (classes present in its ground truth or prediction)."""
    if gt is None or pred.shape != gt.shape:
        return None
    cm = ConfusionMatrix(n)
    cm.update(pred.astype(np.uint8), gt)
    v = metrics_from_confusion(cm.mat, cm.pred_ignored)["miou"]
    return None if np.isnan(v) else 100.0 * v


def seed_label(cam: np.ndarray, keys: np.ndarray, shape: tuple[int, int], metrics: dict | None) -> np.ndarray | None:
    """A seed store's label map the way metrics.json scored it (threshold or power), else None."""
    if not metrics:
        return None
    m, a = fg_max_argmax(cam, keys, shape)
    if metrics.get("threshold") is not None:
        return np.where(m > metrics["threshold"], a, 0).astype(np.uint8)
    if metrics.get("bg_power") is not None:
        return power_prediction(m, a, metrics["bg_power"]).astype(np.uint8)
    return None


class _TileWriter:
    """Saves tiles as JPEG files under the report folder, downscaled to ``max_side``."""

    def __init__(self, out: Path, prefix: str, max_side: int):
        self.out, self.prefix, self.max_side = out, prefix, max_side
        self.count = 0

    def __call__(self, rgb: np.ndarray, caption: str, kind: str) -> Tile:
        img = Image.fromarray(rgb)
        scale = self.max_side / max(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        self.count += 1
        name = f"{self.prefix}-{self.count:04d}.jpg"
        img.save(self.out / name, format="JPEG", quality=90)
        return Tile(src=f"{self.out.name}/{name}", caption=caption, kind=kind)


def render_gallery(
    split: str, ids: list[str], entries: list[Entry], ds: Dataset, out: Path, max_side: int = 256,
    changes: dict | None = None, order: str = "worst",
) -> Gallery:
    """Render the rows of ``ids`` (tiles under ``out``, a folder of the report), worst first, or with
    ``order="changed"`` most changed first by ``changes`` (id -> (% changed, the artifact of the
    stage that changed it most), shown on each row)."""
    out.mkdir(parents=True, exist_ok=True)
    names, n = ds.meta.all_names, ds.meta.num_classes + 1
    pal = palette_rgb(ds.meta.palette)
    by_id = ds.by_id()
    save = _TileWriter(out, re.sub(r"[^A-Za-z0-9_-]", "_", split), max_side)
    readers = {e.name: SeedReader(e.artifact) for e in entries if e.kind == "seeds" and e.artifact is not None}
    ref = reference_entry(entries)
    reference = ref.name if ref is not None else None
    rows, skipped = [], 0
    try:
        for image_id in ids:
            rec = by_id[image_id]
            if not Path(rec.image_path).exists():
                skipped += 1
                continue
            image = read_image(rec.image_path)
            gt = read_mask(rec.mask_path, n - 1) if rec.mask_path is not None and Path(rec.mask_path).exists() else None
            groups, drawn, scores = [Group("image", (save(image, image_id, "image"),))], [], {}
            for e in entries:
                if e.artifact is None:
                    continue
                tiles = []
                if e.kind == "seeds":
                    r = readers[e.name]
                    if image_id not in r:
                        continue
                    s = r.read(image_id)
                    tiles += [save(heat(image, m), _name(names, k), "heat") for k, m in zip(s.keys, s.cam, strict=True)]
                    label = seed_label(s.cam, s.keys, image.shape[:2], e.metrics)
                    thr = (e.metrics or {}).get("threshold")
                    caption = "seed" + (f" · bg {thr:.2f}" if thr is not None else "")
                else:
                    png = label_path(e.artifact, image_id)
                    if not png.exists():
                        continue
                    label, caption = read_label_png(png), {"confident": "confident labels", "masks": "pseudo mask", "preds": "prediction"}.get(e.kind, "label map")
                if label is not None:
                    scores[e.name] = image_miou(label, gt, n)
                    if scores[e.name] is not None:
                        caption += f" · mIoU {scores[e.name]:.1f}"
                    tiles.append(save(paint(image, label, pal), caption, "seed" if e.kind == "seeds" else "mask"))
                    drawn.append(label)
                groups.append(Group(e.name, tuple(tiles)))
            if gt is not None:
                groups.append(Group("ground truth", (save(paint(image, gt, pal), "ground truth", "gt"),)))
                drawn.append(gt)
            values = sorted(set(np.unique(np.concatenate([d.ravel() for d in drawn])).tolist()) - {0}) if drawn else []
            legend = tuple((int(v), _name(names, v)) for v in values)
            change, by = (changes or {}).get(image_id, (None, None))
            rows.append(Row(id=image_id, score=scores.get(reference), groups=tuple(groups), legend=legend, change=change, changed_by=by))
    finally:
        for r in readers.values():
            r.close()
    if order == "changed":
        rows.sort(key=lambda r: (r.change is None, -(r.change or 0.0), r.id))
    else:
        rows.sort(key=lambda r: (r.score is None, r.score if r.score is not None else 0.0, r.id))
    note = f"{skipped} of {len(ids)} images not found under {ds.root}" if skipped else ""
    return Gallery(split=split, reference=reference, rows=tuple(rows), note=note, order=order)


def _name(names: tuple[str, ...], v: int) -> str:
    v = int(v)
    if v == IGNORE:
        return IGNORE_NAME
    return names[v] if v < len(names) else f"class {v}"
