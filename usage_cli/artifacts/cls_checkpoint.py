"""The classifier checkpoint (``usage train-cls`` -> ``usage gen-seeds --ckpt``): its keys, its writer,
its reader with the format and version check. ``models.classifier.load_classifier`` builds the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usage_cli.artifacts.checkpoint import CLS_FORMAT, read_kind, save_checkpoint

FORMAT = CLS_FORMAT
VERSION = "1.0.0"
FILENAME = "checkpoint.pt"  # in train-cls's --out


def save_cls_checkpoint(
    path: str | Path,
    *,
    model: dict[str, Any],
    model_config: dict[str, Any],
    class_names: list[str],
    seed_network: str,
    dataset: dict[str, Any],
    train_config: dict[str, Any],
) -> Path:
    """Write the seed network's state dict with what rebuilds it (``model_config``) and what made it."""
    return save_checkpoint(path, {
        "format": FORMAT, "version": VERSION, "model": model, "model_config": model_config,
        "class_names": list(class_names), "seed_network": seed_network, "dataset": dataset, "train_config": train_config,
    })  # fmt: skip


def read_cls_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a file of another kind or major version is a one-line error."""
    return read_kind(path, FORMAT, VERSION, "usage classifier checkpoint", "produce one with `usage train-cls`")
