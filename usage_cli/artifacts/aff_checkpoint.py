"""The AffinityNet checkpoint (``affinity.pt`` of ``usage train-aff`` / ``usage refine-psa``, walked with
by ``usage psa-walk`` and ``refine-psa --affinity``): its keys, its writer, its reader with the format
and version check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usage_cli.artifacts.checkpoint import AFF_FORMAT, is_kind, read_kind, save_checkpoint
from usage_cli.artifacts.manifest import config_hash

FORMAT = AFF_FORMAT
VERSION = "1.0.0"
FILENAME = "affinity.pt"  # in refine-psa's --out, or train-aff's


def save_aff_checkpoint(
    path: str | Path,
    *,
    model: dict[str, Any],
    model_config: dict[str, Any],
    class_names: list[str],
    train_config: dict[str, Any],
    weights_source: str,
) -> Path:
    """Write the network's state dict with what rebuilds it and the training settings (and their hash)."""
    return save_checkpoint(path, {
        "format": FORMAT, "version": VERSION, "model": model, "model_config": model_config,
        "class_names": list(class_names), "train_config": train_config, "train_config_hash": config_hash(train_config),
        "weights_source": weights_source,
    })  # fmt: skip


def read_aff_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a file of another kind or major version is a one-line error."""
    return read_kind(path, FORMAT, VERSION, "usage-aff-checkpoint (AffinityNet)", "train one with `usage train-aff` or `usage refine-psa`")


def is_aff_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an AffinityNet checkpoint usage wrote (``--aff-out`` replaces only such a file)."""
    return is_kind(path, FORMAT)
