"""Multi-label classification metrics: mean average precision and F1 at a threshold."""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one class (area under the precision-recall curve, VOC-style non-interpolated)."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0.5
    if not hits.any():
        return float("nan")
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def multilabel_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """mAP over classes with at least one positive, and micro F1 at ``threshold`` (percent)."""
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(labels.shape[1])]
    pred = scores >= threshold
    pos = labels > 0.5
    tp = float((pred & pos).sum())
    f1 = 2 * tp / max(float(pred.sum() + pos.sum()), 1.0)
    valid = [a for a in aps if not np.isnan(a)]
    return {"mAP": 100.0 * float(np.mean(valid)) if valid else float("nan"), "F1": 100.0 * f1}
