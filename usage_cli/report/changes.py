"""What each stage did to each image, without ground truth: the report's per-image table.

Per split, the chain drawn is the seed store the pseudo masks were made from (their manifest's
``seeds``; else the split's last seed store), the pseudo masks and the predictions, as far as they
exist. For each image of the chain:

* the **foreground area** of each artifact: the share of its pixels labelled with a class (not
  background, not ignore); a seed store is cut at its own threshold (the one gen-seeds chose from its
  maps, or the ``auto`` rule now for a store that records none), as the chain uses it;
* for each stage after the first, the share of the previous artifact's pixels whose class it **kept**
  (pixels ignored in either map left out): 100 means the stage left the image as it was;
* where ``usage evaluate`` scored the artifact, its per-image mIoU beside them.

An image's **change** is 100 minus the lowest kept share of its chain; the table is sorted by it,
most changed first. Nothing here reads ground truth. The shares are counted on every pixel of an image
up to :data:`GRID` pixels a side, and on every s-th pixel of each row and column of a larger one (s =
its longer side / GRID, rounded up; a VOC photo: every 4th), so a split of thousands of photos costs
seconds, not minutes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usage_cli.algorithms.thresholds import store_threshold
from usage_cli.artifacts.labels import read_label_png
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.errors import UsageError
from usage_cli.metrics.sweep import fg_max_argmax
from usage_cli.report.inputs import Entry

IGNORE = 255
KINDS = ("seeds", "masks", "preds")
GRID = 160  # pixels a side counted exactly; a larger image is counted on every s-th pixel


@dataclass(frozen=True)
class ImageChange:
    id: str
    area: dict[str, float | None]  # kind -> foreground % of the image
    kept: dict[str, float | None]  # kind of the later artifact -> % of the earlier one's pixels it kept
    score: dict[str, float | None]  # kind -> per-image mIoU % (metrics.json), None without one

    @property
    def change(self) -> float | None:
        """100 minus the lowest kept share (None for a chain of one artifact)."""
        kept = [v for v in self.kept.values() if v is not None]
        return 100.0 - min(kept) if kept else None

    @property
    def changed_by(self) -> str | None:
        """The kind whose stage changed this image most (the lowest kept share)."""
        kept = {k: v for k, v in self.kept.items() if v is not None}
        return min(kept, key=kept.get) if kept else None


@dataclass(frozen=True)
class ChangeTable:
    split: str
    chain: dict[str, str]  # kind -> artifact name, in chain order
    seed_threshold: float | None
    rows: tuple[ImageChange, ...]  # most changed first
    made_by: dict[str, str] = field(default_factory=dict)  # kind -> the stage its manifest names (refine-psa, psa-walk, ...)

    def most_changed(self, kind: str, n: int = 5) -> list[ImageChange]:
        """The ``n`` images whose ``kind`` stage kept the least of the artifact before it."""
        have = [r for r in self.rows if r.kept.get(kind) is not None]
        return sorted(have, key=lambda r: (r.kept[kind], r.id))[:n]


def chain_of(entries: list[Entry]) -> dict[str, Entry]:
    """A split's chain: kind -> entry (seeds, masks, preds; those that exist, with an artifact), all of
    the run of the split's last one (two runs on a page: the last run's chain)."""
    found = [e for e in entries if e.artifact is not None]
    if found:
        run = _run_of(found[-1])
        found = [e for e in found if _run_of(e) == run] or found
    chain = {}
    for kind in ("masks", "preds"):
        last = [e for e in found if e.kind == kind]
        if last:
            chain[kind] = last[-1]
    seeds = [e for e in found if e.kind == "seeds"]
    named = (chain.get("masks") and (chain["masks"].manifest or {}).get("config", {}).get("seeds")) or None
    pick = next((e for e in seeds if named and _same(e, named)), seeds[-1] if seeds else None)
    return {k: e for k, e in (("seeds", pick), *chain.items()) if e is not None}


def _run_of(entry: Entry) -> Path:
    """The run folder an artifact lies in (``RUN/seeds-x/seeds.h5``, ``RUN/masks-x/``)."""
    folder = entry.artifact if entry.artifact.is_dir() else entry.artifact.parent
    return folder.resolve().parent


def _same(entry: Entry, recorded: str) -> bool:
    """Whether a masks manifest's ``seeds`` path names this entry's store."""
    p = Path(recorded)
    if p.exists() and entry.artifact is not None:
        return p.resolve() == entry.artifact.resolve()
    return entry.artifact is not None and p.parts[-2:] == entry.artifact.parts[-2:]


def _step(shape: tuple[int, ...]) -> int:
    return max(1, -(-max(shape[-2:]) // GRID))


def _seed_labels(reader: SeedReader, threshold: float, image_id: str) -> np.ndarray:
    """The seeds' label map at ``threshold``, on the counting grid."""
    s = reader.read(image_id)
    (h, w), step = s.size, _step(tuple(s.size))
    cam = np.asarray(s.cam)[:, ::step, ::step] if len(s.keys) else s.cam
    m, a = fg_max_argmax(cam, s.keys, (-(-h // step), -(-w // step)))
    return np.where(m > threshold, a, 0).astype(np.uint8)


def _area(label: np.ndarray) -> float | None:
    valid = label != IGNORE
    return 100.0 * float(((label != 0) & valid).sum()) / float(valid.sum()) if valid.any() else None


def _kept(before: np.ndarray, after: np.ndarray) -> float | None:
    if before.shape != after.shape:
        return None
    valid = (before != IGNORE) & (after != IGNORE)
    return 100.0 * float((before[valid] == after[valid]).sum()) / float(valid.sum()) if valid.any() else None


def change_table(split: str, entries: list[Entry]) -> ChangeTable | None:
    """The per-image table of one split (None when it has no artifact found from here)."""
    chain = chain_of(entries)
    if not chain:
        return None
    reader, threshold = None, None
    try:
        if "seeds" in chain:
            reader = SeedReader(chain["seeds"].artifact)
            threshold = store_threshold(reader)[0]
        ids = _ids(chain, reader)
        rows = [_row(i, chain, reader, threshold) for i in ids]
    finally:
        if reader is not None:
            reader.close()
    rows.sort(key=lambda r: (r.change is None, -(r.change or 0.0), r.id))
    made_by = {k: str((e.manifest or {}).get("stage") or k) for k, e in chain.items()}
    return ChangeTable(split=split, chain={k: e.name for k, e in chain.items()}, seed_threshold=threshold, rows=tuple(rows), made_by=made_by)


def _ids(chain: dict[str, Entry], reader: SeedReader | None) -> list[str]:
    first = next(iter(chain))
    if first == "seeds":
        return reader.ids()
    return sorted(p.stem for p in chain[first].artifact.glob("*.png"))


def _row(image_id: str, chain: dict[str, Entry], reader: SeedReader | None, threshold: float | None) -> ImageChange:
    labels: dict[str, np.ndarray | None] = {}
    for kind, e in chain.items():
        if kind == "seeds":
            labels[kind] = _seed_labels(reader, threshold, image_id) if image_id in reader else None
        else:
            png = e.artifact / f"{image_id}.png"
            try:
                label = read_label_png(png) if png.exists() else None
                labels[kind] = None if label is None else label[:: _step(label.shape), :: _step(label.shape)]
            except UsageError:
                labels[kind] = None
    kinds = list(chain)
    kept = {}
    for prev, kind in zip(kinds, kinds[1:], strict=False):
        a, b = labels[prev], labels[kind]
        kept[kind] = _kept(a, b) if a is not None and b is not None else None
    area = {k: (_area(v) if v is not None else None) for k, v in labels.items()}
    score = {k: ((chain[k].metrics or {}).get("per_image") or {}).get(image_id) for k in kinds}
    return ImageChange(id=image_id, area=area, kept=kept, score=score)


def change_tables(by_split: dict[str, list[Entry]]) -> list[ChangeTable]:
    return [t for split, entries in by_split.items() if (t := change_table(split, entries)) is not None]


def by_image(tables: list[ChangeTable]) -> dict[str, dict[str, tuple[float | None, str | None]]]:
    """split -> image id -> (% changed, the artifact of the stage that changed it most)."""
    return {t.split: {r.id: (r.change, t.chain.get(r.changed_by) if r.changed_by else None) for r in t.rows} for t in tables}


# ---------------------------------------------------------------- the table as rows (CSV / JSON / the page)
COLUMNS = (
    "split", "id", "change", "changed_by", "seeds_fg", "masks_fg", "preds_fg", "masks_kept", "preds_kept",
    "seeds_miou", "masks_miou", "preds_miou", "seeds", "masks", "preds", "seed_threshold",
)  # fmt: skip


def records(tables: list[ChangeTable]) -> list[dict]:
    """One flat record per (split, image), the keys of :data:`COLUMNS` (percent, 2 decimals; None
    where an artifact or score is missing). ``masks_kept``: the share of the seeds' pixels the pseudo
    masks kept; ``preds_kept``: of the masks' (or, without masks, the seeds') pixels the predictions kept."""
    out = []
    for t in tables:
        for r in t.rows:
            rec = {"split": t.split, "id": r.id, "change": _r(r.change), "changed_by": t.chain.get(r.changed_by) if r.changed_by else None}
            rec.update({f"{k}_fg": _r(r.area.get(k)) for k in KINDS})
            rec.update({f"{k}_kept": _r(r.kept.get(k)) for k in KINDS[1:]})
            rec.update({f"{k}_miou": _r(r.score.get(k)) for k in KINDS})
            rec.update({k: t.chain.get(k) for k in KINDS})
            rec["seed_threshold"] = None if t.seed_threshold is None else round(t.seed_threshold, 4)
            out.append(rec)
    return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 2)


def to_csv(recs: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for rec in recs:
        w.writerow({k: "" if rec[k] is None else rec[k] for k in COLUMNS})
    return buf.getvalue()


def to_json(recs: list[dict]) -> str:
    return json.dumps(recs, indent=1) + "\n"
