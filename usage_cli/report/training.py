"""The report's Training section: the training runs behind the artifacts and their ``log.jsonl`` curves.

A run is found without being named: every training folder (a ``manifest.json`` of a stage the
registry says trains a network — ``train-cls``, ``train-aff``, ``train-seg`` — or a ``log.jsonl``
beside a ``last.pt``: a run that stopped before its manifest) reachable

* from a RUN_DIR: its folders and their sub-folders (``cls/``, ``cls-cam/``, ``seg/``,
  ``masks-train/affinity-train/``);
* from an artifact on the page, through the inputs its manifest records, and theirs (a seed store's
  ``ckpt`` -> the classifier's folder; pseudo masks' ``affinity`` -> the folder holding the
  AffinityNet's training; predictions' ``ckpt`` -> the segmentation network's).

Each log is read one line an epoch; a resumed run's log holds every epoch once (the loop cuts what
came after the resumed epoch), and where a file holds an epoch twice the last line wins, so a curve is
one line over the epochs. Lines that are not JSON are skipped and counted.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from usage_cli.artifacts.last_checkpoint import last_path, log_path
from usage_cli.artifacts.manifest import read_manifest
from usage_cli.errors import UsageError
from usage_cli.registry import TRAINED, kind_of, writing
from usage_cli.report.inputs import Entry, locate

# the stages whose folders hold a training log (the registry's), in page order, and what they train
WHAT = {"classifier": "classifier", "affinity": "AffinityNet", "segnet": "segmentation network"}
TRAINING_STAGES = {name: WHAT[kind_of(name)] for name in writing(*TRAINED)}
# a run without a manifest (stopped early): what it trains told by a key only its task logs
KIND_BY_KEY = (("loss_cls", "classifier"), ("fg_loss", "affinity"), ("pixel_acc", "segnet"))
# the curves drawn, in this order (a stage draws those its logs have; other numeric keys follow)
KEY_ORDER = (
    "loss", "loss_cls", "loss_reg", "bg_loss", "fg_loss", "neg_loss", "lr", "val_mAP", "val_F1", "pixel_acc",
    "aa_agree", "aa_kl", "learning_status", "student_drop_path", "cm_ess", "empty_share", "present_max",
)  # fmt: skip
KEY_HELP = {
    "loss": "the loss trained on", "loss_cls": "classification loss", "loss_reg": "regulariser (before lambda)",
    "bg_loss": "background pairs", "fg_loss": "foreground pairs", "neg_loss": "pairs across classes",
    "lr": "learning rate", "val_mAP": "val mAP %", "val_F1": "val F1 %", "pixel_acc": "pixel accuracy on the masks",
    "aa_agree": "AA: teacher and student agree", "aa_kl": "AA: KL(teacher || student)",
    "learning_status": "AA: learning status", "student_drop_path": "AA: student drop-path",
    "cm_ess": "CM weights ESS/N (1: = CAM)", "empty_share": "share of empty present-class maps",
    "present_max": "peak activation, present classes",
}  # fmt: skip
# logged, not drawn: the speed, the map's range, and what follows from a drawn key (the student's dropout
# and the learning fraction move with its drop-path and the learning status); the last-epoch table has them
NOT_DRAWN = {"epoch", "images_per_s", "map_min", "map_max", "student_dropout", "learning_fraction"}
MAX_DEPTH = 4  # input hops followed from an artifact


@dataclass(frozen=True)
class TrainingRun:
    """One training folder and its log, one entry an epoch (sorted, each epoch once)."""

    folder: Path
    stage: str  # a key of TRAINING_STAGES
    config: dict  # the manifest's config ({} without one)
    epochs: tuple[dict, ...]
    planned: int | None  # --epochs of the run, where its manifest says
    finished: bool  # a manifest was written (the run's artifact is complete)
    skipped_lines: int = 0
    name: str = ""  # set by :func:`find_training_runs`: unique on the page

    @property
    def label(self) -> str:
        """``cls (cm + aa)``, ``cls-cam (cam)``: what tells a USAGE classifier from the CAM baseline."""
        c = self.config
        if self.stage == "train-cls" and c.get("mapping"):
            reg = c.get("reg")
            if c["mapping"] == "cam" and reg in (None, "none"):
                return f"{self.name} (cam: the CAM baseline)"
            return f"{self.name} ({c['mapping']}{'' if reg in (None, 'none') else f' + {reg}'})"
        return self.name

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(1-based epochs, values) where this run logged ``key`` as a finite number."""
        pts = [(int(e["epoch"]) + 1, float(e[key])) for e in self.epochs if _number(e.get(key))]
        return [x for x, _ in pts], [y for _, y in pts]


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def read_log(path: Path) -> tuple[tuple[dict, ...], int]:
    """The epochs of a ``log.jsonl`` (sorted, the last line of an epoch wins) and the lines skipped."""
    by_epoch, skipped = {}, 0
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return (), 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            by_epoch[int(doc["epoch"])] = doc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            skipped += 1
    return tuple(by_epoch[k] for k in sorted(by_epoch)), skipped


def _manifest(folder: Path) -> dict:
    try:
        return read_manifest(folder)
    except UsageError:
        return {}


def load_run(folder: Path) -> TrainingRun | None:
    """The training run in ``folder``, or None when it is not one."""
    manifest = _manifest(folder)
    stage = manifest.get("stage")
    has_log = log_path(folder).is_file()
    if stage not in TRAINING_STAGES and not (has_log and last_path(folder).is_file()):
        return None
    epochs, skipped = read_log(log_path(folder)) if has_log else ((), 0)
    if stage not in TRAINING_STAGES:
        keys = {k for e in epochs for k in e}
        kind = next((kind for k, kind in KIND_BY_KEY if k in keys), None)
        if kind is None:
            return None
        stage = writing(kind)[0]
    cfg = manifest.get("config", {}) if isinstance(manifest.get("config"), dict) else {}
    planned = cfg.get("epochs") if isinstance(cfg.get("epochs"), int) else None
    return TrainingRun(folder=folder, stage=stage, config=cfg, epochs=epochs, planned=planned,
                       finished=manifest.get("stage") in TRAINING_STAGES, skipped_lines=skipped)  # fmt: skip


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def candidate_folders(entries: list[Entry], run_dirs: list[Path]) -> list[Path]:
    """Folders that may hold a training run: the RUN_DIRs' folders, and those reachable from the
    artifacts through their manifests' inputs (each with its direct sub-folders)."""
    out: dict[Path, None] = {}

    def add(folder: Path) -> None:
        for f in (folder, *_subfolders(folder)):
            out.setdefault(f.resolve(), None)

    for rd in run_dirs:
        for sub in _subfolders(rd):
            add(sub)
    seen: set[Path] = set()
    todo = [(e.artifact, [*((e.metrics_path.parent.parent,) if e.metrics_path else ()), *run_dirs], 0) for e in entries]
    while todo:
        path, bases, depth = todo.pop()
        if path is None:
            continue
        folder = (path if path.is_dir() else path.parent).resolve()
        if folder in seen:
            continue
        seen.add(folder)
        add(folder)
        if depth >= MAX_DEPTH:
            continue
        for info in _manifest(folder).get("inputs", {}).values():
            if isinstance(info, dict):
                todo.append((locate(info.get("path"), bases) or locate(info.get("resolved"), bases), bases, depth + 1))
    return list(out)


def find_training_runs(entries: list[Entry], run_dirs: list[Path]) -> list[TrainingRun]:
    """Every training run behind the page, in stage order (classifiers, AffinityNets, segmentation
    networks), named by their folders relative to what they share (``cls``, ``cls-cam``,
    ``masks-train/affinity-train``; ``runA/cls`` beside ``runB/cls``)."""
    runs = [r for f in candidate_folders(entries, run_dirs) if (r := load_run(f)) is not None]
    if not runs:
        return []
    folders = [r.folder for r in runs]
    base = Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0].parent
    if base in folders:  # one run inside another's folder: name from the level above
        base = base.parent
    named = [replace(r, name=r.folder.relative_to(base).as_posix()) for r in runs]
    order = list(TRAINING_STAGES)
    return sorted(named, key=lambda r: (order.index(r.stage), _is_baseline(r), r.name))


def _is_baseline(run: TrainingRun) -> bool:
    """The CAM baseline after the USAGE classifier of the same run."""
    return run.config.get("mapping") == "cam"


def keys_to_draw(runs: list[TrainingRun], leave_out: set[str] = NOT_DRAWN) -> list[str]:
    """The numeric keys these runs logged, in :data:`KEY_ORDER` then by name, leaving out ``leave_out``
    and those that stay at one value in every run (a fixed teacher drop-path says nothing over the epochs)."""
    present: dict[str, set] = {}
    for r in runs:
        for e in r.epochs:
            for k, v in e.items():
                if k not in leave_out and _number(v):
                    present.setdefault(k, set()).add(round(float(v), 9))
    keys = [k for k in present if len(present[k]) > 1 or k in ("loss", "lr")]
    rank = {k: i for i, k in enumerate(KEY_ORDER)}
    return sorted(keys, key=lambda k: (rank.get(k, len(rank)), k))


def describe(run: TrainingRun) -> str:
    """One line: epochs logged (of planned), finished or not, skipped lines."""
    done = len(run.epochs)
    text = f"{run.label}: {done} epoch{'s' if done != 1 else ''} logged" + (f" of {run.planned}" if run.planned else "")
    if not run.epochs:
        text = f"{run.label}: no {log_path(run.folder).name}"
    if not run.finished:
        text += " (no manifest: the run stopped before its end)"
    if run.skipped_lines:
        text += f"; {run.skipped_lines} unreadable line(s) skipped"
    return text


def last_values(runs: list[TrainingRun], keys: list[str]) -> tuple[tuple[str, ...], ...]:
    """A table: header (key, one column per run), then each key's value at the run's last epoch."""
    head = ("key", *(r.label for r in runs))
    body = []
    for k in keys:
        cells = []
        for r in runs:
            _, ys = r.series(k)
            cells.append(f"{ys[-1]:.4g}" if ys else "-")
        body.append((k, *cells))
    return (head, *body)
