"""The paper's seed-area tables (USAGE, ICCV 2023: Tables 1, 5, 7, 8) as commands, over several seeds.

Each row of a table is one set of ``usage train-cls`` flags; every row shares every other setting.
Each (row, seed) runs through the real CLI, as subprocesses:

    usage train-cls ... --seed S --out DIR/runs/<row flags>/seed<S>/cls --quiet
    usage gen-seeds --ckpt .../cls/checkpoint.pt --split EVAL --out .../seeds-EVAL --overlays 0 --quiet --scales ...
    usage evaluate  --pred .../seeds-EVAL/seeds.h5 --split EVAL --out .../metrics-EVAL.json --quiet
    # and, when the val split exists: seeds on it, scored at the threshold chosen on EVAL
    usage gen-seeds ... --split VAL --out .../seeds-VAL ...
    usage evaluate  --pred .../seeds-VAL/seeds.h5 --split VAL --bg-threshold T --out .../metrics-VAL.json --quiet

On EVAL the background threshold is the best of the sweep (the field's convention for seeds, tuned
on EVAL's own ground truth); the VAL number is at that fixed threshold, so it was not tuned on its
own ground truth. A (row, seed) whose metrics files exist is skipped, so a killed run restarts where
it stopped (a half-trained classifier continues from its last.pt).

    python bench/paper_tables.py table1 --root R --backbone deit_s --seeds 0,1,2 --out runs/tables
    python bench/paper_tables.py table8 --root R --backbone deit_s --out runs/tables --paper --device cuda
    python bench/paper_tables.py table5 --root R --backbone efficientnet_lite0 --out /tmp/t --dry-run

Writes DIR/<table>.json (every run's numbers, the train-cls log's last line, wall times, the exact
commands and settings, and the summary) and DIR/<table>.md (the markdown table printed to stdout).
The summary is mean +- sample std (ddof=1) over seeds, and each row's paired difference to the
``cam`` row (same seed, then mean +- std over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from usage_cli.metrics.stats import fmt_num, fmt_stat, mean_std, paired_diffs
from usage_cli.presets import TRAIN_CLS

TABLES = ("table1", "table5", "table7", "table8")
TITLES = {
    "table1": "Table 1: CAM vs activation shape controlling (CM) vs CM + architecture-adjustment regulariser (AA)",
    "table5": "Table 5: the temperature tau1 of the CM mapping (cm+aa)",
    "table7": "Table 7: the adjustment-gap schedule of the AA regulariser (cm+aa)",
    "table8": "Table 8: mapping x regulariser variants",
}
REDUCED = {  # CPU-sized budget; the header of every reduced table says so
    "transformer": {"epochs": 8, "img_size": 128, "batch_size": 16, "lr": 5e-4, "aug": "light"},
    "cnn": {"epochs": 8, "img_size": 128, "batch_size": 16, "lr": 0.01, "aug": "light"},
}
REDUCED_SCALES = "1.0,0.5,1.5"
PAPER_SCALES = "1.0,0.5,1.5,2.0"  # with flip, as PSA / MCTformer
REDUCED_TAU1S = "1,2,5,10,50"
PAPER_TAU1S = "0.5,1,2,25,50,75"  # the columns of the paper's Table 5

# the paper's own mIoU (%) per row and backbone family, where the row is one of the table's
PAPER = {
    "table1": {
        "cnn": {"cam": (47.8, 22.6, 30.1), "cm": (49.6, 22.9, 27.2), "cm+aa": (57.7, 20.4, 22.6)},
        "transformer": {"cam": (52.3, 28.4, 19.1), "cm": (64.0, 20.3, 15.5), "cm+aa": (67.7, 17.8, 14.7)},
    },
    "table5": {
        "cnn": dict(zip((0.5, 1, 2, 25, 50, 75), (48.9, 49.6, 50.5, 57.5, 57.7, 56.7), strict=True)),
        "transformer": dict(zip((0.5, 1, 2, 25, 50, 75), (67.2, 67.7, 67.1, 52.3, 51.4, 50.3), strict=True)),
    },
    "table7": {
        "cnn": {"fixed": 55.5, "linear": 56.9, "self-adaptive": 57.7},
        "transformer": {"fixed": 66.6, "linear": 67.2, "self-adaptive": 67.7},
    },
    "table8": {  # the paper's Table 8 also has cam+gt (CNN 55.4) and cam+oaa (CNN 53.9, Trans. 65.1)
        "cnn": {"cam+none": 48.7, "mil+none": 29.3, "cm+aa": 57.7},
        "transformer": {"cam+none": 52.3, "mct+none": 55.2, "mil+none": 54.3, "cm+gt": 62.4, "cam+aa": 56.5, "cm+aa": 67.7},
    },
}
TABLE8_VARIANTS = ("cam+none", "mil+none", "cm+none", "mct+none", "cam+aa", "cm+gt", "cm+oaa", "cm+aa")
METRIC_KEYS = ("miou", "fpr", "fnr", "threshold", "val_miou", "val_fpr", "val_fnr", "own_threshold", "own_miou")
# the classifier's last-epoch diagnostics (train-cls log.jsonl), summarised per row like the metrics
DIAG_KEYS = ("loss_cls", "empty_share", "present_max", "cm_ess", "aa_agree", "aa_kl", "learning_fraction", "student_drop_path")


# -------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class Row:
    name: str
    flags: tuple[str, ...]  # train-cls flags of this row (always --mapping and --reg)
    baseline: bool = False  # the `cam` row that the paired differences are taken against
    paper: tuple[float, ...] | float | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9+=.-]+", "_", self.name)

    @property
    def key(self) -> str:
        """The row's training as a folder name: rows of different tables with the same flags
        (Table 1's cm+aa is Table 5's tau1 = 50 and Table 7's self-adaptive) share their runs."""
        return re.sub(r"[^A-Za-z0-9+=.-]+", "_", "_".join(f.lstrip("-") for f in self.flags))




def _mr(mapping: str, reg: str, family: str = "", tau1: float | None = None, schedule: str | None = None) -> tuple[str, ...]:
    """A row's train-cls flags, every one that tells rows apart given explicitly: cm rows their tau1
    (the family's unless given), aa rows their schedule (self-adaptive unless given)."""
    flags = ("--mapping", mapping, "--reg", reg)
    if mapping == "cm" and (tau1 is not None or family in TRAIN_CLS["paper"]):
        flags += ("--tau1", fmt_num(tau1 if tau1 is not None else TRAIN_CLS["paper"][family]["tau1"]))  # the train-cls preset's
    if reg == "aa":
        flags += ("--aa-schedule", schedule or "self-adaptive")
    return flags


def table_rows(table: str, family: str, tau1s: list[float] | None = None, only: list[str] | None = None) -> tuple[list[Row], list[str]]:
    """The rows of ``table`` for a backbone family, and notes on rows left out.

    cm rows pass their tau1 (the family's, 1 / 50, unless table5 sets it), aa rows their schedule.
    ``only``: keep these row names (the baseline always stays); for table8 any ``mapping+reg``."""
    if table not in TABLES:
        raise ValueError(f"unknown table '{table}'; choose from {', '.join(TABLES)}")
    ref = PAPER[table].get(family, {})
    cam = Row("cam", _mr("cam", "none"), baseline=True, paper=ref.get("cam"))
    notes: list[str] = []
    if table == "table1":
        rows = [cam, Row("cm", _mr("cm", "none", family), paper=ref.get("cm")), Row("cm+aa", _mr("cm", "aa", family), paper=ref.get("cm+aa"))]
    elif table == "table5":
        tau1s = tau1s if tau1s else [float(t) for t in REDUCED_TAU1S.split(",")]
        rows = [cam] + [Row(f"cm+aa tau1={fmt_num(t)}", _mr("cm", "aa", family, tau1=t), paper=ref.get(t)) for t in tau1s]
    elif table == "table7":
        rows = [cam] + [Row(f"cm+aa {s}", _mr("cm", "aa", family, schedule=s), paper=ref.get(s)) for s in ("fixed", "linear", "self-adaptive")]
    else:
        variants = list(TABLE8_VARIANTS)
        for extra in only or []:
            if extra not in variants:
                if not re.fullmatch(r"[a-z]+\+[a-z]+", extra):
                    raise ValueError(f"table8 rows are MAPPING+REG (e.g. cam+gt), not '{extra}'")
                variants.append(extra)
        rows = []
        for v in variants:
            mapping, reg = v.split("+")
            if mapping == "mct" and family != "transformer":
                notes.append(f"{v} skipped: the class-to-patch attention mapping (mct) needs a transformer backbone, this one is a CNN")
                continue
            rows.append(Row(v, _mr(mapping, reg, family), baseline=v == "cam+none", paper=ref.get(v)))
    if only:
        unknown = [n for n in only if n not in {r.name for r in rows} and not any(n in note for note in notes)]
        if unknown:
            raise ValueError(f"{table} has no row(s) {', '.join(unknown)}; rows: {', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.baseline or r.name in only]
    return rows, notes


def summarize(rows: list[Row], runs: list[dict]) -> list[dict]:
    """Per row: mean/std over seeds of each metric, and the paired difference to the baseline row."""
    by_row: dict[str, dict[int, dict]] = {r.name: {} for r in rows}
    for run in runs:
        if run.get("status") == "done" and run["row"] in by_row:
            by_row[run["row"]][run["seed"]] = run["metrics"]
    base = next((r for r in rows if r.baseline), None)
    out = []
    for r in rows:
        per_seed = by_row[r.name]
        entry = {"row": r.name, "flags": list(r.flags), "seeds": sorted(per_seed), "paper": r.paper}
        for k in METRIC_KEYS:
            entry[k] = mean_std(m.get(k) for m in per_seed.values())
        logs = [run.get("train_log") or {} for run in runs if run["row"] == r.name and run.get("status") == "done"]
        entry["diag"] = {k: mean_std(log.get(k) for log in logs) for k in DIAG_KEYS}
        walls = [run["wall_s"]["total"] for run in runs if run["row"] == r.name and run.get("status") == "done" and run.get("wall_s", {}).get("total")]
        entry["wall_s"] = mean_std(walls)
        if base is not None:
            for k in ("miou", "val_miou", "own_miou"):
                d = paired_diffs({s: m.get(k) for s, m in per_seed.items()}, {s: m.get(k) for s, m in by_row[base.name].items()})
                entry[f"d_{k}"] = {**mean_std(d.values()), "per_seed": d, "vs": base.name}
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------- settings
def family_of(backbone: str) -> str:
    """"transformer" or "cnn": the package's rule (usage_cli.models.backbones.backbone_family)."""
    from usage_cli.models.backbones import backbone_family

    return backbone_family(backbone)


def seed_list(args) -> list[int]:
    """``--seeds 0,1,2`` as distinct integers (one line and exit otherwise); every bench script's."""
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {args.seeds}: give distinct integers")
    return seeds


def resolve_settings(args, family: str) -> dict:
    """The settings every row shares: the paper's (``--paper``) or the reduced CPU budget, with
    explicit command-line values winning over both."""
    if args.paper:
        p = TRAIN_CLS["paper"][family]
        base = {k: p[k] for k in ("epochs", "img_size", "batch_size", "aug")}
        base["lr"] = p["lr"]
        scales, pretrained = PAPER_SCALES, True
    else:
        base, scales, pretrained = dict(REDUCED[family]), REDUCED_SCALES, False
    overridden = []
    for k in ("epochs", "img_size", "batch_size", "lr", "aug"):
        v = getattr(args, k)
        if v is not None:
            base[k] = v
            overridden.append(k)
    if base["lr"] is None:  # the preset's rule (DeiT / MCTformer), as train-cls applies it (one process)
        from usage_cli.presets import deit_lr

        base["lr"] = deit_lr(base["batch_size"])
    if args.scales is not None:
        scales = args.scales
        overridden.append("scales")
    if args.pretrained is not None:
        pretrained = args.pretrained
        overridden.append("pretrained")
    tau1s = args.tau1s or (PAPER_TAU1S if args.paper else REDUCED_TAU1S)
    return {
        "mode": "paper" if args.paper else "reduced",
        **base,
        "pretrained": pretrained,
        "scales": scales,
        "flip": args.flip,
        "device": args.device,
        "workers": args.workers,
        "tau1s": [float(t) for t in tau1s.split(",")],
        "extra": args.extra,
        "gen_seeds_extra": args.gen_seeds_extra,
        "overridden": overridden,
    }


# ---------------------------------------------------------------------------------------- commands
def usage_exe() -> list[str]:
    """The `usage` of this interpreter's environment, else the one on PATH, else the checkout's venv."""
    for exe in (Path(sys.executable).parent / "usage", shutil.which("usage"), Path(__file__).resolve().parents[1] / ".venv" / "bin" / "usage"):
        if exe and Path(exe).exists():
            return [str(exe)]
    return [sys.executable, "-m", "usage_cli"]


def run_dir(out: Path, table: str, row: Row, seed: int) -> Path:
    """DIR/runs/<the row's flags>/seed<S>: shared by every table that has the same row."""
    return out / "runs" / row.key / f"seed{seed}"


def commands(args, st: dict, table: str, row: Row, seed: int, val: bool, threshold: float | str = "<T>") -> dict[str, list[str]]:
    """The exact commands of one (row, seed), by step name."""
    d = run_dir(Path(args.out), table, row, seed)
    exe = usage_exe()
    data = ["--dataset", args.dataset, "--root", str(args.root)]
    dev = ["--device", st["device"]]
    workers = ["--workers", str(st["workers"])] if st["workers"] is not None else []
    train = [
        *exe, "train-cls", *data, "--split", args.train_split, "--val-split", args.val_split or "",
        "--backbone", args.backbone, "--preset", "paper",
        "--epochs", str(st["epochs"]), "--img-size", str(st["img_size"]), "--batch-size", str(st["batch_size"]),
        "--lr", fmt_num(st["lr"]), "--aug", st["aug"], "--pretrained" if st["pretrained"] else "--no-pretrained",
        *dev, *workers, *shlex.split(st["extra"] or ""), *row.flags,
        "--seed", str(seed), "--out", str(d / "cls"), "--quiet",
    ]  # fmt: skip
    flip = "--flip" if st["flip"] else "--no-flip"

    def seeds(split: str) -> list[str]:
        return [*exe, "gen-seeds", "--ckpt", str(d / "cls" / "checkpoint.pt"), *data, "--split", split,
                "--out", str(d / f"seeds-{split}"), "--overlays", "0", "--quiet", "--scales", st["scales"], flip, *dev, *workers,
                *shlex.split(st["gen_seeds_extra"] or "")]  # fmt: skip

    def evaluate(split: str, *thr: str) -> list[str]:
        return [*exe, "evaluate", "--pred", str(d / f"seeds-{split}" / "seeds.h5"), *data, "--split", split, *thr,
                "--out", str(d / f"metrics-{split}.json"), "--quiet", *workers]  # fmt: skip

    cmds = {"train-cls": train, "gen-seeds": seeds(args.eval_split), "evaluate": evaluate(args.eval_split)}
    if val:
        t = threshold if isinstance(threshold, str) else fmt_num(round(float(threshold), 6))
        cmds["gen-seeds-val"] = seeds(args.val_split)
        cmds["evaluate-val"] = evaluate(args.val_split, "--bg-threshold", t)
    return cmds


def split_exists(dataset: str, root: str, split: str) -> tuple[bool, str]:
    try:
        from usage_cli.data import load_dataset
        from usage_cli.errors import UsageError

        try:
            load_dataset(dataset, root, split, require_images=False)
        except UsageError as e:
            return False, str(e)
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {e}"
    return True, ""


# ------------------------------------------------------------------------------------------ running
def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def last_log_line(cls_dir: Path) -> dict:
    p = cls_dir / "log.jsonl"
    if not p.exists():
        return {}
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


def _metrics_of(m: dict | None, prefix: str = "") -> dict:
    if not m:
        return {}
    keep = {k: v for k, v in m.items() if k not in ("per_class", "confusion", "curve", "pred", "metrics", "dataset")}
    return {f"{prefix}{k}": v for k, v in keep.items()}


def run_one(args, st: dict, table: str, row: Row, seed: int, val: bool) -> dict:
    """Run (or reuse) one (row, seed); returns its record."""
    d = run_dir(Path(args.out), table, row, seed)
    d.mkdir(parents=True, exist_ok=True)
    tag = f"[{table} {row.name} seed{seed}]"
    cmds = commands(args, st, table, row, seed, val)
    n_exe = len(usage_exe())  # compared without the executable, so a moved venv still matches
    fixed = {k: v[n_exe:] for k, v in cmds.items() if k != "evaluate-val"}
    stored = _read_json(d / "commands.json")
    if stored is not None and stored != fixed:
        raise SystemExit(f"{d}: was run with other settings ({d / 'commands.json'}); use another --out or delete that folder")
    (d / "commands.json").write_text(json.dumps(fixed, indent=2) + "\n")
    eval_m, val_m = d / f"metrics-{args.eval_split}.json", d / f"metrics-{args.val_split}.json"
    record = {"row": row.name, "seed": seed, "dir": str(d), "flags": list(row.flags)}
    prev = _read_json(d / "run.json") or {}
    if eval_m.exists() and (not val or val_m.exists()):
        wall, status_note = prev.get("wall_s") or _read_json(d / "wall.json") or {}, "reused"
        print(f"{tag} done before, reused", file=sys.stderr, flush=True)
    else:
        wall, status_note = _read_json(d / "wall.json") or {}, "ran"  # steps of an earlier, killed invocation too
        steps = [("train-cls", d / "cls" / "checkpoint.pt"), ("gen-seeds", d / f"seeds-{args.eval_split}" / "seeds.h5"), ("evaluate", eval_m)]
        if val:
            steps += [("gen-seeds-val", d / f"seeds-{args.val_split}" / "seeds.h5"), ("evaluate-val", val_m)]
        for step, product in steps:
            if product.exists():
                continue
            cmd = cmds[step]
            if step == "train-cls" and (d / "cls" / "last.pt").exists():
                cmd = [*cmd, "--resume"]  # a killed training continues from its last epoch
            if step == "evaluate-val":
                thr = (_read_json(eval_m) or {}).get("threshold")
                if thr is None:
                    return {**record, "status": "failed", "failed_step": step, "returncode": None, "log": str(eval_m),
                            "log_tail": [f"{eval_m} has no swept threshold"], "wall_s": wall}  # fmt: skip
                cmd = commands(args, st, table, row, seed, val, threshold=thr)[step]
            t0 = time.perf_counter()
            with open(d / f"{step}.log", "a") as log:
                log.write("$ " + shlex.join(cmd) + "\n")
                log.flush()
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
            wall[step] = round(time.perf_counter() - t0, 3)
            (d / "wall.json").write_text(json.dumps(wall) + "\n")
            print(f"{tag} {step}: {wall[step]:.1f} s" + ("" if rc == 0 else f"  FAILED (exit {rc}, see {d / (step + '.log')})"), file=sys.stderr, flush=True)
            if rc != 0:
                tail = (d / f"{step}.log").read_text().splitlines()[-15:]
                return {**record, "status": "failed", "failed_step": step, "returncode": rc, "log": str(d / f"{step}.log"),
                        "log_tail": tail, "wall_s": wall, "commands": {k: shlex.join(v) for k, v in cmds.items()}}  # fmt: skip
        wall["total"] = round(sum(v for k, v in wall.items() if k != "total"), 3)
    em, vm = _read_json(eval_m), _read_json(val_m) if val else None
    metrics = {k: (em or {}).get(k) for k in ("miou", "fpr", "fnr", "threshold")}
    if vm:
        metrics.update({f"val_{k}": vm.get(k) for k in ("miou", "fpr", "fnr", "threshold")})
    own = (em or {}).get("pipeline") or {}  # the store's own threshold (gen-seeds --bg-threshold auto): no ground truth
    metrics.update(own_threshold=own.get("threshold"), own_miou=own.get("miou"))
    if val:
        cmds = commands(args, st, table, row, seed, val, threshold=metrics["threshold"])
    record.update(
        status="done", how=status_note, metrics=metrics, eval=_metrics_of(em), val=_metrics_of(vm),
        train_log=last_log_line(d / "cls"), wall_s=wall, commands={k: shlex.join(v) for k, v in cmds.items()},
    )  # fmt: skip
    (d / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


# ------------------------------------------------------------------------------------------- report
def render_md(meta: dict, rows: list[Row], summary: list[dict], notes: list[str], failures: list[dict]) -> str:
    st = meta["settings"]
    mode = ("paper settings (sec. 5.1 / the train-cls paper preset), meant for a GPU box" if st["mode"] == "paper"
            else "REDUCED settings (a CPU budget, not the paper's: pass --paper for those)")  # fmt: skip
    ov = f"; set on the command line: {', '.join(st['overridden'])}" if st["overridden"] else ""
    val = f"`{meta['val_split']}` at the threshold chosen on `{meta['eval_split']}`" if meta["val_used"] else f"none ({meta['val_note']})"
    lines = [
        f"# {TITLES[meta['table']]}",
        "",
        f"- {mode}{ov}",
        f"- dataset `{meta['dataset']}` at `{meta['root']}`; backbone `{meta['backbone']}` ({meta['family']}); "
        f"seeds {','.join(map(str, meta['seeds']))} (n={len(meta['seeds'])})",
        f"- train-cls: `--preset paper`, split `{meta['train_split']}`, epochs {st['epochs']}, img size {st['img_size']}, batch {st['batch_size']}, "
        f"lr {fmt_num(st['lr'])}, aug {st['aug']}, {'ImageNet-pretrained' if st['pretrained'] else 'from scratch (no --pretrained)'}, "
        f"device {st['device']}, tau1 from the preset per family (1 transformers, 50 CNNs) except where a row sets it"
        + (f", extra flags `{st['extra']}`" if st["extra"] else ""),
        f"- seeds: scales {st['scales']}, {'with' if st['flip'] else 'no'} flip"
        + (f", extra flags `{st['gen_seeds_extra']}`" if st["gen_seeds_extra"] else "")
        + "".join(f"; {row}: `--refine {s['refine']} --normalise {s['normalise']}`" for row, s in meta.get("seed_steps", {}).items())
        + f"; scored on `{meta['eval_split']}` at the best "
        f"background threshold of the 0.00:0.95:0.01 sweep (tuned on that split's ground truth); val: {val}",
        "- no-GT: the seeds at the threshold gen-seeds chose from its own maps (`--bg-threshold auto`), what a user without "
        "ground truth gets; scored on the same split",
        "- each cell: mean ± sample std (ddof=1) over seeds, or the value and n=1; Δ: paired (same seed) difference to the "
        "`cam` row, then mean ± std; all in %",
    ]
    lines += [f"- note: {n}" for n in notes]
    lines += [f"- FAILED: {f['row']} seed{f['seed']} at {f['failed_step']} (exit {f['returncode']}, {f['log']})" for f in failures]
    lines += [
        "",
        "| row | flags | mIoU | FPR | FNR | bg thr | val mIoU @thr | Δ mIoU vs cam | Δ val mIoU vs cam | no-GT thr | mIoU @no-GT thr | Δ @no-GT vs cam | paper mIoU | n | wall s/run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r, s in zip(rows, summary, strict=True):
        paper = r.paper[0] if isinstance(r.paper, tuple) else r.paper
        dm = "-" if r.baseline else fmt_stat(s.get("d_miou", {}), signed=True)
        dv = "-" if r.baseline else fmt_stat(s.get("d_val_miou", {}), signed=True)
        do = "-" if r.baseline else fmt_stat(s.get("d_own_miou", {}), signed=True)
        lines.append(
            f"| {r.name} | `{' '.join(r.flags)}` | {fmt_stat(s['miou'])} | {fmt_stat(s['fpr'])} | {fmt_stat(s['fnr'])} | "
            f"{fmt_stat(s['threshold'], 2)} | {fmt_stat(s['val_miou'])} | {dm} | {dv} | "
            f"{fmt_stat(s['own_threshold'], 2)} | {fmt_stat(s['own_miou'])} | {do} | {'-' if paper is None else paper} | "
            f"{s['miou']['n']} | {fmt_stat(s['wall_s'], 0).replace(' (n=1)', '')} |"
        )
    lines += [
        "",
        "Diagnostics of the classifier at its last epoch (train-cls `log.jsonl`, see docs/train-cls.md), mean ± std over seeds:",
        "",
        "| row | " + " | ".join(DIAG_KEYS) + " |",
        "| --- | " + " | ".join("---" for _ in DIAG_KEYS) + " |",
    ]
    for r, s in zip(rows, summary, strict=True):
        lines.append(f"| {r.name} | " + " | ".join(fmt_stat(s["diag"][k], 3).replace(" (n=1)", "") for k in DIAG_KEYS) + " |")
    return "\n".join(lines) + "\n"


def seed_steps(runs: list[dict], eval_split: str) -> dict[str, dict]:
    """The seed step gen-seeds resolved (``--refine`` / ``--normalise`` auto) per row, from the
    first finished run's manifest; rows that agree are listed once, as "every row"."""
    steps: dict[str, dict] = {}
    for run in runs:
        if run.get("status") == "done" and run["row"] not in steps:
            m = _read_json(Path(run["dir"]) / f"seeds-{eval_split}" / "manifest.json") or {}
            if m.get("seed_step"):
                steps[run["row"]] = {k: m["seed_step"][k] for k in ("refine", "normalise")}
    if steps and len({json.dumps(v, sort_keys=True) for v in steps.values()}) == 1:
        return {"every row": next(iter(steps.values()))}
    return steps


def write_outputs(out: Path, meta: dict, rows: list[Row], notes: list[str], runs: list[dict]) -> str:
    summary = summarize(rows, runs)
    meta = {**meta, "seed_steps": seed_steps(runs, meta["eval_split"])}
    failures = [r for r in runs if r.get("status") == "failed"]
    md = render_md(meta, rows, summary, notes, failures)
    doc = {**meta, "rows": [{"name": r.name, "flags": list(r.flags), "baseline": r.baseline, "paper": r.paper} for r in rows],
           "notes": notes, "runs": runs, "summary": summary}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{meta['table']}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out / f"{meta['table']}.json")
    (out / f"{meta['table']}.md").write_text(md)
    return md


# ---------------------------------------------------------------------------------------------- cli
def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every table (and bench/seed_step.py) shares: data, backbone, seeds, training settings."""
    p.add_argument("--root", required=True, help="dataset root")
    p.add_argument("--dataset", default="voc")
    p.add_argument("--backbone", required=True, help="deit_s, deit_t, efficientnet_lite0, resnet50, ... (its family sets tau1)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--out", required=True, help="output folder: DIR/runs/<row flags>/seed<S>/, DIR/<table>.json, DIR/<table>.md")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", default="train", help="split whose seeds are scored at the best swept threshold")
    p.add_argument("--val-split", default="val", help="split scored at the eval split's threshold ('' to skip)")
    p.add_argument("--rows", default=None, help="only these rows (comma-separated names; the cam baseline always runs); table8 takes any MAPPING+REG")
    p.add_argument("--paper", action="store_true", help="the paper's settings for the backbone family (default: reduced CPU settings)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--img-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--aug")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None, help="ImageNet weights (default: on with --paper, off otherwise)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="passed to train-cls, gen-seeds and evaluate (their defaults otherwise)")
    p.add_argument("--scales", default=None, help=f"seed scales (default {REDUCED_SCALES}; --paper {PAPER_SCALES})")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="flipped views in gen-seeds")
    p.add_argument("--tau1s", default=None, help=f"table5 temperatures (default {REDUCED_TAU1S}; --paper {PAPER_TAU1S})")
    p.add_argument("--extra", default="", help="more train-cls flags for every row, e.g. \"--warmup-epochs 1\" (the row's own flags come after them)")
    p.add_argument("--gen-seeds-extra", default="", help="more gen-seeds flags for every run, e.g. \"--refine none\"")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=TABLES)
    add_common_args(p)
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = seed_list(args)
    family = family_of(args.backbone)
    st = resolve_settings(args, family)
    only = [n.strip() for n in args.rows.split(",")] if args.rows else None
    try:
        rows, notes = table_rows(args.table, family, st["tau1s"], only)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    val_note = ""
    if not args.val_split:
        val_used, val_note = False, "--val-split ''"
    elif args.val_split == args.eval_split:
        val_used, val_note = False, f"val split '{args.val_split}' is the eval split"
    else:
        val_used, why = split_exists(args.dataset, args.root, args.val_split)
        val_note = "" if val_used else f"val split '{args.val_split}' not found: {why}"
    out = Path(args.out)
    meta = {
        "table": args.table, "title": TITLES[args.table], "dataset": args.dataset, "root": str(args.root),
        "backbone": args.backbone, "family": family, "seeds": seeds, "train_split": args.train_split,
        "eval_split": args.eval_split, "val_split": args.val_split or None, "val_used": val_used, "val_note": val_note,
        "settings": st, "argv": [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])],
    }  # fmt: skip
    if args.dry_run:
        print(f"# {TITLES[args.table]}: {len(rows)} rows x {len(seeds)} seeds, {st['mode']} settings, backbone {args.backbone} ({family})")
        for n in notes:
            print(f"# note: {n}")
        if val_note and args.val_split and args.val_split != args.eval_split:
            print(f"# note: {val_note}; its two steps are shown but would be skipped at run time")
        show_val = bool(args.val_split) and args.val_split != args.eval_split
        for seed in seeds:  # in the order a run takes them
            for row in rows:
                d = run_dir(out, args.table, row, seed)
                done = (d / f"metrics-{args.eval_split}.json").exists() and (not val_used or (d / f"metrics-{args.val_split}.json").exists())
                print(f"\n# {row.name}, seed {seed}" + ("  (done: would be skipped)" if done else ""))
                for step, cmd in commands(args, st, args.table, row, seed, show_val).items():
                    print(shlex.join(cmd))
                    if step == "evaluate-val":
                        print(f"#   <T> = \"threshold\" of {d / f'metrics-{args.eval_split}.json'}")
        return 0
    try:
        import usage_cli  # noqa: F401  (the val-split check and --paper read it in-process)
    except ImportError:
        raise SystemExit(f"{sys.executable} has no usage_cli: run this with the project's venv (.venv/bin/python)") from None
    runs: list[dict] = []
    for seed in seeds:  # seed-major: after the first seed every row has a number and a paired difference
        for row in rows:
            runs.append(run_one(args, st, args.table, row, seed, val_used))
            write_outputs(out, meta, rows, notes, runs)
    md = write_outputs(out, meta, rows, notes, runs)
    print(md)
    print(f"wrote {out / (args.table + '.json')} and {out / (args.table + '.md')}", file=sys.stderr)
    return 1 if any(r.get("status") == "failed" for r in runs) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
