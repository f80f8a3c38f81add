"""The one evaluator: an accumulated (K+1)x(K+1) int64 confusion matrix.

Rows are ground truth, columns prediction. Pixels whose ground truth is the ignore index (255)
are excluded. A *predicted* 255 (a refinement stage may leave pixels unlabelled) is a miss: it is
counted as a false negative of the ground-truth class and a false positive of no class
(``pred_ignored``), instead of being silently mapped to background.

Per class c, with U = TP + FP + FN: IoU = TP/U, FPR = FP/U, FNR = FN/U, so that
IoU + FPR + FNR = 1 for every class present in the ground truth or the prediction. Means are
NaN-means over those classes, background included.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        self.n = num_classes  # K+1, background included
        self.ignore_index = ignore_index
        self.mat = np.zeros((self.n, self.n), dtype=np.int64)
        self.pred_ignored = np.zeros(self.n, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred = np.asarray(pred).ravel()
        gt = np.asarray(gt).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
        if pred.dtype == np.uint8 and gt.dtype == np.uint8:
            self._update_uint8(pred, gt)
            return
        valid = gt != self.ignore_index
        gt = gt[valid].astype(np.int64)
        pred = pred[valid].astype(np.int64)
        if gt.size and gt.max() >= self.n:
            raise ValueError(f"ground-truth label {gt.max()} outside 0..{self.n - 1}")
        void = pred == self.ignore_index
        if void.any():
            self.pred_ignored += np.bincount(gt[void], minlength=self.n)
            gt, pred = gt[~void], pred[~void]
        if pred.size and pred.max() >= self.n:
            raise ValueError(f"predicted label {pred.max()} outside 0..{self.n - 1} (and not {self.ignore_index})")
        self.mat += np.bincount(gt * self.n + pred, minlength=self.n * self.n).reshape(self.n, self.n)

    def _update_uint8(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Fast path for label maps: one bincount over the 256 x 256 (gt, pred) pairs."""
        table = np.bincount((gt.astype(np.uint16) << 8) | pred, minlength=65536).reshape(256, 256)
        table[self.ignore_index] = 0  # ignored ground truth
        bad_gt = table[self.n :].sum(1)
        if bad_gt.any():
            raise ValueError(f"ground-truth label {self.n + int(np.nonzero(bad_gt)[0].max())} outside 0..{self.n - 1}")
        rows = table[: self.n]
        outside = rows[:, self.n :].sum(0)
        outside[self.ignore_index - self.n] = 0
        if outside.any():
            raise ValueError(f"predicted label {self.n + int(np.nonzero(outside)[0].max())} outside 0..{self.n - 1} (and not {self.ignore_index})")
        self.pred_ignored += rows[:, self.ignore_index]
        self.mat += rows[:, : self.n]

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.mat += other.mat
        self.pred_ignored += other.pred_ignored
        return self

    def compute(self) -> dict[str, np.ndarray | float]:
        return metrics_from_confusion(self.mat, self.pred_ignored)


def metrics_from_confusion(mat: np.ndarray, pred_ignored: np.ndarray | None = None) -> dict:
    """IoU / FPR / FNR per class and their means (fractions in [0, 1]) from a confusion matrix."""
    mat = np.asarray(mat, dtype=np.int64)
    tp = np.diag(mat).astype(np.float64)
    fp = mat.sum(axis=0) - tp
    fn = mat.sum(axis=1) - tp
    if pred_ignored is not None:
        # pred_ignored pixels are outside mat: add them as misses of their ground-truth class
        fn += np.asarray(pred_ignored, dtype=np.float64)
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        fpr = np.where(union > 0, fp / union, np.nan)
        fnr = np.where(union > 0, fn / union, np.nan)
    present = union > 0

    def mean(a: np.ndarray) -> float:
        return float(np.nanmean(a)) if present.any() else float("nan")

    return {"iou": iou, "fpr": fpr, "fnr": fnr, "miou": mean(iou), "mfpr": mean(fpr), "mfnr": mean(fnr)}
