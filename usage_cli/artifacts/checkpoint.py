"""Checkpoints: a plain dict (``weights_only=True`` loadable), written atomically."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.artifacts.disk import check_room, is_write_failure, write_failed
from usage_cli.errors import ArtifactError

_PREFIXES = ("module.", "_orig_mod.")


# what to do after a checkpoint could not be written (every checkpoint is a training's, and last.pt is
# written after each epoch, atomically: the one of the epoch before is still there)
AFTER_FAILED_SAVE = "rerun the command with --resume (training continues from its last saved epoch)"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with every tensor on the CPU, so that a file written on a GPU loads on a machine
    without one by a plain ``torch.load(weights_only=True)``. A disk without room for it, or a write the
    file system refuses, is one line naming ``path`` (``artifacts.disk``)."""
    state = to_cpu(state)
    check_room(path, _tensor_bytes(state), AFTER_FAILED_SAVE)
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as e:
        if not is_write_failure(e):
            raise
        raise write_failed(path, e, AFTER_FAILED_SAVE) from e
    return Path(path)


def _tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists, tuples): about the size of its file."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


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


# the checkpoint kinds; each has a module with its save / read / version check
# (cls_checkpoint.py, aff_checkpoint.py, seg_checkpoint.py, last_checkpoint.py: the loop's last.pt)
CLS_FORMAT = "usage-cls-checkpoint"
AFF_FORMAT = "usage-aff-checkpoint"
SEG_FORMAT = "usage-seg-checkpoint"
LAST_FORMAT = "usage-last"  # the training loop's resume state (last.pt)

# checkpoint format -> (what it is, the option that takes it)
FORMATS = {
    CLS_FORMAT: ("a usage train-cls checkpoint", "`usage gen-seeds --ckpt`"),
    SEG_FORMAT: ("a usage train-seg checkpoint", "`usage predict-seg --ckpt`"),
    AFF_FORMAT: ("a usage AffinityNet checkpoint", "`usage psa-walk --affinity` or `usage refine-psa --affinity`"),
    LAST_FORMAT: ("a usage resume state (last.pt)", "`--resume` of the stage that wrote it"),
}


def major(version: Any) -> str:
    """The major part of a ``"1.0.0"`` version ('' when there is none)."""
    return str(version if version is not None else "").split(".")[0]


def read_kind(path: str | Path, fmt: str, version: str, what: str, fix: str) -> dict[str, Any]:
    """The checkpoint dict at ``path`` if it is of format ``fmt`` and of ``version``'s major version.

    One-line errors otherwise: ``what`` names the kind ("usage classifier checkpoint"), ``fix`` says
    how to get one ("train one with `usage train-cls`"); another usage kind is named for what it is."""
    try:
        ckpt = load_checkpoint(path)
    except ArtifactError as e:  # a damaged file (a run killed while saving it): say how to get a good one
        raise ArtifactError(f"{e}; {fix}") from e
    got = ckpt.get("format")
    if got != fmt:
        other = describe_format(ckpt)
        raise ArtifactError(f"{path}: not a {what} (format {got!r}{f': {other}' if other else ''}); {fix}")
    if major(ckpt.get("version")) != major(version):
        raise ArtifactError(
            f"{path}: {what} version {ckpt.get('version')} is not readable by this usage ({major(version)}.x); "
            f"{fix}, or use the usage version that wrote it"
        )
    return ckpt


def is_kind(path: str | Path, fmt: str) -> bool:
    """Whether ``path`` is a usage checkpoint of format ``fmt`` (its tensors are mapped, not read): a file
    an output option may replace."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything torch cannot read as a checkpoint is not one
        return False
    return isinstance(obj, dict) and obj.get("format") == fmt


def describe_format(obj: Any) -> str | None:
    """'a usage train-cls checkpoint; pass it to `usage gen-seeds --ckpt`' for a usage file, else None."""
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt in FORMATS:
        what, where = FORMATS[fmt]
        return f"{what}; pass it to {where}"
    return None


def restore_network(path: str | Path, ckpt: dict[str, Any], build, rerun: str):
    """``build(ckpt["model_config"])`` with the checkpoint's weights; a network its weights do not fit
    (an edited or damaged file) is one line naming the architecture and ``rerun``, the stage to rerun."""
    try:
        net = build(ckpt["model_config"])
        net.load_state_dict(clean_state_dict(ckpt["model"]))
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        backbone = (ckpt.get("model_config") or {}).get("backbone")
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArtifactError(
            f"{path}: checkpoint does not match its architecture {backbone!r} (the backbone and layers its "
            f"model_config describes); the file was changed or damaged, {rerun} ({first})"
        ) from e
    return net
