"""The seed-step study (issue 18): for trained classifiers, how the step from activation maps to seeds
(``usage gen-seeds --refine --normalise --scales``) changes seed quality, over several training seeds.

    python bench/seed_step.py --root R --backbone deit_t --seeds 0,1,2 --out DIR [train-cls settings]

1. The classifiers: the rows (default ``cam``, ``cm``, ``cm+aa``) of ``bench/paper_tables.py``'s
   Table 1, trained through the real ``usage train-cls`` into ``DIR/runs/<row flags>/seed<S>/cls``
   (the same folders as the paper tables, so a table run and a study run share their classifiers;
   a classifier that is there is reused).
2. Per classifier and split, one pass over the images: every view (scale x flip) through the
   network once per refinement (``--refine none`` / ``patch-affinity``, the latter for
   transformers), then every scale set x normalisation fused and normalised by the functions
   ``usage gen-seeds`` calls (``cam_infer.view_maps``, ``fuse.fuse_views``, ``fuse.seed_maps``,
   float16 as the store keeps them), and counted against the ground truth by the functions
   ``usage evaluate`` calls (``metrics.sweep``). So a grid cell equals what
   ``usage gen-seeds --refine R --normalise N --scales S`` + ``usage evaluate`` print (a test checks it).
   Cached in ``DIR/runs/.../seed<S>/seed-step-<split>.npz``.
3. The table: per (row, refine, normalise, scales), mean +- sample std over seeds of the training
   split's mIoU / FPR / FNR at its best background threshold (the field's convention, tuned on that
   split's ground truth), that threshold, the val split's mIoU at the train-chosen threshold (not
   tuned on val), and the empty seeds (present-class maps with no positive value); plus each row's
   paired difference to ``cam`` under the same seed step.

Writes DIR/seed-step.json and DIR/seed-step.md (also printed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paper_tables as pt  # bench/paper_tables.py, beside this script: the rows, settings and train-cls commands of the tables

from usage_cli.metrics.stats import fmt_num, fmt_stat, mean_std, paired_diffs

SCALE_SETS = ("1.0", "1.0,0.5,1.5", "1.0,0.5,1.5,2.0")  # the last: gen-seeds' default (the paper's)
RULES = ("mean", "otsu")  # the no-ground-truth threshold rules compared (algorithms/thresholds.py)
THRESHOLDS = "0.00:0.95:0.01"  # usage evaluate's default sweep


@dataclass(frozen=True)
class Step:
    """One seed step: the gen-seeds options that differ between cells."""

    refine: str
    normalise: str
    scales: str

    @property
    def name(self) -> str:
        return f"refine={self.refine} normalise={self.normalise} scales={self.scales}"

    @property
    def flags(self) -> str:
        return f"--refine {self.refine} --normalise {self.normalise} --scales {self.scales}"


def steps_for(family: str, refines: list[str], normalisers: list[str], scale_sets: list[str]) -> list[Step]:
    """Every combination; patch affinity only for transformers."""
    ok = [r for r in refines if r != "patch-affinity" or family == "transformer"]
    return [Step(r, n, s) for r, n, s in itertools.product(ok, normalisers, scale_sets)]


# ------------------------------------------------------------------------------------ the grid pass
def _seed_maps(views, flips, shape, keys, normalise: str):
    """gen-seeds' fusion + normalisation; ``max-fallback`` (a candidate of this study, not an option of
    gen-seeds): ``max``, except that a class whose map is empty gets its ``raw-minmax`` map."""
    from usage_cli.algorithms.fuse import fuse_views, relu_views, seed_maps

    if normalise != "max-fallback":
        return seed_maps(fuse_views(views, flips, shape, relu_views(normalise)), keys, normalise)
    maps = seed_maps(fuse_views(views, flips, shape, True), keys, "max")
    empty = maps.flatten(1).amax(1) <= 0
    if empty.any():
        raw = seed_maps(fuse_views(views, flips, shape, False), keys, "raw-minmax")
        maps[empty] = raw[empty]
    return maps

def grid_counts(ckpt: Path, dataset: str, root: str, split: str, steps: list[Step], device: str = "cpu", flip: bool = True) -> dict:
    """Per step: summed sweep counts ``[T+1, n, n]`` over the split, the empty seeds
    ``[maps, present pairs, images with one]``, and the image count."""
    import torch

    from usage_cli.algorithms.cam_infer import CamInference, resolve_options, view_maps
    from usage_cli.algorithms.thresholds import BINS, fg_histogram
    from usage_cli.artifacts.seeds import SeedEntry
    from usage_cli.data import load_dataset
    from usage_cli.data.io import read_image, read_mask
    from usage_cli.metrics.scoring import empty_counts, sweep_counts
    from usage_cli.metrics.sweep import parse_thresholds
    from usage_cli.models.classifier import load_classifier

    net, _ = load_classifier(ckpt, device)
    ds = load_dataset(dataset, root, split)
    n = ds.meta.num_classes + 1
    thr = parse_thresholds(THRESHOLDS)
    counts = {s: np.zeros((len(thr) + 1, n, n), np.int64) for s in steps}
    hists = {s: np.zeros(BINS, np.int64) for s in steps}
    empty = {s: np.zeros(3, np.int64) for s in steps}
    all_scales = sorted({float(x) for s in steps for x in s.scales.split(",")})
    refines = sorted({s.refine for s in steps})
    for rec in ds.records:
        image = torch.from_numpy(read_image(rec.image_path))[None].to(device)
        gt = read_mask(rec.mask_path, n - 1)
        keys = tuple(rec.labels)
        # 1. every view of every scale, once per refinement (same calls as gen-seeds, one scale at a time)
        per = {}
        for refine in refines:
            r, source = resolve_options(net, refine, "auto")
            for sc in all_scales:
                opts = CamInference(scales=(sc,), flip=flip, refine=r, source=source)
                per[refine, sc] = view_maps(net, image, opts)
        for step in steps:
            # 2. the step's scales in its order, fused and normalised as gen-seeds does
            views, flips = [], []
            for sc in (float(x) for x in step.scales.split(",")):
                v, f = per[step.refine, sc]
                views += [x[0] for x in v]
                flips += f
            if keys:
                cam = _seed_maps(views, flips, gt.shape, keys, step.normalise).cpu().numpy().astype(np.float16)
            else:
                cam = np.zeros((0, *gt.shape), np.float16)
            # 3. scored as evaluate scores a store (its per-image functions)
            entry = SeedEntry(np.asarray(keys, np.int64), cam, gt.shape)
            empty[step] += empty_counts(entry)
            hists[step] += fg_histogram(cam)
            counts[step] += sweep_counts(entry, gt, thr, n)
    return {"counts": counts, "empty": empty, "hist": hists, "images": len(ds), "names": list(ds.meta.all_names)}


def save_grid(path: Path, grid: dict, steps: list[Step]) -> None:
    arrays = {f"{k}/{s.name}": grid[k][s] for k in ("counts", "empty", "hist") for s in steps}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, images=np.asarray(grid["images"]), names=np.asarray(grid["names"]), **arrays)
    tmp.replace(path)


def load_grid(path: Path, steps: list[Step]) -> dict | None:
    """The cached grid if it holds every step, else None."""
    if not path.exists():
        return None
    with np.load(path) as z:
        if not all(f"{k}/{s.name}" in z for k in ("counts", "hist") for s in steps):
            return None
        return {
            **{k: {s: z[f"{k}/{s.name}"] for s in steps} for k in ("counts", "empty", "hist")},
            "images": int(z["images"]),
            "names": list(z["names"]),
        }


def rule_index(hist: np.ndarray, rule: str) -> int:
    """The sweep index of a no-ground-truth threshold rule (algorithms/thresholds.py) on the
    histogram; histogram bins and sweep thresholds share the 0.01 step."""
    from usage_cli.algorithms.thresholds import threshold_from_histogram

    return int(min(round(threshold_from_histogram(hist, rule) * 100), 95))


def metrics_at(counts: np.ndarray, index: int | None = None) -> dict:
    """mIoU / FPR / FNR (%) at the best threshold of the sweep (``index`` None) or at ``index``."""
    from usage_cli.metrics.confusion import metrics_from_confusion
    from usage_cli.metrics.sweep import confusions_from_counts, parse_thresholds

    thr = parse_thresholds(THRESHOLDS)
    mats = confusions_from_counts(counts)
    if index is None:
        index = int(np.nanargmax([metrics_from_confusion(m)["miou"] for m in mats]))
    r = metrics_from_confusion(mats[index])
    return {"miou": 100 * r["miou"], "fpr": 100 * r["mfpr"], "fnr": 100 * r["mfnr"], "threshold": float(thr[index]), "index": index}


# ------------------------------------------------------------------------------------------ running
def train_classifier(args, st: dict, row, seed: int) -> Path:
    """The row's classifier for this seed, trained through the real CLI unless it is there."""
    d = pt.run_dir(Path(args.out), "table1", row, seed)
    ckpt = d / "cls" / "checkpoint.pt"
    if ckpt.exists():
        return ckpt
    d.mkdir(parents=True, exist_ok=True)
    cmd = pt.commands(args, st, "table1", row, seed, val=False)["train-cls"]
    if (d / "cls" / "last.pt").exists():
        cmd = [*cmd, "--resume"]
    t0 = time.perf_counter()
    with open(d / "train-cls.log", "a") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"[{row.name} seed{seed}] train-cls: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if rc != 0:
        raise SystemExit(f"{row.name} seed{seed}: train-cls failed (exit {rc}), see {d / 'train-cls.log'}")
    return ckpt


def study_one(args, ckpt: Path, split: str, steps: list[Step], device: str) -> dict:
    path = ckpt.parent.parent / f"seed-step-{split}.npz"
    grid = load_grid(path, steps)
    if grid is None:
        t0 = time.perf_counter()
        grid = grid_counts(ckpt, args.dataset, args.root, split, steps, device, flip=args.flip)
        save_grid(path, grid, steps)
        print(f"  {ckpt.parent.parent.name} {split}: {len(steps)} steps in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return grid


def summarise(rows, seeds: list[int], steps: list[Step], results: dict, val: bool) -> list[dict]:
    """Per (row, step): mean +- std over seeds, and the paired difference to cam under the same step."""
    out = []
    for row in rows:
        for step in steps:
            per = {s: results[row.name, s, step] for s in seeds if (row.name, s, step) in results}
            entry = {"row": row.name, "step": step.name, "flags": step.flags, "seeds": sorted(per)}
            for k in ("miou", "fpr", "fnr", "threshold", "val_miou", "empty_share", *(f"{p}{r}_{m}" for r in RULES for p, m in (("", "threshold"), ("", "miou"), ("val_", "miou")))):
                entry[k] = mean_std(r.get(k) for r in per.values())
            if not row.baseline:
                base = {s: results["cam", s, step] for s in seeds if ("cam", s, step) in results}
                for k in ("miou", "val_miou"):
                    d = paired_diffs({s: r.get(k) for s, r in per.items()}, {s: r.get(k) for s, r in base.items()})
                    entry[f"d_{k}"] = mean_std(d.values())
            out.append(entry)
    return out


def render_md(meta: dict, summary: list[dict]) -> str:
    st = meta["settings"]
    lines = [
        "# Seed-step study: refine x normalise x scales, per classifier row",
        "",
        f"- dataset `{meta['dataset']}` at `{meta['root']}`; backbone `{meta['backbone']}` ({meta['family']}), "
        f"{'ImageNet weights' if st['pretrained'] else 'from scratch'}; training seeds {','.join(map(str, meta['seeds']))}",
        f"- train-cls: epochs {st['epochs']}, img size {st['img_size']}, batch {st['batch_size']}, lr {fmt_num(st['lr'])}, aug {st['aug']}"
        + (f", extra `{st['extra']}`" if st["extra"] else ""),
        f"- seeds on `{meta['eval_split']}` scored at the best background threshold of the {THRESHOLDS} sweep; "
        + (f"`{meta['val_split']}` at that threshold" if meta["val_used"] else "no val split"),
        "- empty: share of (image, present class) maps with no positive value; Δ: paired (same seed, same step) difference to `cam`",
        "- mean, otsu: the no-ground-truth cuts of `usage_cli.algorithms.thresholds` (the mean / Otsu's cut of the split's own "
        "per-pixel seed maximum; gen-seeds' auto is the mean) and the mIoU there, on train and on val (each split its own cut)",
        "",
        "| row | seed step | mIoU | FPR | FNR | bg thr | val mIoU @thr | empty % | Δ mIoU vs cam | Δ val vs cam | "
        + " | ".join(f"{r} thr | mIoU @{r} | val mIoU @val {r}" for r in RULES) + " |",
        "| --- " * (10 + 3 * len(RULES)) + "|",
    ]
    for e in summary:
        dm = fmt(e.get("d_miou"), signed=True) if "d_miou" in e else "-"
        dv = fmt(e.get("d_val_miou"), signed=True) if "d_val_miou" in e else "-"
        lines.append(
            f"| {e['row']} | `{e['flags']}` | {fmt(e['miou'])} | {fmt(e['fpr'])} | {fmt(e['fnr'])} | {fmt(e['threshold'], 2)} | "
            f"{fmt(e['val_miou'])} | {fmt(e['empty_share'])} | {dm} | {dv} | "
            + " | ".join(f"{fmt(e[f'{r}_threshold'], 2)} | {fmt(e[f'{r}_miou'])} | {fmt(e[f'val_{r}_miou'])}" for r in RULES) + " |"
        )
    return "\n".join(lines) + "\n"


def fmt(st: dict | None, digits: int = 1, signed: bool = False) -> str:
    return fmt_stat(st or {}, digits, signed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pt.add_common_args(p)
    p.add_argument("--refines", default="none,patch-affinity", help="--refine values (patch-affinity: transformers only)")
    p.add_argument("--normalisers", default="max,minmax,raw-minmax", help="--normalise values")
    p.add_argument("--scale-sets", default=";".join(SCALE_SETS), help="';'-separated --scales values")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = pt.seed_list(args)
    family = pt.family_of(args.backbone)
    st = pt.resolve_settings(args, family)
    only = [n.strip() for n in args.rows.split(",")] if args.rows else None
    rows, _ = pt.table_rows("table1", family, st["tau1s"], only)
    steps = steps_for(family, args.refines.split(","), args.normalisers.split(","), args.scale_sets.split(";"))
    val_used = bool(args.val_split) and args.val_split != args.eval_split and pt.split_exists(args.dataset, args.root, args.val_split)[0]
    device = "cpu" if args.device == "auto" else args.device
    results: dict = {}
    for seed in seeds:
        for row in rows:
            ckpt = train_classifier(args, st, row, seed)
            ev = study_one(args, ckpt, args.eval_split, steps, device)
            va = study_one(args, ckpt, args.val_split, steps, device) if val_used else None
            for step in steps:
                m = metrics_at(ev["counts"][step])
                e = ev["empty"][step]
                r = {**m, "empty_share": 100.0 * e[0] / max(e[1], 1), "empty": e.tolist()}
                for rule in RULES:
                    o = metrics_at(ev["counts"][step], rule_index(ev["hist"][step], rule))
                    r.update({f"{rule}_threshold": o["threshold"], f"{rule}_miou": o["miou"]})
                if va is not None:
                    v = metrics_at(va["counts"][step], m["index"])
                    r.update(val_miou=v["miou"], val_fpr=v["fpr"], val_fnr=v["fnr"])
                    for rule in RULES:
                        vo = metrics_at(va["counts"][step], rule_index(va["hist"][step], rule))
                        r.update({f"val_{rule}_threshold": vo["threshold"], f"val_{rule}_miou": vo["miou"]})
                results[row.name, seed, step] = r
    meta = {
        "dataset": args.dataset, "root": str(args.root), "backbone": args.backbone, "family": family, "seeds": seeds,
        "eval_split": args.eval_split, "val_split": args.val_split, "val_used": val_used, "settings": st,
        "argv": [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])],
    }  # fmt: skip
    summary = summarise(rows, seeds, steps, results, val_used)
    md = render_md(meta, summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [{"row": k[0], "seed": k[1], "step": k[2].name, **v} for k, v in results.items()]
    (out / "seed-step.json").write_text(json.dumps({**meta, "runs": runs, "summary": summary}, indent=2) + "\n")
    (out / "seed-step.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
