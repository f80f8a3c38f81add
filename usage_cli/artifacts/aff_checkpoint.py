"""The AffinityNet checkpoint (``affinity.pt`` of ``usage refine-psa``, reused by ``--affinity``): its
keys, its writer, its reader with the format and version check, and whether a file may be reused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usage_cli.artifacts.checkpoint import AFF_FORMAT, load_checkpoint, read_kind, save_checkpoint
from usage_cli.artifacts.manifest import config_hash

FORMAT = AFF_FORMAT
VERSION = "1.0.0"


def save_aff_checkpoint(
    path: str | Path,
    *,
    model: dict[str, Any],
    model_config: dict[str, Any],
    class_names: list[str],
    train_config: dict[str, Any],
    weights_source: str,
) -> Path:
    """Write the network's state dict with what rebuilds it and the training settings (and their hash,
    which :func:`trained_with` compares)."""
    return save_checkpoint(path, {
        "format": FORMAT, "version": VERSION, "model": model, "model_config": model_config,
        "class_names": list(class_names), "train_config": train_config, "train_config_hash": config_hash(train_config),
        "weights_source": weights_source,
    })  # fmt: skip


def trained_with(path: str | Path, train_config: dict[str, Any]) -> bool:
    """Whether ``path`` holds an AffinityNet trained with exactly ``train_config`` (then it is reused)."""
    return Path(path).exists() and load_checkpoint(path).get("train_config_hash") == config_hash(train_config)


def read_aff_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a file of another kind or major version is a one-line error."""
    return read_kind(path, FORMAT, VERSION, "usage-aff-checkpoint (AffinityNet)", "train one with `usage refine-psa`")
