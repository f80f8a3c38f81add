"""Fully connected CRF (Krähenbühl & Koltun) on class probabilities, and a process-pool map.

The kernels default to the values PSA, SEAM and MCTformer use for seeds: a Gaussian kernel
(sxy 3, compat 3) and a bilateral kernel (sxy 80, srgb 13, compat 10), 10 mean-field iterations.
pydensecrf2 (import name ``pydensecrf``) is imported only when a CRF is run, so the rest of the
toolkit works without it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import numpy as np

from usage_cli.errors import ConfigError, MissingDependencyError

T = TypeVar("T")
R = TypeVar("R")

PROB_FLOOR = 1e-5  # probabilities are clipped here before -log, as pydensecrf's unary_from_softmax does


def _densecrf_module():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "the dense CRF (refine-psa, predict-seg --crf) needs pydensecrf2: pip install pydensecrf2"
        ) from e
    return dcrf


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    *,
    n_iter: int = 10,
    gauss_sxy: float = 3,
    gauss_compat: float = 3,
    bi_sxy: float = 80,
    bi_srgb: float = 13,
    bi_compat: float = 10,
) -> np.ndarray:
    """Mean-field posterior (C x H x W float32) of HxWx3 uint8 ``image`` given C x H x W ``probs``.

    ``probs`` need not be normalised per pixel (PSA feeds un-normalised powers); the unary is
    ``-log(max(p, 1e-5))`` like pydensecrf's ``unary_from_softmax``. One channel is returned as is.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs must be C x {image.shape[0]} x {image.shape[1]}, got {probs.shape}")
    n, h, w = probs.shape
    if n == 1:
        return probs.astype(np.float32, copy=True)
    dcrf = _densecrf_module()
    # 1. unary energy -log p, C x (H*W), C-contiguous float32
    unary = -np.log(np.clip(probs.astype(np.float32), PROB_FLOOR, None)).reshape(n, h * w)
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    # 2. smoothness (position) and appearance (position + colour) kernels, Potts compatibility
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(sxy=bi_sxy, srgb=bi_srgb, rgbim=np.ascontiguousarray(image), compat=bi_compat)
    # 3. mean-field inference
    q = crf.inference(n_iter)
    return np.asarray(q, dtype=np.float32).reshape(n, h, w)


def default_workers() -> int:
    """CPU cores this process may use (the affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def crf_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` over ``workers`` processes, results in input order.

    ``workers`` <= 1 runs in this process (no pickling). ``fn`` must be a module-level function;
    children start from a fork server, so a parent holding torch threads is safe. Call from under
    ``if __name__ == "__main__":`` in scripts.
    """
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    n = min(workers, len(items))
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (4 * n))))
