"""Checkpoints: a plain dict (``weights_only=True`` loadable), written atomically."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.errors import ArtifactError

_PREFIXES = ("module.", "_orig_mod.")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with every tensor on the CPU, so that a file written on a GPU loads on a machine
    without one by a plain ``torch.load(weights_only=True)``."""
    with atomic_path(path) as tmp:
        torch.save(to_cpu(state), tmp)
    return Path(path)


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (dicts, lists, tuples, nested) on the CPU; containers that hold
    none elsewhere are returned as they are. A state dict keeps its ``_metadata`` (layer versions)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj
    if isinstance(obj, dict):
        items = {k: to_cpu(v) for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        out = OrderedDict(items) if isinstance(obj, OrderedDict) else items
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        items = [to_cpu(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj, strict=True)) else type(obj)(items)
    return obj


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


def torch_load(path: str | Path, what: str = "usage checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors.

    A file that is not a PyTorch file, or one whose pickle holds more than tensors and plain
    containers, is refused without running its code. PyTorch's own message then advises
    ``weights_only=False``: that advice is never passed on (it would execute the file)."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{p}: {what} not found")
    if p.is_dir():
        raise ArtifactError(f"{p}: is a folder, not a {what} file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        kind = "holds objects other than tensors" if "Weights only load failed" in str(e) else "is not a PyTorch file or is damaged"
        raise ArtifactError(f"{p}: not a loadable {what}: the file {kind} ({type(e).__name__})") from e


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    obj = torch_load(path, "usage checkpoint", map_location)
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: not a usage checkpoint (holds a {type(obj).__name__}, not a dict)")
    return obj


# checkpoint format -> (what it is, the option that takes it)
FORMATS = {
    "usage-cls-checkpoint": ("a usage train-cls checkpoint", "`usage gen-seeds --ckpt`"),
    "usage-seg-checkpoint": ("a usage train-seg checkpoint", "`usage predict-seg --ckpt`"),
    "usage-aff-checkpoint": ("a usage AffinityNet checkpoint", "`usage refine-psa --affinity`"),
    "usage-last": ("a usage resume state (last.pt)", "`--resume` of the stage that wrote it"),
}


def describe_format(obj: Any) -> str | None:
    """'a usage train-cls checkpoint; pass it to `usage gen-seeds --ckpt`' for a usage file, else None."""
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt in FORMATS:
        what, where = FORMATS[fmt]
        return f"{what}; pass it to {where}"
    return None
