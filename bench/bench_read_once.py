"""refine-psa on a large seed store: wall time before and after "read once, hash once".

A seed store of ``--store-gb`` GB (the split's images from their ground truth, plus padding images of
random maps, as a train_aug store walked on a smaller split holds), its own background threshold
recorded (so the auto preset does not scan it). ``usage refine-psa`` runs on a tiny split, tiny
settings, once from scratch and once again (its steps kept), under each checkout given — the same
command, each in a fresh process — so the time left besides the network work is reading and hashing
the store. Also printed: one sha256 pass over the store (page cache warm, as in both runs).

    heavy --all python bench/bench_read_once.py --before /tmp/base-checkout --store-gb 1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from usage_cli.artifacts.labels import read_label_png
from usage_cli.artifacts.seeds import SeedWriter
from usage_cli.data import load_dataset
from usage_cli.data.synth import generate

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["--backbone", "efficientnet_lite0", "--pretrained", "--epochs", "1", "--batch-size", "4", "--crop", "64", "--device", "cpu",
            "--workers", "1", "--quiet"]  # fmt: skip


def make_store(path: Path, root: Path, gb: float, side: int = 512) -> int:
    """The split's seeds from its ground truth, then random padding images up to ``gb`` GB; its size."""
    ds = load_dataset("voc", root, "train")
    rng = np.random.default_rng(0)
    with SeedWriter(path, {"num_classes": ds.meta.num_classes, "class_names": list(ds.meta.class_names), "stride": 1}, resume=False) as w:
        for r in ds.records:
            gt = read_label_png(r.mask_path)
            w.write(r.id, r.labels, np.stack([(gt == k).astype(np.float32) for k in r.labels]), gt.shape)
        i = 0
        while path.with_name(path.name + ".partial").stat().st_size < gb * 1e9:
            w.write(f"pad_{i:06d}", [1, 2, 3], rng.random((3, side, side), dtype=np.float32), (side, side))
            i += 1
            if i % 100 == 0:
                w.flush()
        w.commit({"bg_threshold": 0.4, "bg_threshold_rule": "bench"})
    return path.stat().st_size


def timed_run(checkout: Path, seeds: Path, root: Path, out: Path) -> float:
    cmd = [sys.executable, "-c", "from usage_cli.cli import main; main()", "refine-psa", "--seeds", str(seeds), "--root", str(root),
           "--split", "train", "--out", str(out), *SETTINGS]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=checkout)
    return time.perf_counter() - t0


def sha256_seconds(path: Path) -> float:
    t0, h = time.perf_counter(), hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, required=True, help="a checkout of the code before (e.g. a worktree of the base commit)")
    p.add_argument("--after", type=Path, default=REPO, help="the checkout after (default: this one)")
    p.add_argument("--store-gb", type=float, default=1.0)
    p.add_argument("--images", type=int, default=8, help="images of the split refined")
    p.add_argument("--work", type=Path, default=None)
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="read-once-"))
    root, seeds = work / "data", work / "seeds" / "seeds.h5"
    generate(root, a.images, 2, 64, seed=0)
    size = make_store(seeds, root, a.store_gb)
    print(f"seed store: {size / 1e9:.2f} GB, {a.images} images refined; one sha256 pass: {sha256_seconds(seeds):.1f} s")
    print(f"{'code':<8} {'first run (s)':>14} {'rerun (s)':>10}")
    for label, checkout in (("before", a.before), ("after", a.after)):
        first = timed_run(checkout, seeds, root, work / label)
        again = timed_run(checkout, seeds, root, work / label)
        print(f"{label:<8} {first:>14.1f} {again:>10.1f}")


if __name__ == "__main__":
    main()
