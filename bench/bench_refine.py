"""Benchmark of `usage refine-psa`'s parts on VOC-sized images, and its pseudo-mask gain on synth data.

    .venv/bin/python bench/bench_refine.py [--images 8] [--workers N] [--gain-train 48] [--gain-epochs 8]

1. Dense CRF images/s on 500 x 375 images (3 labels: background + 2 classes), 1 and N processes.
2. Random walk images/s and peak resident memory (a fresh process per setting) on the 64 x 48
   stride-8 grid of a 512 x 384 padded image, 21 channels, radius 5, beta 8, logt 6 and 8:
   the local (window) walk and PSA's dense repeated squaring.
3. Pseudo-mask gain: refine-psa on a generated synth set whose seeds are made from the ground
   truth (blurred with sigma 6, shifted 5 px: a stand-in for CAMs, NOT a classifier's seeds);
   mIoU of the seeds (constant background 0.39, and the best over the sweep) vs of the masks.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

H, W = 375, 500


def _voc_like(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with two ellipses and a misaligned soft 3-label probability map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = rng.normal(110, 20, (H, W, 3))
    probs = np.full((3, H, W), 0.2, np.float32)
    for k, (cy, cx, r, col) in enumerate([(150, 160, 90, (200, 60, 60)), (240, 360, 80, (60, 60, 200))], 1):
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[inside] = col + rng.normal(0, 15, (int(inside.sum()), 3))
        probs[k][((yy - cy - 12) ** 2 + (xx - cx - 12) ** 2) < (r * 1.1) ** 2] = 0.7
    return np.clip(img, 0, 255).astype(np.uint8), probs / probs.sum(0, keepdims=True)


def _crf_label(item):
    from usage_cli.algorithms.crf import dense_crf

    image, probs = item
    return dense_crf(image, probs).argmax(0)


def bench_crf(n: int, workers: int) -> dict:
    from usage_cli.algorithms.crf import crf_map

    items = [_voc_like(i) for i in range(n)]
    out = {}
    for w in sorted({1, workers}):
        crf_map(_crf_label, items[:2], w)  # warm-up (and the fork server)
        t = time.perf_counter()
        crf_map(_crf_label, items, w)
        out[f"crf_images_per_s_{w}_workers"] = round(n / (time.perf_counter() - t), 2)
    return out


def walk_child(method: str, logt: int, n: int) -> None:
    """Runs in a fresh process: images/s and peak RSS of one walk setting, printed as JSON."""
    import torch

    from usage_cli.algorithms.affinity import pair_affinity, search_offsets
    from usage_cli.algorithms.random_walk import walk

    torch.manual_seed(0)
    offsets = search_offsets(5)
    h, w = 48, 64
    feat = torch.randn(1, 16, h, w) * 0.3
    seeds = torch.rand(1, 21, h, w)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    walk(seeds, pair_affinity(feat, offsets), offsets, 8.0, logt, method=method)  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        walk(seeds, pair_affinity(feat, offsets), offsets, 8.0, logt, method=method)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"images_per_s": round(n / dt, 2), "peak_rss_mb": round(peak / 1024, 1), "walk_extra_mb": round((peak - base) / 1024, 1)}))


def bench_walk(n: int) -> dict:
    out = {}
    for method in ("local", "dense"):
        for logt in (6, 8):
            cmd = [sys.executable, __file__, "--walk-child", method, str(logt), str(n)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[f"walk_{method}_logt{logt}"] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def bench_gain(n_train: int, size: int, epochs: int, workers: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the ground-truth seeds helper lives with the tests
    from gt_seeds import write_ground_truth_seeds

    from usage_cli.chains.refine_psa import RefinePsaConfig, run
    from usage_cli.data import load_dataset
    from usage_cli.data.synth import generate
    from usage_cli.stages.evaluate import EvaluateConfig
    from usage_cli.stages.evaluate import run as evaluate

    tmp = Path(tempfile.mkdtemp(prefix="bench_refine_"))
    root = tmp / "synth"
    generate(root, n_train=n_train, n_val=4, size=size, seed=1)
    ds = load_dataset("voc", root, "train")
    seeds = tmp / "seeds.h5"
    write_ground_truth_seeds(seeds, ds.records, ds.meta.num_classes, sigma=6.0, shift=5)
    t = time.perf_counter()
    cfg = RefinePsaConfig(
        seeds=seeds, dataset="voc", root=root, split="train", out=tmp / "masks", backbone="efficientnet_lite0",
        pretrained=True, epochs=epochs, batch_size=8, crop=size, workers=workers, device="auto", quiet=True,
    )  # fmt: skip
    run(cfg)
    took = time.perf_counter() - t

    def score(pred: Path, **kw) -> dict:
        return evaluate(EvaluateConfig(dataset="voc", root=root, split="train", pred=pred, quiet=True, **kw))

    fixed, swept, masks = score(seeds, bg_threshold=0.39), score(seeds), score(tmp / "masks")
    log = [json.loads(ln) for ln in (tmp / "masks" / "affinity-train" / "log.jsonl").read_text().splitlines()]
    return {
        "synth": f"{n_train} train images of {size} px, seeds = GT blurred (sigma 6) + shifted 5 px",
        "refine_psa_seconds": round(took, 1), "aff_loss_first_last": [round(log[0]["loss"], 3), round(log[-1]["loss"], 3)],
        "seed_miou_bg0.39": fixed["miou"], "seed_miou_best": swept["miou"], "seed_best_threshold": swept.get("threshold"),
        "mask_miou": masks["miou"], "mask_fpr": masks["fpr"], "mask_fnr": masks["fnr"],
        "gain_over_seed_bg0.39": round(masks["miou"] - fixed["miou"], 2), "gain_over_best_seed": round(masks["miou"] - swept["miou"], 2),
    }  # fmt: skip


def main() -> None:
    from usage_cli.algorithms.crf import default_workers

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="images per CRF / walk timing")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--gain-train", type=int, default=48, help="synth training images for the gain run (0: skip)")
    ap.add_argument("--gain-size", type=int, default=128)
    ap.add_argument("--gain-epochs", type=int, default=8)
    ap.add_argument("--walk-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.walk_child:
        walk_child(args.walk_child[0], int(args.walk_child[1]), int(args.walk_child[2]))
        return
    import torch

    report = {"torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "image": f"{W}x{H}"}
    report.update(bench_crf(args.images, args.workers))
    report.update(bench_walk(args.images))
    if args.gain_train:
        report.update(bench_gain(args.gain_train, args.gain_size, args.gain_epochs, args.workers))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
