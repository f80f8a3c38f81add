"""The walk's length and rescaling against the seeds (issue 19): for finished chain runs, the masks
``usage psa-walk --logt L --walk-norm N`` would write, for a grid of L x N, scored against the seeds
they came from (both at the seeds' own threshold, no ground truth in either), over several training
seeds; and how right the confident labels AffinityNet was trained on are.

    python bench/walk_grid.py --root R --runs DIR/runs/<row flags> --seeds 0,1,2 \\
        --logts 2,3,4,5,6,7,8 --norms none,max --splits train,val [--preset auto] [--out FILE.json]

``DIR`` is a ``bench/chain.py`` output folder: per training seed S it reads
``<runs>/seed<S>/seeds-<split>/seeds.h5`` (gen-seeds), ``<runs>/seed<S>/<preset>/masks-train/affinity.pt``
(the AffinityNet refine-psa trained on the train masks) and its ``confident/`` labels.

Each mask is :func:`usage_cli.algorithms.psa_refine.refine_image`, the function psa-walk calls, with
psa-walk's settings for the preset (``psa_walk.resolve`` and ``walk_settings``) except the two varied (the AffinityNet's features computed once per image and shared
by the grid); the seeds are cut at their own threshold ``t`` (the store's ``bg_threshold``) as the auto
preset's walk background is; every prediction is counted by :class:`usage_cli.metrics.confusion.ConfusionMatrix`,
the evaluator ``usage evaluate`` uses. Prints the table (mean +- sample std over seeds of each
variant's masks and its paired gain over the seeds) and the confident labels' precision.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from usage_cli.algorithms import psa_refine
from usage_cli.algorithms.thresholds import auto_constants
from usage_cli.artifacts.labels import read_label_png
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data import DataSpec
from usage_cli.data.io import read_image
from usage_cli.data.joint_transforms import normalize
from usage_cli.metrics.confusion import ConfusionMatrix, metrics_from_confusion
from usage_cli.metrics.stats import fmt_stat, mean_std, paired_diffs
from usage_cli.models.affinitynet import load_affinitynet, pad_to_multiple
from usage_cli.presets import AUTO_CUTS, REFINE_PSA
from usage_cli.stages import psa_walk

SEEDS = "seeds"  # the variant name of the seeds themselves


def variant(logt: int, norm: str) -> str:
    return f"--walk-norm {norm} --logt {logt}"


def walk_grid(ds, seeds: Path, affinity: Path, logts: list[int], norms: list[str], preset: str = "auto") -> dict[str, dict]:
    """mIoU / FPR / FNR (%) of the seeds at their own threshold and of each (logt, norm) walk of them."""
    net, _ = load_affinitynet(affinity, "cpu")
    n = ds.meta.num_classes + 1
    mats = {name: ConfusionMatrix(n) for name in [SEEDS] + [variant(L, m) for L in logts for m in norms]}
    t = auto_constants(seeds, AUTO_CUTS)["seed_threshold"]  # the store's own threshold, the cut of the seeds
    # psa-walk's own settings for the preset (its resolve: the auto preset's walk background at t)
    settings = psa_walk.walk_settings(psa_walk.resolve(psa_walk.PsaWalkConfig(seeds=seeds, affinity=affinity, out=Path("-"), preset=preset)))
    with SeedReader(seeds) as reader:
        for rec in ds.records:
            e, gt = reader.read(rec.id), read_label_png(rec.mask_path)
            cams, keys = e.cam.astype(np.float32), [int(k) for k in e.keys]
            lut = np.asarray([0, *keys], np.uint8)
            mats[SEEDS].update(lut[psa_refine.seed_scores(cams, replace(settings, bg_mode="const", bg_const=t)).numpy().argmax(0)], gt)
            x = pad_to_multiple(normalize(read_image(rec.image_path), *net.input_norm())[None], net.pad_multiple)
            with torch.inference_mode():
                features = _constant(net(x).float())  # once per image, shared by the grid
            for L in logts:
                for m in norms:
                    label = psa_refine.refine_image(features, x, cams, keys, replace(settings, logt=L, norm=m), net.stride)
                    mats[variant(L, m)].update(label, gt)
    out = {}
    for name, cm in mats.items():
        r = metrics_from_confusion(cm.mat, cm.pred_ignored)
        out[name] = {"miou": 100 * r["miou"], "fpr": 100 * r["mfpr"], "fnr": 100 * r["mfnr"], "threshold": t}
    return out


def _constant(feats: torch.Tensor):
    return lambda _x: feats


def confident_precision(ds, folder: Path) -> dict:
    """Share of the valid pixels the confident labels (PSA step 1: class, 0 background, 255 unsure) mark
    foreground / background, and how many of those agree with the ground truth (%)."""
    fg = fg_ok = bg = bg_ok = total = 0
    for rec in ds.records:
        c, g = read_label_png(folder / f"{rec.id}.png"), read_label_png(rec.mask_path)
        valid = g != 255
        f, b = (c != 0) & (c != 255) & valid, (c == 0) & valid
        total += int(valid.sum())
        fg, fg_ok, bg, bg_ok = fg + int(f.sum()), fg_ok + int((c[f] == g[f]).sum()), bg + int(b.sum()), bg_ok + int((g[b] == 0).sum())
    return {"fg_share": 100 * fg / total, "fg_precision": 100 * fg_ok / max(fg, 1), "bg_share": 100 * bg / total, "bg_precision": 100 * bg_ok / max(bg, 1)}


def table(results: dict, splits: list[str]) -> str:
    """Markdown: per variant and split, masks mIoU and the paired gain over the seeds."""
    seeds_ = sorted(results)
    names = list(results[seeds_[0]][splits[0]])
    head = [f"{sp} {what}" for sp in splits for what in ("mIoU", "− seeds")]
    lines = ["| walk | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for name in names:
        cells = []
        for sp in splits:
            vals = {s: results[s][sp][name]["miou"] for s in seeds_}
            gains = paired_diffs(vals, {s: results[s][sp][SEEDS]["miou"] for s in seeds_})
            cells += [fmt_stat(mean_std(vals.values())), "-" if name == SEEDS else fmt_stat(mean_std(gains.values()), signed=True)]
        lines.append(f"| {'seeds (own threshold)' if name == SEEDS else '`' + name + '`'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--dataset", default="voc")
    p.add_argument("--runs", required=True, type=Path, help="a chain.py row folder holding seed<S>/")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--preset", default="auto", choices=list(REFINE_PSA))
    p.add_argument("--logts", default="2,3,4,5,6,7,8")
    p.add_argument("--norms", default=",".join(psa_refine.WALK_NORMS))
    p.add_argument("--splits", default="train,val")
    p.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    a = p.parse_args(argv)
    logts, norms, splits = [int(x) for x in a.logts.split(",")], a.norms.split(","), a.splits.split(",")
    bad = [m for m in norms if m not in psa_refine.WALK_NORMS]
    if bad:
        print(f"error: --norms {','.join(bad)}: choose from {', '.join(psa_refine.WALK_NORMS)}", file=sys.stderr)
        return 2
    results, confident = {}, {}
    for s in [int(x) for x in a.seeds.split(",")]:
        run = a.runs / f"seed{s}"
        affinity = run / a.preset / "masks-train" / "affinity.pt"
        missing = [f for f in [affinity] + [run / f"seeds-{sp}" / "seeds.h5" for sp in splits] if not f.is_file()]
        if missing:
            print(f"error: {missing[0]}: not found (run bench/chain.py --presets {a.preset} first)", file=sys.stderr)
            return 2
        results[s] = {}
        for sp in splits:
            ds = DataSpec(a.dataset, a.root, sp).load()
            results[s][sp] = walk_grid(ds, run / f"seeds-{sp}" / "seeds.h5", affinity, logts, norms, a.preset)
            print(f"[seed{s} {sp}] seeds {results[s][sp][SEEDS]['miou']:.1f}", flush=True)
        conf = run / a.preset / "masks-train" / "confident"
        if conf.is_dir():
            confident[s] = confident_precision(DataSpec(a.dataset, a.root, "train").load(), conf)
    print(table(results, splits))
    if confident:
        keys = ("fg_share", "fg_precision", "bg_share", "bg_precision")
        print("\nconfident labels (train): " + ", ".join(f"{k} {fmt_stat(mean_std(c[k] for c in confident.values()))} %" for k in keys))
    if a.out:
        a.out.write_text(json.dumps({"results": results, "confident": confident, "args": {k: str(v) for k, v in vars(a).items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
