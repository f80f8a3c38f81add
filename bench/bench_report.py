"""Benchmark of `usage report --html`: end to end through the CLI (interpreter start and imports
included), with and without the gallery.

1. The demo run (`make demo`, 96 train + 32 val images, 8 metrics files): the whole page, and the
   page without its gallery; the target is under 10 s.
2. VOC scale: the 1,449 PASCAL VOC 2012 val masks of ../shared/data/voc2012 as the ground truth, a seed
   store and a folder of predictions made from them (masks shifted by 24 px; stand-in JPEGs, since
   the shared copy has almost no images), scored by `usage evaluate`; then the report with
   `--gallery 0` and with the default 24 images. The difference is the gallery; the rest does not
   grow with the split (metrics files, one directory listing, the figures).

    python bench/bench_report.py [--demo demo] [--voc-images 1449]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REPORT = [sys.executable, "-m", "usage_cli", "report"]


def _timed(*args: str) -> float:
    """Seconds of one `usage report ...` call, best of two."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run([*REPORT, *args], check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        best = min(best, time.perf_counter() - t0)
    return best


def demo(run_dir: Path) -> None:
    metrics = sorted((run_dir / "metrics").glob("*.json"))
    if not metrics:
        print(f"demo skipped: no {run_dir}/metrics/*.json (run `make demo` first)")
        return
    with tempfile.TemporaryDirectory() as d:
        full = _timed(str(run_dir), "--html", f"{d}/r")
        size = sum(f.stat().st_size for f in Path(d, "r").rglob("*")) / 1e6
        bare = _timed(str(run_dir), "--html", f"{d}/r", "--gallery", "0")
        table = _timed(str(run_dir))
    print(f"demo ({len(metrics)} metrics files, 2 splits x 24 gallery images): report --html {full:.2f} s, {size:.1f} MB "
          f"(--gallery 0: {bare:.2f} s; the table alone, no --html: {table:.2f} s)")  # fmt: skip


def _voc_run(work: Path, n: int) -> Path:
    """A run folder over the first ``n`` VOC val ids: data/ (masks linked, stand-in JPEGs), seeds-val/,
    preds-val/ and metrics/."""
    from usage_cli.artifacts.labels import write_label_png
    from usage_cli.artifacts.manifest import build_manifest, write_manifest
    from usage_cli.artifacts.seeds import SeedWriter
    from usage_cli.data import load_dataset
    from usage_cli.data.io import read_mask
    from usage_cli.data.labels_io import read_split_file
    from usage_cli.data.records import voc_palette
    from usage_cli.stages.evaluate import EvaluateConfig
    from usage_cli.stages.evaluate import run as evaluate

    src = SHARED / "voc2012" / "VOCdevkit" / "VOC2012"
    v = work / "run" / "data" / "VOCdevkit" / "VOC2012"
    (v / "ImageSets" / "Segmentation").mkdir(parents=True)
    (v / "JPEGImages").mkdir()
    os.symlink(src / "SegmentationClassAug", v / "SegmentationClassAug")
    os.symlink(SHARED / "voc2012" / "cls_labels.npy", work / "run" / "data" / "cls_labels.npy")
    ids = read_split_file(src / "ImageSets" / "Segmentation" / "val.txt")[:n]
    (v / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    ds = load_dataset("voc", work / "run" / "data", "val", require_images=False)
    pal = np.array(voc_palette(), np.uint8).reshape(256, 3)
    rng = np.random.default_rng(0)
    run = work / "run"
    with SeedWriter(run / "seeds-val" / "seeds.h5", {"class_names": list(ds.meta.class_names)}) as w:
        for r in ds.records:
            gt = read_mask(r.mask_path)
            photo = (0.6 * pal[gt] + 0.4 * rng.integers(0, 255, (*gt.shape, 3))).astype(np.uint8)
            Image.fromarray(photo).save(v / "JPEGImages" / f"{r.id}.jpg", quality=85)
            shifted = np.roll(gt, 24, axis=1)
            write_label_png(run / "preds-val" / f"{r.id}.png", shifted)
            cam = np.stack([(shifted == k) * 0.8 + 0.1 for k in r.labels]) if r.labels else np.zeros((0, *gt.shape))
            w.write(r.id, r.labels, cam, gt.shape)
        w.commit()
    cfg = {"dataset": "voc", "root": str(run / "data"), "split": "val"}
    write_manifest(run / "seeds-val", build_manifest("gen-seeds", cfg))
    write_manifest(run / "preds-val", build_manifest("predict-seg", cfg))
    for name, pred in (("seeds-val", run / "seeds-val" / "seeds.h5"), ("preds-val", run / "preds-val")):
        evaluate(EvaluateConfig(dataset="voc", root=run / "data", split="val", pred=pred, out=run / "metrics" / f"{name}.json", quiet=True))
    return run


def voc(n: int) -> None:
    if not (SHARED / "voc2012").exists():
        print(f"VOC scale skipped: {SHARED / 'voc2012'} is absent")
        return
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run = _voc_run(Path(d), n)
        made = time.perf_counter() - t0
        bare = _timed(str(run), "--html", f"{d}/r", "--gallery", "0")
        full = _timed(str(run), "--html", f"{d}/r")
        rows = len(list(Path(d, "r", "gallery").glob("*.jpg")))
    print(f"VOC val, {n} images (seeds + predictions, set up and evaluated in {made:.0f} s): report --html --gallery 0 "
          f"{bare:.2f} s; with the 24-image gallery {full:.2f} s; the gallery: {full - bare:.2f} s "
          f"({(full - bare) / 24 * 1000:.0f} ms an image, {rows} tiles)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("demo"))
    ap.add_argument("--voc-images", type=int, default=1449, help="0: skip the VOC part")
    args = ap.parse_args()
    demo(args.demo)
    if args.voc_images > 0:
        voc(args.voc_images)


if __name__ == "__main__":
    main()
