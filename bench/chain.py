"""The chain study (issue 19): seeds -> pseudo masks -> segmentation, with settings a user without
ground truth can have, over several training seeds.

    python bench/chain.py --root R --backbone efficientnet_lite0 --pretrained --seeds 0,1,2 --out DIR \\
        --presets auto,psa,mctformer [train-cls settings] [--aff-args "..."] [--seg-args "..."]

Per training seed, through the real CLI (each step skipped when its product exists, so a killed run
restarts where it stopped):

    usage train-cls    the USAGE row (cm + aa) of bench/paper_tables.py, in DIR/runs/<row flags>/seed<S>/cls
                       (shared with the paper tables and bench/seed_step.py)
    usage gen-seeds    TRAIN and VAL splits, the default seed step and --bg-threshold (no ground truth)
    per refine-psa preset P:
      usage refine-psa TRAIN (confident labels, AffinityNet, walk), then VAL with TRAIN's affinity.pt
      usage train-seg  on TRAIN's pseudo masks
      usage predict-seg TRAIN and VAL
    usage evaluate     every artifact; seeds at the best threshold (ground truth) and at their own

The table: per preset, mean +- sample std over seeds of each artifact's mIoU; for seeds both the
field's figure (best threshold, tuned on ground truth) and the no-ground-truth one (the store's own
threshold); each stage's paired gain over the stage before it (no ground truth anywhere).
Writes DIR/chain.json and DIR/chain.md (also printed); with --tag T (another AffinityNet / segnet budget)
the presets run in <preset>@T beside the others, sharing the classifier and seeds, into DIR/chain-T.*.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import paper_tables as pt  # bench/paper_tables.py, beside this script: the USAGE row, the settings, train-cls commands

from usage_cli.metrics.stats import fmt_num, fmt_stat, mean_std, paired_diffs

PRESETS = ("auto", "psa", "mctformer")


def _run(cmd: list[str], log: Path, tag: str) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    dt = time.perf_counter() - t0
    print(f"[{tag}] {dt:.1f} s" + ("" if rc == 0 else f"  FAILED (exit {rc}, see {log})"), file=sys.stderr, flush=True)
    if rc != 0:
        raise SystemExit(f"{tag} failed (exit {rc}): {log}")
    return dt


def candidate_flags(preset: str, seeds_dir: Path) -> list[str]:
    """``auto:fg=F/bg=B[/logt=L]``: the auto preset with other confident-label cuts (F and B times the
    seeds' own threshold), as the --crf-la / --crf-ha they give for this store, and other refine-psa
    options (a candidate of the study, which chooses presets.AUTO_CUTS); nothing for a plain preset."""
    if ":" not in preset:
        return []
    from usage_cli.algorithms.thresholds import psa_constants

    opts = {k: float(v) for k, v in (kv.split("=") for kv in preset.split(":", 1)[1].split("/"))}
    extra = [x for k in opts if k not in ("fg", "bg") for x in (f"--{k}", f"{opts[k]:g}")]
    manifest = seeds_dir / "manifest.json"
    if not manifest.exists():
        return ["--crf-la", "<from the seeds>", "--crf-ha", "<from the seeds>", *extra]
    c = psa_constants(json.loads(manifest.read_text())["bg_threshold"], opts.get("fg", 1.5), opts.get("bg", 0.5))
    return ["--crf-la", str(c["crf_la"]), "--crf-ha", str(c["crf_ha"]), *extra]


def preset_dir(d: Path, preset: str, tag: str = "") -> Path:
    """One seed's folder for one preset: ``auto``, ``auto_fg1_bg0.4`` for a candidate, ``auto@TAG`` for
    another budget of the same preset (--tag), beside the others and sharing the classifier and seeds."""
    return d / (preset.replace(":", "_").replace("/", "_").replace("=", "") + (f"@{tag}" if tag else ""))


def chain_commands(args, st: dict, d: Path, preset: str) -> list[tuple[str, list[str], Path]]:
    """(step, command, product) of one seed's chain for one preset, in order."""
    exe = pt.usage_exe()
    data = ["--dataset", args.dataset, "--root", str(args.root)]
    dev = ["--device", st["device"]]
    workers = ["--workers", str(st["workers"])] if st["workers"] is not None else []
    tr, va = args.train_split, args.val_split
    splits = (tr, va) if va else (tr,)  # --val-split '': a data set with one split (coco128)
    seeds = {s: d / f"seeds-{s}" for s in splits}
    p = preset_dir(d, preset, args.tag)
    steps: list[tuple[str, list[str], Path]] = []
    for s in splits:
        steps.append((f"gen-seeds-{s}", [*exe, "gen-seeds", "--ckpt", str(d / "cls" / "checkpoint.pt"), *data, "--split", s,
                      "--out", str(seeds[s]), "--overlays", "0", "--quiet", "--scales", st["scales"], *dev, *workers,
                      *shlex.split(args.gen_seeds_extra or "")], seeds[s] / "seeds.h5"))  # fmt: skip
    refine = [*exe, "refine-psa", *data, "--preset", preset.split(":")[0], *dev, *workers, "--quiet"]
    steps.append((f"refine-psa-{tr}", [*refine, "--seeds", str(seeds[tr] / "seeds.h5"), "--split", tr, "--out", str(p / f"masks-{tr}"),
                  *candidate_flags(preset, seeds[tr]), *shlex.split(args.aff_args)], p / f"masks-{tr}" / "manifest.json"))  # fmt: skip
    steps += [] if not va else [(f"refine-psa-{va}", [*refine, "--seeds", str(seeds[va] / "seeds.h5"), "--split", va, "--out", str(p / f"masks-{va}"),
                  "--affinity", str(p / f"masks-{tr}" / "affinity.pt")], p / f"masks-{va}" / "manifest.json")]  # fmt: skip
    steps.append(("train-seg", [*exe, "train-seg", "--masks", str(p / f"masks-{tr}"), *data, "--split", tr, "--out", str(p / "seg"),
                  *dev, *workers, "--quiet", *shlex.split(args.seg_args)], p / "seg" / "checkpoint.pt"))  # fmt: skip
    for s in splits:
        steps.append((f"predict-seg-{s}", [*exe, "predict-seg", "--ckpt", str(p / "seg" / "checkpoint.pt"), *data, "--split", s,
                      "--out", str(p / f"preds-{s}"), *dev, *workers, "--quiet", *shlex.split(args.pred_args)], p / f"preds-{s}" / "manifest.json"))  # fmt: skip
    for s in splits:
        for kind, pred in (("seeds", seeds[s] / "seeds.h5"), ("masks", p / f"masks-{s}"), ("preds", p / f"preds-{s}")):
            out = (d if kind == "seeds" else p) / f"metrics-{kind}-{s}.json"
            steps.append((f"evaluate-{kind}-{s}", [*exe, "evaluate", "--pred", str(pred), *data, "--split", s, "--out", str(out),
                          "--quiet", *workers], out))  # fmt: skip
    return steps


def _skipped(step: str, kinds: tuple[str, ...]) -> bool:
    """Steps of the segmentation network when the chain stops at the masks (--until masks)."""
    return "preds" not in kinds and (step.startswith(("predict-seg", "train-seg")) or step.startswith("evaluate-preds"))


def run_chain(args, st: dict, row, seed: int, preset: str) -> dict:
    d = pt.run_dir(Path(args.out), "table1", row, seed)
    d.mkdir(parents=True, exist_ok=True)
    tag = f"{row.name} seed{seed} {preset}"
    if not (d / "cls" / "checkpoint.pt").exists():
        cmd = pt.commands(args, st, "table1", row, seed, val=False)["train-cls"]
        _run([*cmd, "--resume"] if (d / "cls" / "last.pt").exists() else cmd, d / "train-cls.log", f"{tag} train-cls")
    pdir = preset_dir(d, preset, args.tag)
    kinds = ("seeds", "masks", "preds") if args.until == "preds" else ("seeds", "masks")
    for step, _, product in chain_commands(args, st, d, preset):
        if not product.exists() and not _skipped(step, kinds):
            cmd = dict((s, c) for s, c, _ in chain_commands(args, st, d, preset))[step]  # built now: a candidate reads the seeds
            pdir.mkdir(exist_ok=True)
            _run(cmd, pdir / f"{step}.log" if not step.startswith("gen-seeds") else d / f"{step}.log", f"{tag} {step}")
    out = {}
    for s in (args.train_split, args.val_split) if args.val_split else (args.train_split,):
        for kind in kinds:
            m = json.loads(((d if kind == "seeds" else pdir) / f"metrics-{kind}-{s}.json").read_text())
            out[f"{kind}-{s}"] = m["miou"]
            if kind == "seeds":
                out[f"seeds_auto-{s}"] = (m.get("pipeline") or {}).get("miou")
                out[f"seeds_thr-{s}"] = m.get("threshold")
                out[f"seeds_auto_thr-{s}"] = (m.get("pipeline") or {}).get("threshold")
    return out


# the columns of the table: (key, header); gains are paired per seed
COLUMNS = (
    ("seeds-{tr}", "seeds {tr} (GT thr)"), ("seeds_auto-{tr}", "seeds {tr} (own thr)"), ("masks-{tr}", "masks {tr}"),
    ("preds-{tr}", "preds {tr}"), ("seeds_auto-{va}", "seeds {va} (own thr)"), ("masks-{va}", "masks {va}"), ("preds-{va}", "preds {va}"),
)  # fmt: skip
GAINS = (("masks-{tr}", "seeds_auto-{tr}"), ("preds-{tr}", "masks-{tr}"), ("masks-{va}", "seeds_auto-{va}"), ("preds-{va}", "masks-{va}"))


def render_md(meta: dict, results: dict) -> str:
    tr, va = meta["train_split"], meta["val_split"]
    f = {"tr": tr, "va": va}
    columns = [c for c in COLUMNS if va or "{va}" not in c[0]]
    gains = [g for g in GAINS if va or "{va}" not in g[0]]
    st = meta["settings"]
    lines = [
        "# Chain study: seeds -> pseudo masks -> segmentation, no ground truth in the chain",
        "",
        f"- dataset `{meta['dataset']}` at `{meta['root']}`; classifier `{meta['backbone']}` "
        f"({'ImageNet weights' if st['pretrained'] else 'from scratch'}), row `{meta['row']}`; training seeds {','.join(map(str, meta['seeds']))}",
        f"- train-cls: epochs {st['epochs']}, img size {st['img_size']}, batch {st['batch_size']}, lr {fmt_num(st['lr'])}, aug {st['aug']}"
        + (f", extra `{st['extra']}`" if st["extra"] else ""),
        f"- gen-seeds: scales {st['scales']}" + (f", `{meta['gen_seeds_extra']}`" if meta["gen_seeds_extra"] else "") + "; refine-psa: `--preset P "
        + meta["aff_args"] + "`; train-seg: `" + meta["seg_args"] + "`; predict-seg: `" + meta["pred_args"] + "`",
        "- seeds (GT thr): the field's figure, at the best background threshold of the sweep on the split's ground truth; "
        "(own thr): at the threshold gen-seeds chose from the seed maps alone, which is what refine-psa's auto preset uses",
        "- each cell: mIoU %, mean ± sample std over seeds; gains: paired (same seed) differences, no ground truth in either term",
        "",
        "| preset | " + " | ".join(h.format(**f) for _, h in columns) + " | " + " | ".join(f"{a.split('-')[0]} − {b.split('-')[0].replace('_auto', '')} {a.split('-')[1].format(**f)}" for a, b in gains) + " |",
        "| --- |" + " --- |" * (len(columns) + len(gains)),
    ]
    for preset in meta["presets"]:
        per = {s: results[preset, s] for s in meta["seeds"] if (preset, s) in results}
        cells = [fmt_stat(mean_std(r.get(k.format(**f)) for r in per.values())) for k, _ in columns]
        for a, b in gains:
            diffs = paired_diffs({s: r.get(a.format(**f)) for s, r in per.items()}, {s: r.get(b.format(**f)) for s, r in per.items()})
            cells.append(fmt_stat(mean_std(diffs.values()), signed=True))
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pt.add_common_args(p)
    p.add_argument("--row", default="cm+aa", help="the classifier row of Table 1 whose seeds go down the chain")
    p.add_argument("--presets", default=",".join(PRESETS), help="refine-psa presets to compare")
    p.add_argument("--aff-args", default="--backbone efficientnet_lite0 --pretrained --epochs 3 --batch-size 8 --crop 192",
                   help="refine-psa flags for AffinityNet (the training split's run)")
    p.add_argument("--seg-args", default="--backbone efficientnet_lite0 --pretrained --epochs 20 --batch-size 8 --crop 192 --lr 0.007 --aspp-channels 64",
                   help="train-seg flags (20 epochs: at 8 the MSRC predictions spread by 9 points across seeds, docs/results.md)")
    p.add_argument("--pred-args", default="--scales 1.0 --flip", help="predict-seg flags")
    p.add_argument("--tag", default="", help="a name for these --aff-args/--seg-args (another budget): the chain runs "
                   "in <preset>@TAG beside the others, sharing the classifier and seeds, and writes chain-TAG.json/.md")
    p.add_argument("--until", choices=("masks", "preds"), default="preds", help="stop at the pseudo masks (choosing refine-psa settings)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = pt.seed_list(args)
    family = pt.family_of(args.backbone)
    st = pt.resolve_settings(args, family)
    rows, _ = pt.table_rows("table1", family, st["tau1s"], [args.row])
    row = next(r for r in rows if r.name == args.row)
    presets = [x for x in args.presets.split(",") if x]
    results = {}
    for seed in seeds:
        for preset in presets:
            results[preset, seed] = run_chain(args, st, row, seed, preset)
    meta = {
        "dataset": args.dataset, "root": str(args.root), "backbone": args.backbone, "row": row.name, "seeds": seeds,
        "train_split": args.train_split, "val_split": args.val_split, "presets": presets, "settings": st,
        "tag": args.tag, "aff_args": args.aff_args, "seg_args": args.seg_args, "pred_args": args.pred_args, "gen_seeds_extra": args.gen_seeds_extra,
        "argv": [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])],
    }  # fmt: skip
    md = render_md(meta, results)
    out = Path(args.out)
    runs = [{"preset": k[0], "seed": k[1], **v} for k, v in results.items()]
    name = f"chain-{args.tag}" if args.tag else "chain"
    (out / f"{name}.json").write_text(json.dumps({**meta, "runs": runs}, indent=2) + "\n")
    (out / f"{name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
