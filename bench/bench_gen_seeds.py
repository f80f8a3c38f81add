"""Benchmark of `usage gen-seeds` on VOC-sized images (500x375): the paper's 4 scales x flip, and
scale 1 alone for the paper's seed path.

For each backbone (random weights: speed does not depend on them):
* stage: images/s of the real stage (``usage_cli.stages.gen_seeds.run``: decode workers, batching by
  size, fusion, normalisation, HDF5 writing), ``--refine none``;
* bare: images/s of the network's forward alone on the same tensors (made outside the timer, one
  image's views at a time), as many views a forward as the stage uses (one on the CPU, where batching
  VOC-sized views is slower; all of a scale on a GPU): the ratio stage/bare is the share of time not
  lost to decoding, resizing, fusing and writing;
* reference: the per-image loop of the reference implementations (one image, one scale, one flip
  per forward; a pickled ``.npy`` dict per image);
* transformers, the paper's seed path (``--refine patch-affinity``, MCTformer's patch affinity):
  ``affinity`` the stage as it is (``cam_infer.affinity_pass`` auto: on the CPU the single pass,
  each kept layer's attention formed a block of query rows at a time and summed into one N x N
  affinity per view in the forward; on a GPU the recompute), ``affinity-recompute`` the stage with the
  recompute forced (every layer through the fused attention kernel, the affinity's product with the
  maps from the kept queries and keys), ``affinity-explicit`` the same stage with
  the computation issue 31 replaced (``bench/explicit_affinity.py``: the last layers' attention formed, their
  head-mean patch blocks kept, forwards split to the old 2 GB budget on a GPU), at 4 scales x flip and at scale 1
  (one view; on 4x as many images, so that the stage's fixed costs stay small).
Each row runs in its own process, so its peak RSS is its own.

    python bench/bench_gen_seeds.py [--images 8] [--backbones deit_s,efficientnet_lite0] [--paper-path]
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
SETTINGS = {"4 scales x flip": (SCALES, True), "scale 1": ((1.0,), False)}  # name -> (scales, flip)
IMAGES_X = {"4 scales x flip": 1, "scale 1": 4}  # scale 1 on 4x --images: its fixed costs (loading, the threshold pass) stay small
AFFINITY = ("affinity-explicit", "affinity-recompute", "affinity")


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


def _sizes(scales) -> list[tuple[int, int]]:
    return [(max(16, round(375 * s / 16) * 16), max(16, round(500 * s / 16) * 16)) for s in scales]


def _stage(mode: str, ckpt: Path, root: Path, out: Path, n: int, workers: int, scales, flip: bool) -> dict:
    from usage_cli.stages.gen_seeds import GenSeedsConfig, run

    if mode == "affinity-explicit":  # the stage with the computation issue 31 replaced
        import explicit_affinity

        from usage_cli.algorithms import cam_infer

        cam_infer._forward_maps = explicit_affinity.before_forward_maps
    if mode == "affinity-recompute":  # the stage with the recompute pass on any device
        from usage_cli.algorithms import cam_infer

        cam_infer.affinity_pass = lambda device, choice="auto": "recompute"
    refine = "patch-affinity" if mode in AFFINITY else "none"
    seeds = run(GenSeedsConfig(ckpt=ckpt, dataset="voc", root=root, split="train", out=out, scales=scales, flip=flip, refine=refine,
                               batch_size=8, workers=workers, overlays=0, force=True, quiet=True))  # fmt: skip
    return {"h5_kb_per_image": seeds.stat().st_size / 1024 / n}


def _bare(net, imgs, scales, flip: bool) -> float:
    """Seconds of the forwards alone; each image's views are made (outside the timer) just before."""
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in net.input_norm())
    per_forward = 1 if not torch.cuda.is_available() else 1 << 30  # as the stage: one view a forward on the CPU
    spent = 0.0
    with torch.no_grad():
        for img in imgs:
            x0 = (img - mean) / std
            for size in _sizes(scales):
                x = torch.nn.functional.interpolate(x0, size=size, mode="bilinear", align_corners=False)
                v = torch.cat([x, x.flip(-1)]) if flip else x
                t0 = time.perf_counter()
                for i in range(0, len(v), per_forward):
                    net(v[i : i + per_forward])
                spent += time.perf_counter() - t0
    return spent


def _reference(net, recs, imgs, out: Path) -> None:
    """The reference loop: one image, one scale, one flip at a time; a pickled npy per image."""
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in net.input_norm())
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for r, img in zip(recs, imgs, strict=True):
            acc = 0
            for size in _sizes(SCALES):
                x = torch.nn.functional.interpolate((img - mean) / std, size=size, mode="bilinear", align_corners=False)
                for xf in (x, x.flip(-1)):
                    z = net(xf)["cams"]
                    z = z.flip(-1) if xf is not x else z
                    acc = acc + torch.nn.functional.interpolate(z, size=(375, 500), mode="bilinear", align_corners=False)[0]
            cam = torch.relu(acc)[[c - 1 for c in r.labels]]
            cam = cam / (cam.flatten(1).max(-1).values[:, None, None] + 1e-5)
            np.save(out / f"{r.id}.npy", {c: m.numpy() for c, m in zip(r.labels, cam, strict=True)}, allow_pickle=True)


def _one(mode: str, setting: str, backbone: str, work: Path, n: int, workers: int) -> dict:
    from usage_cli.data import load_dataset
    from usage_cli.data.io import read_image
    from usage_cli.models.classifier import load_classifier

    scales, flip = SETTINGS[setting]
    ckpt, root = work / f"{backbone}.pt", work / f"data-{n}"
    out = work / f"out-{backbone}-{mode}"
    t0 = time.perf_counter()
    extra = {}
    if mode == "stage" or mode in AFFINITY:
        extra = _stage(mode, ckpt, root, out, n, workers, scales, flip)
        dt = time.perf_counter() - t0
    else:
        net, _ = load_classifier(ckpt)
        recs = load_dataset("voc", root, "train").records
        imgs = [torch.from_numpy(read_image(r.image_path)).permute(2, 0, 1)[None].float() / 255 for r in recs]
        if mode == "bare":
            dt = _bare(net, imgs, scales, flip)
        else:
            t0 = time.perf_counter()
            _reference(net, recs, imgs, out)
            dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "setting": setting, "backbone": backbone, "images_per_s": n / dt, "peak_rss_mb": rss, **extra}


def _rows(backbones: list[str], paper_path: bool) -> list[tuple[str, str, str]]:
    """(backbone, setting, mode) of every row to run: the bare forward of each setting first."""
    rows = []
    for b in backbones:
        transformer = b.startswith(("deit", "vit"))
        if not transformer and paper_path:
            continue
        rows += [(b, "4 scales x flip", m) for m in ("bare", "stage", *(() if paper_path else ("reference",)), *(AFFINITY if transformer else ()))]
        rows += [(b, "scale 1", m) for m in ("bare", "stage", *AFFINITY) if transformer]
    return rows


def _table(rows: list[dict]) -> None:
    print("| backbone | views | mode | images/s | vs bare forward | vs reference loop | peak RSS MB | vs bare RSS | HDF5 KB/image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for x in rows:
        same = {r["mode"]: r for r in rows if r["backbone"] == x["backbone"] and r["setting"] == x["setting"]}
        bare, ref = same["bare"], same.get("reference")
        vs_ref = f"{x['images_per_s'] / ref['images_per_s']:.2f}" if ref else ""
        kb = f"{x['h5_kb_per_image']:.0f}" if "h5_kb_per_image" in x else ""
        print(f"| {x['backbone']} | {x['setting']} | {x['mode']} | {x['images_per_s']:.3f} | {x['images_per_s'] / bare['images_per_s']:.2f} | "
              f"{vs_ref} | {x['peak_rss_mb']:.0f} | {x['peak_rss_mb'] / bare['peak_rss_mb']:.2f} | {kb} |")  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["_one"]:
        mode, setting, backbone, work, n, workers = sys.argv[2:8]
        print(json.dumps(_one(mode, setting, backbone, Path(work), int(n), int(workers))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--backbones", default="deit_s,efficientnet_lite0")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--paper-path", action="store_true", help="only the transformers: bare forward, plain stage, patch-affinity rows")
    p.add_argument("--repeat", type=int, default=1, help="rounds over every row, interleaved; each row keeps its best round (noise only slows)")
    a = p.parse_args()
    plan = _rows(a.backbones.split(","), a.paper_path)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for k in sorted(set(IMAGES_X.values())):
            _dataset(work / f"data-{k * a.images}", k * a.images)
        best: dict[tuple, dict] = {}
        for b in a.backbones.split(","):
            _ckpt(work / f"{b}.pt", b)
        for _ in range(a.repeat):
            for b, setting, m in plan:
                cmd = [sys.executable, __file__, "_one", m, setting, b, str(work), str(IMAGES_X[setting] * a.images), str(a.workers)]
                done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])})
                if done.returncode:
                    sys.exit(f"{b} {setting} {m} failed:\n{done.stderr[-3000:]}")
                x = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"  {b} {setting} {m}: {x['images_per_s']:.3f} images/s, {x['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
                prev = best.get((b, setting, m))
                keep = x if prev is None or x["images_per_s"] > prev["images_per_s"] else prev
                best[(b, setting, m)] = {**keep, "peak_rss_mb": max(x["peak_rss_mb"], prev["peak_rss_mb"] if prev else 0)}
        results = [best[k] for k in plan]
    print(f"gen-seeds on {a.images} images of 500x375 ({4 * a.images} at scale 1), {torch.get_num_threads()} CPU threads, {a.workers} decode workers; "
          f"best of {a.repeat} interleaved round(s) per row, peak RSS the largest")
    _table(results)


if __name__ == "__main__":
    main()
