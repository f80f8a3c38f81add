"""The training loop's folder: ``last.pt`` (the resume state after each epoch, format ``usage-last``),
``log.jsonl`` (one JSON line an epoch) and, with ``--tensorboard``, the same figures as TensorBoard
events in ``tensorboard/``. ``engine/loop.py`` writes them; a stage's ``--resume`` reads ``last.pt``
back through :func:`read_last`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usage_cli.artifacts.checkpoint import LAST_FORMAT, read_kind, save_checkpoint

FORMAT = LAST_FORMAT
VERSION = "1.0.0"
# the run key's keys on disk; the code calls it the run key (``engine/resume.py:run_key``), since
# ``run_config`` is the config-to-JSON function of artifacts/manifest.py
DISK_KEYS = {"run_key": "run_config", "run_key_hash": "run_config_hash"}
LAST = "last.pt"
LOG = "log.jsonl"
TENSORBOARD = "tensorboard"  # the event files of --tensorboard (TensorBoard's own format)
FILES = (LAST, LOG, TENSORBOARD)  # what a training run owns in its folder besides its artifact


def last_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / LAST


def log_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / LOG


def tensorboard_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / TENSORBOARD


def save_last(path: str | Path, *, epoch: int, epochs: int, run_key: dict[str, Any], run_key_hash: str, **state: Any) -> Path:
    """Write the state after ``epoch`` (of ``epochs``): ``state`` holds ``model``, ``optimizer``,
    ``scheduler`` and ``scaler``; ``run_key`` (what the run was started with, plain JSON) and its hash
    decide whether ``--resume`` may continue it."""
    return save_checkpoint(path, {
        "format": FORMAT, "version": VERSION, "epoch": epoch, "epochs": epochs, DISK_KEYS["run_key_hash"]: run_key_hash,
        DISK_KEYS["run_key"]: run_key, **state,
    })  # fmt: skip


def read_last(path: str | Path) -> dict[str, Any]:
    """The resume state, its run key as ``run_key`` / ``run_key_hash``; a file of another kind or major
    version is a one-line error."""
    state = read_kind(path, FORMAT, VERSION, "usage resume state (last.pt)", "pass --force to start the run over")
    return {**{k: v for k, v in state.items() if k not in DISK_KEYS.values()}, **{k: state.get(disk) for k, disk in DISK_KEYS.items() if disk in state}}
