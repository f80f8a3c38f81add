"""Background-threshold sweep for seed maps in one pass over the data.

A seed map set (``keys``, ``cam`` in [0, 1]) becomes a label map for a background threshold t as
``[0, keys...][argmax([t, cam...])]`` (background wins ties): a pixel with maximum score m and
arg-max class a is ``a`` for every t < m and background otherwise. So it suffices to count, per
image, the pixels by (bin of m among the thresholds, ground truth, a) once; cumulative sums over the
bins then give the confusion matrix of every threshold.
"""

from __future__ import annotations

import numpy as np

MAX_THRESHOLDS = 1001  # a sweep's thresholds: a confusion matrix each, per chunk of images


def parse_thresholds(spec: str) -> np.ndarray:
    """``"0.00:0.95:0.01"`` (start:stop:step, stop included) or ``"0.1,0.2"`` -> sorted array."""
    try:
        if ":" in spec:
            start, stop, step = (float(x) for x in spec.split(":"))
            if not all(np.isfinite((start, stop, step))) or not 0 <= start <= 1 or not 0 <= stop <= 1:
                raise ValueError(f"bad threshold list '{spec}': start and stop must lie in [0, 1]")
            if step <= 0:
                raise ValueError(f"bad threshold list '{spec}': the step must be positive")
            if start > stop:
                raise ValueError(f"bad threshold list '{spec}': start {start:g} exceeds stop {stop:g} (start:stop:step)")
            n = int(round((stop - start) / step)) + 1
            if n > MAX_THRESHOLDS:
                raise ValueError(f"bad threshold list '{spec}': {n} thresholds; a step of at least {1 / (MAX_THRESHOLDS - 1):g} (at most {MAX_THRESHOLDS})")
            values = np.round(start + step * np.arange(n), 6)
        else:
            values = np.array([float(x) for x in spec.split(",")])
    except ValueError as e:
        if str(e).startswith("bad threshold list"):
            raise
        raise ValueError(f"bad threshold list '{spec}': use start:stop:step or comma-separated values") from e
    if values.size == 0 or values.size > MAX_THRESHOLDS or not ((values >= 0) & (values <= 1)).all():  # NaN fails too
        raise ValueError(f"bad threshold list '{spec}': values must lie in [0, 1]")
    return np.unique(values)


def fg_max_argmax(cam: np.ndarray, keys: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel maximum foreground score and its label value (0 where no class is present)."""
    if len(keys) == 0:
        return np.full(shape, -np.inf, np.float32), np.zeros(shape, np.int64)
    cam = np.asarray(cam, dtype=np.float32)
    idx = cam.argmax(0)
    m = np.take_along_axis(cam, idx[None], 0)[0]
    return m, np.asarray(keys, np.int64)[idx]


def binned_counts(m: np.ndarray, a: np.ndarray, gt: np.ndarray, thresholds: np.ndarray, n: int, ignore: int = 255) -> np.ndarray:
    """Counts ``[T+1, n, n]`` of pixels by (number of thresholds below m, ground truth, a)."""
    # 1. drop ignored pixels
    valid = gt != ignore
    m, a, g = m[valid], a[valid], gt[valid].astype(np.int64)
    if g.size and g.max() >= n:
        raise ValueError(f"ground-truth label {g.max()} outside 0..{n - 1}")
    # 2. bin of the max score: b thresholds lie strictly below m, so the pixel is fg for t_0..t_{b-1}
    b = np.searchsorted(thresholds, m, side="left").astype(np.int64)
    # 3. one bincount over (b, g, a)
    flat = (b * n + g) * n + a
    return np.bincount(flat, minlength=(len(thresholds) + 1) * n * n).reshape(len(thresholds) + 1, n, n)


def confusions_from_counts(counts: np.ndarray) -> np.ndarray:
    """Per-threshold confusion matrices ``[T, n, n]`` from summed :func:`binned_counts`."""
    # pixels with bin > i are foreground (predicted a) at threshold i ...
    fg = np.cumsum(counts[::-1], axis=0)[::-1][1:]
    # ... pixels with bin <= i are background (column 0)
    bg_rows = np.cumsum(counts.sum(axis=2), axis=0)[:-1]
    out = fg.copy()
    out[:, :, 0] += bg_rows
    return out


def per_threshold_miou(counts: np.ndarray) -> np.ndarray:
    """One image's mIoU ``[T]`` at every threshold from its :func:`binned_counts` (NaN: nothing scored)."""
    # 1. keep background and the label values the image has (in ground truth or prediction): the rest are absent
    seen = counts.sum(axis=(0, 1)) + counts.sum(axis=(0, 2))
    keep = np.union1d([0], np.nonzero(seen)[0])
    mats = confusions_from_counts(counts[:, keep][:, :, keep]).astype(np.float64)
    # 2. IoU = TP / (TP + FP + FN) per class and threshold, NaN-mean over the classes with a union
    tp = np.diagonal(mats, axis1=1, axis2=2)
    union = mats.sum(axis=1) + mats.sum(axis=2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    out = np.full(len(mats), np.nan)
    scored = (union > 0).any(axis=1)
    out[scored] = np.nanmean(iou[scored], axis=1)
    return out


def power_prediction(m: np.ndarray, a: np.ndarray, alpha: float) -> np.ndarray:
    """PSA/IRN background ``(1 - max)^alpha``: foreground where m > (1 - m)^alpha."""
    bg = np.power(np.clip(1.0 - m, 0.0, 1.0), alpha)
    return np.where(m > bg, a, 0)
