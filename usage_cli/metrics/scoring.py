"""Scoring prediction files against ground-truth masks, a chunk of images at a time (``usage
evaluate`` runs the chunks in worker processes and sums their counts): label PNGs into one confusion
matrix, a seed store's maps into per-threshold bins (or one matrix at a fixed power), the empty
seeds met on the way, and each image's own mIoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from usage_cli.artifacts.labels import label_path, read_label_png
from usage_cli.artifacts.seeds import SeedEntry, SeedReader
from usage_cli.data.io import read_mask
from usage_cli.errors import ArtifactError
from usage_cli.metrics.confusion import ConfusionMatrix, metrics_from_confusion
from usage_cli.metrics.sweep import (
    binned_counts,
    fg_max_argmax,
    per_threshold_miou,
    power_prediction,
)


@dataclass(frozen=True)
class ScoreJob:
    """What a worker needs to score a chunk of images (picklable)."""

    kind: str  # "png" | "seeds"
    pred: str
    items: tuple[tuple[str, str, str], ...]  # (id, gt mask path, image path)
    n: int
    thresholds: tuple[float, ...]
    power: float | None
    missing: frozenset[str]


def score_chunk(job: ScoreJob) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Summed counts of one chunk: ([T+1, n, n] bins or [n, n] matrix, pred_ignored [n],
    empty seeds [maps, present pairs, images with one], {id: the image's mIoU, per threshold in a sweep})."""
    thr = np.asarray(job.thresholds)
    sweep = job.kind == "seeds" and job.power is None
    counts = np.zeros((len(thr) + 1, job.n, job.n) if sweep else (job.n, job.n), np.int64)
    cm = ConfusionMatrix(job.n)
    empty = np.zeros(3, np.int64)
    per_image: dict[str, np.ndarray] = {}
    reader = SeedReader(job.pred) if job.kind == "seeds" else None
    try:
        for image_id, mask_path, image_path in job.items:
            gt = read_mask(mask_path, job.n - 1)
            if image_id in job.missing:
                pred = np.zeros_like(gt)
            elif reader is None:
                pred = read_label_png(label_path(job.pred, image_id))
            else:
                entry = reader.read(image_id)
                if entry.cam.shape[1:] != gt.shape:
                    _size_mismatch(f"{job.pred}: seeds of '{image_id}' are {entry.cam.shape[1:]} but its mask is {gt.shape}", mask_path, gt.shape, image_path)
                empty += empty_counts(entry)
                if sweep:
                    c = sweep_counts(entry, gt, thr, job.n)
                    counts += c
                    per_image[image_id] = per_threshold_miou(c)
                    continue
                pred = power_prediction(*fg_max_argmax(entry.cam, entry.keys, gt.shape), job.power)
            if pred.shape != gt.shape:
                _size_mismatch(f"{label_path(job.pred, image_id)}: prediction is {pred.shape[::-1]} but the mask is {gt.shape[::-1]}", mask_path, gt.shape, image_path)
            if sweep:  # a missing id in a seed sweep: all background at every threshold
                m0 = np.full(gt.shape, -np.inf, np.float32)
                c = binned_counts(m0, np.zeros_like(gt, dtype=np.int64), gt, thr, job.n)
                counts += c
                per_image[image_id] = per_threshold_miou(c)
                continue
            one = ConfusionMatrix(job.n)
            try:
                one.update(pred, gt)
            except ValueError as e:
                raise ArtifactError(f"{label_path(job.pred, image_id)}: {e}") from e
            cm.merge(one)
            per_image[image_id] = np.float64(metrics_from_confusion(one.mat, one.pred_ignored)["miou"])
    finally:
        if reader is not None:
            reader.close()
    return (counts if sweep else cm.mat), cm.pred_ignored, empty, per_image


def empty_counts(entry: SeedEntry) -> np.ndarray:
    """One image's empty seeds: [maps with no positive value, present classes, 1 if it has one]."""
    n_empty = len(entry.empty_keys)
    return np.array((n_empty, len(entry.keys), n_empty > 0), np.int64)


def sweep_counts(entry: SeedEntry, gt: np.ndarray, thresholds: np.ndarray, n: int) -> np.ndarray:
    """One image's seeds against its mask at every background threshold: the bins [T+1, n, n] that
    ``metrics.sweep.confusions_from_counts`` turns into one confusion matrix per threshold."""
    m, a = fg_max_argmax(entry.cam, entry.keys, gt.shape)
    return binned_counts(m, a, gt, thresholds, n)


def _size_mismatch(message: str, mask_path: str, gt_hw: tuple, image_path: str) -> None:
    """Blame the file whose size differs from the image's: the mask, else the prediction (``message``)."""

    h, w = gt_hw
    try:
        with Image.open(image_path) as im:  # reads the header only
            image_hw = (im.height, im.width)
    except OSError:
        image_hw = None
    if image_hw is not None and image_hw != tuple(gt_hw):
        raise ArtifactError(f"{mask_path}: ground-truth mask is {w}x{h} but its image {image_path} is {image_hw[1]}x{image_hw[0]}")
    raise ArtifactError(f"{message} ({mask_path})")
