"""Cost against data size: the stages from seeds to the report on synthetic VOC-sized photos
(500x375, 20 classes) at several data sizes, with a small backbone (random weights: the cost does not
depend on them). Per stage and size: seconds per image and peak RSS.

    python bench/bench_scaling.py [--sizes 125,500,2000] [--work DIR] [--workers 2]
        [--backbone efficientnet_lite0] [--gen-args "--scales 1.0 --no-flip"]

Per size n, through the real CLI, each stage in its own process (a wrapper that imports torch and the
stage's module before its timer, so the figures are the stage's own, not the interpreter's start):

    usage gen-seeds   the classifier's seeds of the n images            -> RUN/seeds-train/seeds.h5
    usage psa-labels  confident labels (dense CRF, --workers processes) -> RUN/confident-train/
    usage psa-walk    the walk with one AffinityNet (trained once, 1 short epoch on the smallest
                      size's labels, not timed)                         -> RUN/masks-train/
    usage evaluate    the seed store (threshold sweep) and the masks    -> RUN/metrics/*.json
    usage report      RUN --html RUN/report (gallery of 24 images)

Peak RSS is the stage's main process (``ru_maxrss``); ``workers MB`` the largest of its worker
processes. The photos are ``usage synth``'s images drawn at 500x500 and cropped to 375 rows, made
once into ``--work`` (kept, so a rerun reuses them) and hard-linked into one dataset root per size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

H, W, CLASSES = 375, 500, 20
STAGES = ("gen-seeds", "psa-labels", "psa-walk", "evaluate seeds", "evaluate masks", "report --html")


# ---------------------------------------------------------------- data


def _photo(i: int, pool: Path) -> tuple[str, list[int]]:
    from usage_cli.artifacts.labels import write_label_png
    from usage_cli.data.synth import sample_image

    img, mask, _, _ = sample_image(W, np.random.default_rng([7, i]), CLASSES)
    top = (W - H) // 2
    img, mask = img[top : top + H], mask[top : top + H]
    image_id = f"im{i:05d}"
    Image.fromarray(img).save(pool / "JPEGImages" / f"{image_id}.jpg", quality=90)
    write_label_png(pool / "SegmentationClass" / f"{image_id}.png", mask)
    return image_id, sorted(set(np.unique(mask).tolist()) - {0, 255})


def make_pool(pool: Path, n: int, procs: int) -> dict[str, list[int]]:
    """The first ``n`` photos (and masks) in ``pool``, made where missing; {id: label values}."""
    index = pool / "labels.json"
    have = json.loads(index.read_text()) if index.exists() else {}
    todo = [i for i in range(n) if f"im{i:05d}" not in have]
    if todo:
        for sub in ("JPEGImages", "SegmentationClass"):
            (pool / sub).mkdir(parents=True, exist_ok=True)
        with Pool(procs) as p:
            have.update(dict(p.starmap(_photo, [(i, pool) for i in todo], chunksize=16)))
        index.write_text(json.dumps(have))
    return {f"im{i:05d}": have[f"im{i:05d}"] for i in range(n)}


def make_root(pool: Path, root: Path, labels: dict[str, list[int]]) -> Path:
    """A VOC-layout root of these photos (hard links into the pool), split ``train``."""
    from usage_cli.data.labels_io import write_cls_labels_json
    from usage_cli.data.synth import class_table

    vdir = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (vdir / sub).mkdir(parents=True, exist_ok=True)
    for i in labels:
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
            dst = vdir / sub / f"{i}.{ext}"
            if not dst.exists():
                os.link(pool / sub / f"{i}.{ext}", dst)
    (vdir / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(labels) + "\n")
    names = class_table(CLASSES)[0]
    write_cls_labels_json(root / "cls_labels.json", labels, names)
    (root / "classes.txt").write_text("\n".join(("background", *names)) + "\n")
    return root


def make_classifier(path: Path, backbone: str) -> Path:
    import torch

    from usage_cli.artifacts.checkpoint import save_checkpoint
    from usage_cli.data.synth import class_table
    from usage_cli.models.classifier import build_classifier

    if not path.exists():
        torch.manual_seed(0)
        net = build_classifier({"backbone": backbone, "num_classes": CLASSES, "img_size": 224, "tau1": 1.0})
        save_checkpoint(path, {"format": "usage-cls-checkpoint", "version": "1.0.0", "model": net.state_dict(),
                               "model_config": net.model_config, "class_names": list(class_table(CLASSES)[0])})  # fmt: skip
    return path


# ---------------------------------------------------------------- one stage, measured in its own process

MODULES = {"gen-seeds": "usage_cli.stages.gen_seeds", "psa-labels": "usage_cli.stages.psa_labels", "psa-walk": "usage_cli.stages.psa_walk",
           "evaluate": "usage_cli.stages.evaluate", "report": "usage_cli.report.page", "train-aff": "usage_cli.stages.train_aff"}  # fmt: skip


def _child(out_json: str, args: list[str]) -> None:
    """Run ``usage ARGS`` here after importing what it needs; write its seconds and peak RSS."""
    import torch  # noqa: F401  (imported before the timer)

    from usage_cli.cli import app

    importlib.import_module(MODULES[args[0]])
    t0 = time.perf_counter()
    try:
        app(args, prog_name="usage")
    except SystemExit as e:
        if e.code:
            raise
    seconds = time.perf_counter() - t0
    mb = {w: resource.getrusage(w).ru_maxrss / 1024 for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)}
    Path(out_json).write_text(json.dumps({"seconds": seconds, "rss_mb": mb[resource.RUSAGE_SELF], "workers_mb": mb[resource.RUSAGE_CHILDREN]}))


def run_stage(args: list[str], log: Path) -> dict:
    out = log.with_suffix(".json")
    cmd = [sys.executable, __file__, "_child", str(out), *args]
    with open(log, "a") as f:
        f.write("$ usage " + shlex.join(args) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(f"usage {shlex.join(args)} failed (exit {rc}); see {log}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------- the chain at one size


def one_size(n: int, work: Path, ckpt: Path, a, aff: Path | None) -> tuple[dict, Path]:
    root = make_root(work / "pool", work / f"data-{n}", make_pool(work / "pool", n, a.procs))
    run = work / f"run-{n}"
    log = run / "log"
    log.mkdir(parents=True, exist_ok=True)
    common = ["--root", str(root), "--split", "train", "--quiet", "--force"]
    seeds, conf, masks = run / "seeds-train", run / "confident-train", run / "masks-train"
    res = {"gen-seeds": run_stage(["gen-seeds", "--ckpt", str(ckpt), "--out", str(seeds), "--overlays", "0", *shlex.split(a.gen_args), *common], log / "gen-seeds.log")}
    res["psa-labels"] = run_stage(["psa-labels", "--seeds", str(seeds / "seeds.h5"), "--out", str(conf), "--workers", str(a.workers), *common], log / "psa-labels.log")
    if aff is None:  # one AffinityNet for every size, trained on the smallest one's labels (not timed)
        run_stage(["train-aff", "--labels", str(conf), "--out", str(work / "aff"), "--backbone", a.backbone, "--epochs", "1", "--batch-size", "4",
                   "--crop", "128", *common], log / "train-aff.log")  # fmt: skip
        aff = work / "aff" / "affinity.pt"
    res["psa-walk"] = run_stage(["psa-walk", "--seeds", str(seeds / "seeds.h5"), "--affinity", str(aff), "--out", str(masks), *common], log / "psa-walk.log")
    no_force = [x for x in common if x != "--force"]
    for what, pred in (("seeds", seeds / "seeds.h5"), ("masks", masks)):
        res[f"evaluate {what}"] = run_stage(["evaluate", "--pred", str(pred), "--out", str(run / "metrics" / f"{what}-train.json"), *no_force],
                                            log / f"evaluate-{what}.log")  # fmt: skip
    report = run / "report"
    res["report --html"] = run_stage(["report", str(run), "--html", str(report)], log / "report.log")
    return res, aff


def table(sizes: list[int], results: dict[int, dict]) -> str:
    last = sizes[-1]
    head = " | ".join(f"n={n}" for n in sizes)
    lines = [f"| stage | s/image {head} | last/first | marginal s/image {sizes[-2]}->{last} | peak RSS MB {head} | last/first | workers MB (n={last}) |",
             "| --- |" + " --- |" * (2 * len(sizes) + 4)]  # fmt: skip
    for st in STAGES:
        per = [results[n][st]["seconds"] / n for n in sizes]
        rss = [results[n][st]["rss_mb"] for n in sizes]
        marginal = (results[last][st]["seconds"] - results[sizes[-2]][st]["seconds"]) / (last - sizes[-2])
        lines.append(f"| {st} | " + " | ".join(f"{x:.4f}" for x in per) + f" | {per[-1] / per[0]:.2f} | {marginal:.4f} | "
                     + " | ".join(f"{x:.0f}" for x in rss) + f" | {rss[-1] / rss[0]:.2f} | {results[last][st]['workers_mb']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["_child"]:
        _child(sys.argv[2], sys.argv[3:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="125,500,2000")
    p.add_argument("--work", type=Path, default=Path("bench/out/scaling"))
    p.add_argument("--workers", type=int, default=2, help="psa-labels' CRF processes")
    p.add_argument("--procs", type=int, default=2, help="processes making the photos")
    p.add_argument("--backbone", default="efficientnet_lite0", help="the classifier's and AffinityNet's")
    p.add_argument("--gen-args", default="--scales 1.0 --no-flip", help="extra gen-seeds options")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = sorted(int(s) for s in a.sizes.split(","))
    a.work.mkdir(parents=True, exist_ok=True)
    ckpt = make_classifier(a.work / f"cls-{a.backbone}.pt", a.backbone)
    results, aff = {}, None
    for n in sizes:
        t0 = time.perf_counter()
        results[n], aff = one_size(n, a.work, ckpt, a, aff)
        print(f"  n={n}: " + ", ".join(f"{k} {v['seconds']:.1f} s / {v['rss_mb']:.0f} MB" for k, v in results[n].items())
              + f" ({time.perf_counter() - t0:.0f} s with the data)", file=sys.stderr, flush=True)  # fmt: skip
        (a.work / "scaling.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    print(f"Cost against data size: {a.backbone} (random weights), gen-seeds {a.gen_args}, psa-labels --workers {a.workers}; "
          f"{os.environ.get('OMP_NUM_THREADS', 'all')} torch threads; 500x375 synthetic photos, {CLASSES} classes")  # fmt: skip
    print(table(sizes, results))


if __name__ == "__main__":
    main()
