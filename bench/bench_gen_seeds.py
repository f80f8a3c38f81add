"""Benchmark of `usage gen-seeds` on VOC-sized images (500x375), the paper's 4 scales x flip.

For each backbone (random weights: speed does not depend on them):
* stage: images/s of the real stage (``usage_cli.stages.gen_seeds.run``: decode workers, batching by
  size, fusion, normalisation, HDF5 writing; patch-affinity refinement for transformers too);
* bare: images/s of the network's forward alone on the same tensors, as many views a forward as the
  stage uses (one on the CPU, where batching VOC-sized views is slower; 16 on a GPU): the ratio
  stage/bare is the share of time not lost to decoding, resizing, fusing and writing;
* reference: the per-image loop of the reference implementations (one image, one scale, one flip
  per forward; a pickled ``.npy`` dict per image).
Each mode runs in its own process, so its peak RSS is its own.

    python bench/bench_gen_seeds.py [--images 8] [--backbones deit_s,efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SCALES = (1.0, 0.5, 1.5, 2.0)


def _dataset(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    v = root / "VOCdevkit" / "VOC2012"
    (v / "JPEGImages").mkdir(parents=True)
    (v / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"im{i:03d}" for i in range(n)]
    labels = {}
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(v / "JPEGImages" / f"{i}.jpg", quality=90)
        vec = np.zeros(20, np.float32)
        vec[rng.choice(20, 2, replace=False)] = 1
        labels[i] = vec
    (v / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids))
    np.save(root / "cls_labels.npy", np.array(labels, dtype=object), allow_pickle=True)


def _ckpt(path: Path, backbone: str) -> None:
    from usage_cli.artifacts.checkpoint import save_checkpoint
    from usage_cli.models.classifier import build_classifier

    torch.manual_seed(0)
    net = build_classifier({"backbone": backbone, "num_classes": 20, "img_size": 224, "tau1": 1.0})
    save_checkpoint(path, {"format": "usage-cls-checkpoint", "version": "1.0.0", "model": net.state_dict(), "model_config": net.model_config})


def _one(mode: str, backbone: str, work: Path, n: int, workers: int) -> dict:
    from usage_cli.data import load_dataset
    from usage_cli.data.io import read_image
    from usage_cli.models.classifier import load_classifier
    from usage_cli.stages.gen_seeds import GenSeedsConfig, run

    ckpt, root = work / f"{backbone}.pt", work / "data"
    out = work / f"out-{backbone}-{mode}"
    t0 = time.perf_counter()
    extra = {}
    if mode.startswith("stage"):
        refine = "patch-affinity" if mode == "stage-affinity" else "none"
        seeds = run(GenSeedsConfig(ckpt=ckpt, dataset="voc", root=root, split="train", out=out, scales=SCALES, refine=refine,
                                   batch_size=8, workers=workers, overlays=0, force=True, quiet=True))  # fmt: skip
        extra["h5_kb_per_image"] = seeds.stat().st_size / 1024 / n
    else:
        net, _ = load_classifier(ckpt)
        recs = load_dataset("voc", root, "train").records
        mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in net.input_norm())
        imgs = [torch.from_numpy(read_image(r.image_path)).permute(2, 0, 1)[None].float() / 255 for r in recs]
        if mode == "bare":  # batched forward only, tensors prepared outside the timer
            x0 = (torch.cat(imgs) - mean) / std
            views = []
            for s in SCALES:
                size = (max(16, round(375 * s / 16) * 16), max(16, round(500 * s / 16) * 16))
                x = torch.nn.functional.interpolate(x0, size=size, mode="bilinear", align_corners=False)
                views.append(torch.cat([x, x.flip(-1)]))
            per_forward = 1 if not torch.cuda.is_available() else 16  # as the stage: one view a forward on the CPU
            t0 = time.perf_counter()
            with torch.no_grad():
                for v in views:
                    for i in range(0, len(v), per_forward):
                        net(v[i : i + per_forward])
        else:  # reference-style loop: one image, one scale, one flip at a time; a pickled npy per image
            out.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                for r, img in zip(recs, imgs, strict=True):
                    acc = 0
                    for s in SCALES:
                        size = (max(16, round(375 * s / 16) * 16), max(16, round(500 * s / 16) * 16))
                        x = torch.nn.functional.interpolate((img - mean) / std, size=size, mode="bilinear", align_corners=False)
                        for xf in (x, x.flip(-1)):
                            z = net(xf)["cams"]
                            z = z.flip(-1) if xf is not x else z
                            acc = acc + torch.nn.functional.interpolate(z, size=(375, 500), mode="bilinear", align_corners=False)[0]
                    cam = torch.relu(acc)[[c - 1 for c in r.labels]]
                    cam = cam / (cam.flatten(1).max(-1).values[:, None, None] + 1e-5)
                    np.save(out / f"{r.id}.npy", {c: m.numpy() for c, m in zip(r.labels, cam, strict=True)}, allow_pickle=True)
    dt = time.perf_counter() - t0
    return {"mode": mode, "backbone": backbone, "images_per_s": n / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def main() -> None:
    if sys.argv[1:2] == ["_one"]:
        mode, backbone, work, n, workers = sys.argv[2:7]
        print(json.dumps(_one(mode, backbone, Path(work), int(n), int(workers))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--backbones", default="deit_s,efficientnet_lite0")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        _dataset(work / "data", a.images)
        rows = []
        for b in a.backbones.split(","):
            _ckpt(work / f"{b}.pt", b)
            modes = ["bare", "stage", "reference"] + (["stage-affinity"] if b.startswith("deit") else [])
            for m in modes:
                cmd = [sys.executable, __file__, "_one", m, b, str(work), str(a.images), str(a.workers)]
                rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]))
    print(f"gen-seeds on {a.images} images of 500x375, scales {SCALES} x flip, {os.cpu_count()} CPU threads, {a.workers} decode workers")
    print("| backbone | mode | images/s | vs bare forward | vs reference loop | peak RSS MB | HDF5 KB/image |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b in a.backbones.split(","):
        r = {x["mode"]: x for x in rows if x["backbone"] == b}
        for m, x in r.items():
            kb = f"{x['h5_kb_per_image']:.0f}" if "h5_kb_per_image" in x else ""
            print(f"| {b} | {m} | {x['images_per_s']:.2f} | {x['images_per_s'] / r['bare']['images_per_s']:.2f} | "
                  f"{x['images_per_s'] / r['reference']['images_per_s']:.2f} | {x['peak_rss_mb']:.0f} | {kb} |")


if __name__ == "__main__":
    main()
