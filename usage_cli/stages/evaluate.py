"""`usage evaluate`: mIoU / FPR / FNR of label PNGs or seed maps against the ground-truth masks.

Reads only ground-truth masks and predictions, never images. One (K+1)x(K+1) int64 confusion matrix
is accumulated over the split (per threshold, for seeds); chunks of images are scored in worker
processes and their counts summed. For a seed store the empty seeds (present-class maps that are
all zero, see `usage gen-seeds`) of the scored images are counted on the way.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.labels import read_label_png
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data import load_dataset
from usage_cli.data.io import read_mask
from usage_cli.errors import ArtifactError, ConfigError
from usage_cli.metrics.confusion import ConfusionMatrix, metrics_from_confusion
from usage_cli.metrics.sweep import (
    binned_counts,
    confusions_from_counts,
    fg_max_argmax,
    parse_thresholds,
    power_prediction,
)

METRICS = ("miou", "fpr", "fnr")


@dataclass(frozen=True)
class EvaluateConfig:
    dataset: str
    root: Path
    split: str
    pred: Path
    split_file: Path | None = None
    classes_file: Path | None = None
    metrics: tuple[str, ...] = METRICS
    out: Path | None = None
    bg_thresholds: str = "0.00:0.95:0.01"
    bg_threshold: float | None = None
    bg_power: float | None = None
    allow_missing: bool = False
    workers: int = 2
    quiet: bool = False


@dataclass(frozen=True)
class _Job:
    """What a worker needs to score a chunk of images (picklable)."""

    kind: str  # "png" | "seeds"
    pred: str
    items: tuple[tuple[str, str], ...]  # (id, gt mask path)
    n: int
    thresholds: tuple[float, ...]
    power: float | None
    missing: frozenset[str]


def _score_chunk(job: _Job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed counts of one chunk: ([T+1, n, n] bins or [n, n] matrix, pred_ignored [n],
    empty seeds [maps, present pairs, images with one])."""
    thr = np.asarray(job.thresholds)
    sweep = job.kind == "seeds" and job.power is None
    counts = np.zeros((len(thr) + 1, job.n, job.n) if sweep else (job.n, job.n), np.int64)
    cm = ConfusionMatrix(job.n)
    empty = np.zeros(3, np.int64)
    reader = SeedReader(job.pred) if job.kind == "seeds" else None
    try:
        for image_id, mask_path in job.items:
            gt = read_mask(mask_path, job.n - 1)
            if image_id in job.missing:
                pred = np.zeros_like(gt)
            elif reader is None:
                pred = read_label_png(Path(job.pred) / f"{image_id}.png")
            else:
                entry = reader.read(image_id)
                if entry.cam.shape[1:] != gt.shape:
                    raise ArtifactError(f"{job.pred}: seeds of '{image_id}' are {entry.cam.shape[1:]} but its mask is {gt.shape}")
                n_empty = len(entry.empty_keys)
                empty += (n_empty, len(entry.keys), n_empty > 0)
                m, a = fg_max_argmax(entry.cam, entry.keys, gt.shape)
                if sweep:
                    counts += binned_counts(m, a, gt, thr, job.n)
                    continue
                pred = power_prediction(m, a, job.power)
            if pred.shape != gt.shape:
                raise ArtifactError(f"{Path(job.pred) / (image_id + '.png')}: prediction is {pred.shape[::-1]} but the mask is {gt.shape[::-1]}")
            if sweep:  # a missing id in a seed sweep: all background at every threshold
                m0 = np.full(gt.shape, -np.inf, np.float32)
                counts += binned_counts(m0, np.zeros_like(gt, dtype=np.int64), gt, thr, job.n)
                continue
            try:
                cm.update(pred, gt)
            except ValueError as e:
                raise ArtifactError(f"{Path(job.pred) / (image_id + '.png')}: {e}") from e
    finally:
        if reader is not None:
            reader.close()
    return (counts if sweep else cm.mat), cm.pred_ignored, empty


def _prediction_ids(pred: Path) -> tuple[str, set[str]]:
    if pred.is_dir():
        return "png", {p.stem for p in pred.glob("*.png")}
    if pred.suffix in (".h5", ".hdf5") or pred.exists() or pred.with_name(pred.name + ".partial").exists():
        with SeedReader(pred) as r:
            return "seeds", set(r.ids())
    raise ArtifactError(f"{pred}: no such folder of label PNGs or seed file")


def _summary(mat: np.ndarray, pred_ignored: np.ndarray, names: tuple[str, ...]) -> dict:
    res = metrics_from_confusion(mat, pred_ignored)

    def pct(v: float) -> float | None:
        return None if np.isnan(v) else round(100.0 * float(v), 4)

    return {
        "miou": pct(res["miou"]),
        "fpr": pct(res["mfpr"]),
        "fnr": pct(res["mfnr"]),
        "per_class": {n: {"iou": pct(res["iou"][c]), "fpr": pct(res["fpr"][c]), "fnr": pct(res["fnr"][c])} for c, n in enumerate(names)},
        "confusion": mat.tolist(),
    }


def run(cfg: EvaluateConfig) -> dict:
    # 1. options, ground truth, predictions
    unknown = set(cfg.metrics) - set(METRICS)
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}")
    if cfg.bg_threshold is not None and cfg.bg_power is not None:
        raise ConfigError("give either --bg-threshold or --bg-power, not both")
    ds = load_dataset(cfg.dataset, cfg.root, cfg.split, split_file=cfg.split_file, classes_file=cfg.classes_file, require_images=False)
    no_mask = [r.id for r in ds.records if r.mask_path is None]
    if no_mask:
        raise ArtifactError(f"{cfg.root}: no ground-truth mask for {len(no_mask)} id(s) of '{cfg.split}' (first: {no_mask[0]})")
    kind, have = _prediction_ids(cfg.pred)
    missing = sorted({r.id for r in ds.records} - have)
    if missing and not cfg.allow_missing:
        raise ArtifactError(f"{cfg.pred}: no prediction for {len(missing)} of {len(ds)} ids of '{cfg.split}' (first: {missing[0]}); pass --allow-missing to count them as background")
    try:
        thresholds = parse_thresholds(str(cfg.bg_threshold) if cfg.bg_threshold is not None else cfg.bg_thresholds)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    mode = "power" if cfg.bg_power is not None else ("fixed" if cfg.bg_threshold is not None else "sweep-best")
    # 2. score chunks in parallel and sum
    n = ds.meta.num_classes + 1
    items = [(r.id, str(r.mask_path)) for r in ds.records]
    workers = max(1, min(cfg.workers, len(items)))
    chunks = [tuple(items[i::workers * 4]) for i in range(min(len(items), workers * 4))]
    jobs = [_Job(kind, str(cfg.pred), c, n, tuple(thresholds.tolist()), cfg.bg_power, frozenset(missing)) for c in chunks]
    if workers == 1:
        parts = [_score_chunk(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_score_chunk, jobs))
    total = sum(p[0] for p in parts)
    pred_ignored = sum(p[1] for p in parts)
    empty = sum(p[2] for p in parts)
    # 3. pick the threshold (seeds), summarise
    result = {"dataset": cfg.dataset, "split": cfg.split, "pred": str(cfg.pred), "num_images": len(items), "num_missing": len(missing)}
    if kind == "seeds" and mode != "power":
        mats = confusions_from_counts(total)
        curve = [metrics_from_confusion(m)["miou"] for m in mats]
        best = int(np.nanargmax(curve))
        result.update(_summary(mats[best], pred_ignored, ds.meta.all_names))
        result.update(threshold=float(thresholds[best]), threshold_mode=mode, curve={f"{t:.2f}": round(100 * c, 4) for t, c in zip(thresholds, curve, strict=True)})
    else:
        result.update(_summary(total, pred_ignored, ds.meta.all_names))
        result.update(threshold=None, threshold_mode=mode if kind == "seeds" else "labels", bg_power=cfg.bg_power)
    if kind == "seeds":
        result["empty_seeds"] = {"maps": int(empty[0]), "pairs": int(empty[1]), "images": int(empty[2])}
    result["metrics"] = list(cfg.metrics)
    if cfg.out is not None:
        write_text_atomic(cfg.out, json.dumps(result, indent=2) + "\n")
    return result


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
