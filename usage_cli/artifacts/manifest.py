"""``manifest.json`` beside every stage output: what made it, from what, with which settings."""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usage_cli import __version__
from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.blocks import flat_blocks, flat_values
from usage_cli.errors import ArtifactError
from usage_cli.registry import producer

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = "1.0.0"


_DIGESTS: dict[tuple, str] = {}  # a file's version (_version) -> its sha256, for this process


def _version(p: Path) -> tuple:
    """What identifies one version of a file: its resolved path, device, inode, size and modification
    time (gen-seeds and the checkpoints publish by renaming, so a new version is a new inode)."""
    st = p.stat()
    return (str(p.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read once per process per version of it: the stages of a chain, each
    pinning the same seed store, hash it once — or never, where a manifest recorded its hash for this
    size and modification time (:func:`trust_recorded`)."""
    p = Path(path)
    key = _version(p)
    if key not in _DIGESTS:
        _DIGESTS[key] = _read_digest(p, chunk)
    return _DIGESTS[key]


def _read_digest(p: Path, chunk: int) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _pinned_file(path: str | Path) -> Path:
    """The file an input's digest is of: the file, or a folder's manifest (which pins its contents)."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def trust_recorded(path: str | Path, record: dict[str, Any]) -> None:
    """An input as a manifest recorded it (``sha256``, ``size``, ``mtime_ns``): while the file keeps that
    size and modification time (what make and rsync trust), its hash is taken as recorded, not read."""
    p = _pinned_file(path)
    try:
        st = p.stat()
    except OSError:
        return
    if record.get("sha256") and (record.get("size"), record.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
        _DIGESTS.setdefault(_version(p), record["sha256"])


def _input_record(path: str | Path, required: bool) -> dict[str, Any]:
    """A manifest's record of one input: as given, resolved, its digest, and the size and modification
    time the digest is of (so a later run may trust it, :func:`trust_recorded`)."""
    digest, pinned = input_digest(path, required), _pinned_file(path)
    record = {"path": str(path), "resolved": str(Path(path).resolve()), "sha256": digest}
    if digest is not None:
        st = pinned.stat()
        record.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    return record


def run_config(cfg: Any, drop: Iterable[str] = (), keep: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON form of a stage's config dataclass, as its manifest's ``config`` (and resume keys) hold
    it: fields in declaration order, without ``drop`` (run-time settings such as ``device``, ``workers``,
    ``quiet``) and, with ``keep``, only those; paths as strings (as given, not resolved), tuples as lists.
    A nested dataclass (a block: ``cfg.runtime``, ``cfg.data``) is flattened: its fields take its place,
    only those the config's class lists for it in ``FLAT_BLOCKS`` (``usage_cli/blocks.py``) when it does."""
    skip, only = set(drop), None if keep is None else set(keep)
    d = _fields(cfg)
    return {
        k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
        for k, v in d.items()
        if k not in skip and (only is None or k in only)
    }


def _fields(cfg: Any) -> dict[str, Any]:
    """The fields of a config dataclass in declaration order, nested dataclasses flattened in place."""
    out: dict[str, Any] = {}
    blocks = flat_blocks(cfg)
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update({k: x for k, x in _fields(v).items() if f.name not in blocks or k in blocks[f.name]})
        else:
            out[f.name] = copy.deepcopy(v)
    return out


def config_hash(config: dict[str, Any]) -> str:
    """A stable sha256 of a JSON-serialisable config (keys sorted)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def input_digest(path: str | Path, required: bool = True) -> str | None:
    """sha256 of a file input; for a directory input, of its manifest (which pins its contents).

    A folder without a manifest is an error, or with ``required=False`` has no digest (None)."""
    p = Path(path)
    if p.is_dir():
        m = p / MANIFEST_NAME
        if not m.exists():
            if not required:
                return None
            raise ArtifactError(f"{p}: folder has no {MANIFEST_NAME}; it was not written by a usage stage")
        return sha256_file(m)
    return sha256_file(p)


def file_version(path: str | Path) -> tuple | None:
    """What identifies the version of an input now (path, device, inode, size, modification time; of a
    folder, its manifest's), or None when it is not there: compared by :func:`check_unchanged`."""
    p = _pinned_file(path)
    return _version(p) if p.exists() else None


def check_unchanged(sources: dict[str, tuple[str | Path, tuple | None]], stage: str) -> None:
    """Before a run publishes what it made: each input (name -> (path, its :func:`file_version` when the
    run first read it)) is still that version — not replaced (a new inode), rewritten (another size or
    modification time) nor gone. A chain reads an input more than once (refine-psa's seeds: the confident
    labels, then the walk); one replaced meanwhile would give an artifact made from two."""
    for name, (path, version) in sources.items():
        if version is not None and file_version(path) != version:
            raise ArtifactError(
                f"{path}: {name} changed while {stage} ran (it is not the file it started from); nothing was published — "
                f"rerun {stage} with --force once no other run writes it"
            )


def build_manifest(
    stage: str,
    config: dict[str, Any],
    inputs: dict[str, str | Path] | None = None,
    format_version: str = "1.0.0",
    extra: dict[str, Any] | None = None,
    paths: dict[str, str] | None = None,
    unpinned_ok: bool = False,
    data: dict[str, Any] | None = None,
    files: list[str] | None = None,
) -> dict[str, Any]:
    """The manifest of a stage output. ``config`` keeps paths as given (its hash decides resuming, so a
    moved folder still resumes); each input also gets its ``resolved`` absolute path, and ``paths``
    (see :func:`config_paths`) records where the config's relative paths pointed. ``unpinned_ok``: a
    folder input without a manifest (PNGs made by hand) is recorded with ``sha256`` null, not refused.
    ``data``: the identity of the split the artifact was made from (``data.identity``: root, split,
    class names, fingerprint), which its consumers compare with theirs; ``files``: what the stage wrote
    into its folder (``claims.owned_files``) — the only files a later run there removes or replaces."""
    inputs = inputs or {}
    extra = {**(extra or {}), **({"data": data} if data is not None else {}), **({"files": files} if files is not None else {})}
    return {
        "manifest_version": MANIFEST_VERSION,
        "stage": stage,
        "format_version": format_version,
        "tool": "usage",
        "tool_version": __version__,
        "config": config,
        "config_hash": config_hash(config),
        "inputs": {name: _input_record(path, not unpinned_ok) for name, path in inputs.items()},
        "paths": paths or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def config_paths(cfg) -> dict[str, str]:
    """The absolute path of every path-valued option of a stage's config dataclass (root, out, inputs;
    a block's, such as the dataset's ``root``, flat beside the others)."""
    hints = typing.get_type_hints(type(cfg))
    for field in flat_blocks(cfg):
        hints.update(typing.get_type_hints(type(getattr(cfg, field))))
    return {
        k: str(Path(v).resolve())
        for k, v in flat_values(cfg).items()
        if isinstance(v, (str, Path)) and Path in (typing.get_args(hints[k]) or (hints[k],))
    }


def write_manifest(out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return path


def up_to_date(folder: str | Path, stage: str, config: dict[str, Any], inputs: dict[str, str | Path], artifact: str | Path | None = None) -> bool:
    """Whether ``folder`` holds a finished ``stage`` run of this ``config`` on these ``inputs`` (each
    still the file or folder its manifest pinned) and, with ``artifact``, whether that file is still
    the one the run published (the manifest's ``artifact`` and ``artifact_sha256``). A chain of stages
    (refine-psa) skips such a step instead of redoing it."""
    try:
        old = json.loads((Path(folder) / MANIFEST_NAME).read_text())
        pinned = {k: v["sha256"] for k, v in old["inputs"].items()}
        same = old["stage"] == stage and old["config_hash"] == config_hash(config) and set(pinned) == set(inputs)
        for k, p in inputs.items():
            if same:
                trust_recorded(p, old["inputs"][k])
        same = same and all(Path(p).exists() and input_digest(p, required=False) == pinned[k] for k, p in inputs.items())
        if artifact is not None:
            same = same and old.get("artifact") == str(artifact) and Path(artifact).is_file() and sha256_file(artifact) == old.get("artifact_sha256")
        return same
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none, unreadable, or of another layout
        return False


def read_manifest(path: str | Path, expect_stage: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read the manifest of an artifact (a folder, or the folder holding a file).

    With ``expect_stage``, a missing manifest or one of another stage is an error naming the
    command to run first.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    mpath = folder / MANIFEST_NAME
    stages = (expect_stage,) if isinstance(expect_stage, str) else expect_stage
    hint = f"; run `{producer(stages[0])}` first" if stages else ""
    if not mpath.exists():
        raise ArtifactError(f"{mpath}: not found{hint}")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest ({e}){hint}") from e
    if stages and manifest.get("stage") not in stages:
        raise ArtifactError(
            f"{mpath}: is a '{manifest.get('stage')}' output, expected {' or '.join(stages)}{hint}"
        )
    return manifest
