"""Seed stores made from ground truth, for the tests and benchmarks of the refinement.

Not part of the package: a stand-in for CAMs that only tests and ``bench/bench_refine.py`` use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from usage_cli.artifacts.labels import read_label_png
from usage_cli.artifacts.seeds import SeedWriter


def write_ground_truth_seeds(path: str | Path, records, num_classes: int, sigma: float = 2.0, shift: int = 2) -> Path:
    """A seed store made from ground truth, a stand-in for CAMs when testing or benchmarking the
    refinement: each present class's mask blurred (``sigma``), shifted ``shift`` px right and
    max-normalised."""
    with SeedWriter(path, {"num_classes": num_classes, "stride": 1}, resume=False) as w:
        for r in records:
            gt = read_label_png(r.mask_path)
            cams = [np.roll(ndimage.gaussian_filter((gt == k).astype(np.float32), sigma), shift, axis=1) for k in r.labels]
            cam = np.stack([c / max(c.max(), 1e-6) for c in cams]) if cams else np.zeros((0, *gt.shape), np.float32)
            w.write(r.id, r.labels, cam, gt.shape)
        w.commit()
    return Path(path)
