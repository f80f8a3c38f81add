"""Checkpoints: a plain dict (``weights_only=True`` loadable), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.errors import ArtifactError

_PREFIXES = ("module.", "_orig_mod.")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def clean_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes."""
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k = k[len(p):]
                    changed = True
        out[k] = v
    return out


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{p}: checkpoint not found")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        raise ArtifactError(f"{p}: not a loadable usage checkpoint ({type(e).__name__}: {e})") from e
