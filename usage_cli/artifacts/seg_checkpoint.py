"""The segmentation checkpoint (``usage train-seg`` -> ``usage predict-seg --ckpt``): its keys, its
writer, its reader with the format and version check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usage_cli.artifacts.checkpoint import SEG_FORMAT, read_kind, save_checkpoint

FORMAT = SEG_FORMAT
VERSION = "1.0.0"
FILENAME = "checkpoint.pt"  # in train-seg's --out


def save_seg_checkpoint(
    path: str | Path,
    *,
    model: dict[str, Any],
    model_config: dict[str, Any],
    class_names: list[str],
    dataset: dict[str, Any],
    train_config: dict[str, Any],
    weights_source: str,
) -> Path:
    """Write the network's state dict with what rebuilds it (``model_config``) and what made it."""
    return save_checkpoint(path, {
        "format": FORMAT, "version": VERSION, "model": model, "model_config": model_config,
        "class_names": list(class_names), "dataset": dataset, "train_config": train_config, "weights_source": weights_source,
    })  # fmt: skip


def read_seg_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a file of another kind or major version is a one-line error."""
    return read_kind(path, FORMAT, VERSION, "usage segmentation checkpoint", "train one with `usage train-seg`")
