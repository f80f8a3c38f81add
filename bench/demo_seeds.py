"""`make demo` over several training seeds: the demo's table as mean +- sample std, with paired gains.

    python bench/demo_seeds.py --seeds 0,1,2 --out DIR [--venv .venv] [-- VAR=VALUE ...]

Per training seed S, ``make eval OUT=DIR/seedS SEED=S`` (the demo's chain on the demo's data: the
data set stays the one SYNTH_ARGS makes; SEED seeds the classifiers, AffinityNet and the segmentation
network), timed; a finished seed folder is reused. Then, for every row of the demo's table
(seeds-cam, seeds-usage, masks, preds; per split): its mIoU at the ground-truth-best threshold, its
no-GT mIoU (a seed store at its own threshold; label maps as they are), and the paired (same seed)
gains: USAGE's seeds over CAM's at both thresholds, the masks over USAGE's seeds, the predictions over
the masks (no-GT). Make variables after ``--`` (e.g. ``BACKBONE=deit_t``) go to every run. Writes
DIR/demo_seeds.json and DIR/demo_seeds.md (also printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import paper_tables as pt  # noqa: E402  (mean_std, paired_diffs, fmt_stat)

ROWS = ("seeds-cam", "seeds-usage", "masks", "preds")


def run_seed(seed: int, out: Path, venv: str, make_vars: list[str]) -> float | None:
    """``make eval`` for one training seed; its wall time (None when reused)."""
    folder = out / f"seed{seed}"
    if all((folder / "metrics" / f"{r}-{s}.json").exists() for r in ROWS for s in ("train", "val")):
        return None
    stamp = out / ".stamp"
    stamp.touch()  # the venv is installed already: make must not reinstall it
    cmd = ["make", "eval", f"OUT={folder}", f"SEED={seed}", f"VENV={venv}", f"STAMP={stamp}", *make_vars]
    t0 = time.perf_counter()
    with open(out / f"seed{seed}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=BENCH.parent, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"seed {seed}: make failed (exit {rc}), see {out / f'seed{seed}.log'}")
    return time.perf_counter() - t0


def scores(folder: Path) -> dict[str, dict[str, float | None]]:
    """``<row>-<split>`` -> its mIoU at the ground-truth-best threshold and its no-GT mIoU."""
    out = {}
    for f in sorted((folder / "metrics").glob("*.json")):
        m = json.loads(f.read_text())
        no_gt = (m.get("pipeline") or {}).get("miou") if m.get("threshold") is not None else m["miou"]
        out[f.stem] = {"best": m["miou"], "no_gt": no_gt}
    return out


def table(per_seed: dict[int, dict], splits: tuple[str, ...]) -> tuple[list[dict], str]:
    """Rows of mean +- std and paired gains, and the markdown table."""
    name = {"seeds-cam": "seeds-cam", "seeds-usage": "seeds-usage", "masks": "masks", "preds": "preds"}
    prev = {"seeds-usage": "seeds-cam", "masks": "seeds-usage", "preds": "masks"}
    rows, lines = [], ["| row | split | mIoU (GT-best thr) | no-GT mIoU | gain at GT-best | gain no-GT | n |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in ROWS:
        for s in splits:
            key = f"{name[r]}-{s}"
            best = {k: v[key]["best"] for k, v in per_seed.items() if key in v}
            no_gt = {k: v[key]["no_gt"] for k, v in per_seed.items() if key in v}
            row = {"row": key, "best": pt.mean_std(list(best.values())), "no_gt": pt.mean_std(list(no_gt.values()))}
            if r in prev:
                base = f"{prev[r]}-{s}"
                row["gain_no_gt"] = pt.mean_std(list(pt.paired_diffs(no_gt, {k: v[base]["no_gt"] for k, v in per_seed.items() if base in v}).values()))
                if r == "seeds-usage":  # the seeds' other figure: both at their ground-truth-best threshold
                    row["gain_best"] = pt.mean_std(list(pt.paired_diffs(best, {k: v[base]["best"] for k, v in per_seed.items() if base in v}).values()))
            rows.append(row)
            lines.append(f"| {r} | {s} | {pt.fmt_stat(row['best'])} | {pt.fmt_stat(row['no_gt'])} | "
                         f"{pt.fmt_stat(row.get('gain_best', {}), signed=True)} | {pt.fmt_stat(row.get('gain_no_gt', {}), signed=True)} | {row['best']['n']} |")  # fmt: skip
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--out", required=True, type=Path, help="DIR: one demo folder per seed (DIR/seedS), the table")
    p.add_argument("--venv", default=".venv", help="the installed venv make runs (VENV)")
    p.add_argument("make_vars", nargs="*", help="make variables for every run, after --: VAR=VALUE")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    walls = {}
    for s in seeds:
        walls[s] = run_seed(s, args.out, str(Path(args.venv).resolve()), args.make_vars)
        print(f"[seed {s}] " + ("reused" if walls[s] is None else f"{walls[s]:.0f} s"), file=sys.stderr, flush=True)
    per_seed = {s: scores(args.out / f"seed{s}") for s in seeds}
    rows, md = table(per_seed, ("train", "val"))
    md += "\n\nwall s per run: " + ", ".join(f"seed {s}: {'reused' if w is None else f'{w:.0f}'}" for s, w in walls.items())
    (args.out / "demo_seeds.json").write_text(json.dumps({"seeds": seeds, "make_vars": args.make_vars, "per_seed": per_seed, "rows": rows, "wall_s": walls}, indent=1))
    (args.out / "demo_seeds.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
