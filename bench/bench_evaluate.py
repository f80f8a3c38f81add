"""Benchmark of `usage evaluate`.

1. PNG path: the 10,582 real VOC train_aug masks of ../shared/data/voc2012 scored against themselves,
   with 1 and N worker processes: images/s and Mpixel/s (ground truth and prediction both decoded).
2. Seed path: ~200 VOC-sized (500x375) images with random seed maps in a temporary HDF5 store; the
   cost of the full 96-threshold sweep relative to a single fixed threshold.

    python bench/bench_evaluate.py [--workers 2] [--seed-images 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from usage_cli.artifacts.seeds import SeedWriter
from usage_cli.stages.evaluate import EvaluateConfig, run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _timed(cfg: EvaluateConfig) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = run(cfg)
    return time.perf_counter() - t0, out


def png_path(workers: list[int]) -> None:
    voc = SHARED / "voc2012"
    if not voc.exists():
        print(f"PNG path skipped: {voc} is absent")
        return
    masks = voc / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    for w in workers:
        dt, out = _timed(EvaluateConfig(dataset="voc", root=voc, split="train_aug", pred=masks, workers=w))
        n = out["num_images"]
        mpix = np.asarray(out["confusion"]).sum() / 1e6  # scored (non-ignored) pixels
        print(f"PNG masks: {n} images, {w} worker(s): {dt:.1f} s, {n / dt:.0f} images/s, {mpix / dt:.1f} Mpixel/s scored (mIoU {out['miou']:.1f})")


def seed_path(n_images: int, workers: int) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "data"
        v = root / "VOCdevkit" / "VOC2012"
        (v / "SegmentationClass").mkdir(parents=True)
        (v / "ImageSets" / "Segmentation").mkdir(parents=True)
        ids = [f"img{i:04d}" for i in range(n_images)]
        with SeedWriter(Path(d) / "seeds.h5", {}) as w:
            for i in ids:
                gt = rng.integers(0, 4, (375, 500)).astype(np.uint8)
                Image.fromarray(gt, "L").save(v / "SegmentationClass" / f"{i}.png")
                keys = np.sort(rng.choice(np.arange(1, 21), 2, replace=False))
                w.write(i, keys, rng.random((2, 375, 500)).astype(np.float16), (375, 500))
            w.commit()
        (v / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids))
        base = dict(dataset="voc", root=root, split="train", pred=Path(d) / "seeds.h5", workers=workers)
        t_one, _ = _timed(EvaluateConfig(**base, bg_threshold=0.3))
        t_sweep, out = _timed(EvaluateConfig(**base))
        print(f"seeds: {n_images} images 500x375, {workers} worker(s): one threshold {t_one:.2f} s "
              f"({n_images / t_one:.0f} images/s), 96-threshold sweep {t_sweep:.2f} s ({n_images / t_sweep:.0f} images/s): "
              f"sweep/single = {t_sweep / t_one:.2f}x (curve of {len(out['curve'])} points)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--seed-images", type=int, default=200)
    a = p.parse_args()
    print(f"machine: {os.cpu_count()} CPU threads")
    png_path(sorted({1, a.workers}))
    seed_path(a.seed_images, a.workers)


if __name__ == "__main__":
    main()
