"""The mask cache: ground-truth masks that ``usage`` renders itself (COCO's from its annotation JSON),
kept in a folder usage owns, never beside the user's data.

Where: ``$USAGE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/usage``, else ``~/.cache/usage``; below it
``coco-masks/<sha256 of the JSON, 16 hex>-<hash of the rule and class values, 8 hex>/`` holds one
label PNG per image (``<id>.png``, as a label-PNG folder names them) and a ``manifest.json`` (stage
``coco-masks``: the rule and class values as its config, the JSON pinned by sha256, the files it
wrote). The folder's name is its content's key, so moving the cache (``mv ~/.cache/usage /big/disk``
and ``export USAGE_CACHE_DIR=/big/disk/usage``) or the dataset keeps it valid, and deleting it only
costs a re-render.

Rendering: one process at a time per folder (an ``fcntl`` lock on ``<folder>.lock``; a second process,
e.g. another rank, waits for it), every PNG written atomically, the manifest last, so a folder with a
manifest is complete. An interrupted render leaves its marker and resumes; a folder of this name that
holds files without the manifest or marker of a render is someone else's and is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.claims import check_writable_folder
from usage_cli.artifacts.labels import label_path, write_label_png
from usage_cli.artifacts.manifest import (
    MANIFEST_NAME,
    build_manifest,
    config_hash,
    sha256_file,
    write_manifest,
)
from usage_cli.errors import ArtifactError
from usage_cli.progress import log, make_progress

CACHE_ENV = "USAGE_CACHE_DIR"
STAGE = "coco-masks"
FORMAT_VERSION = "1.0.0"
MARKER = ".rendering"  # in the folder while a render writes it


def cache_root() -> Path:
    """The folder usage keeps its caches in (module doc)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "usage"


def folder_for(source: Path, key: dict[str, Any]) -> Path:
    """The cache folder of the masks rendered from ``source`` with ``key`` (rule, class values)."""
    return cache_root() / STAGE / f"{sha256_file(source)[:16]}-{config_hash(key)[:8]}"


def mask_path(folder: Path, image_id: str) -> Path:
    return label_path(folder, image_id)


def _finished(folder: Path, key: dict[str, Any], count: int) -> bool:
    try:
        m = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(m, dict) and m.get("stage") == STAGE and str(m.get("format_version", "")).split(".")[0] == FORMAT_VERSION.split(".")[0]
        and m.get("config_hash") == config_hash(key) and m.get("images") == count
    )  # fmt: skip


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One renderer per folder: the others wait (an exclusive ``flock`` on ``<folder>.lock``)."""
    lock = folder.with_name(folder.name + ".lock")
    check_writable_folder(lock.parent, f"the mask cache (${CACHE_ENV}, else ~/.cache/usage)")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ArtifactError(f"{lock.parent}: cannot write the mask cache there ({e.strerror or e}); set {CACHE_ENV} to a folder you can write") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{folder}: another usage process is rendering these masks; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _claim(folder: Path) -> None:
    """The folder is new, or an unfinished render's (its marker), or a finished one being redone; files
    of anyone else are refused."""
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).exists() and not (folder / MANIFEST_NAME).exists():
        raise ArtifactError(f"{folder}: holds files usage did not write (no {MANIFEST_NAME}, no {MARKER}); move them away or set {CACHE_ENV}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # an earlier render of an outdated key: redone
    write_text_atomic(folder / MARKER, "rendering\n")


def ensure(source: Path, key: dict[str, Any], ids: Sequence[str], render: Callable[[str], np.ndarray], quiet: bool = False) -> Path:
    """The cache folder holding the mask of every id of ``ids`` (``render(id)`` makes one), rendered
    now where missing (module doc); its path."""
    folder = folder_for(source, key)
    if _finished(folder, key, len(ids)):
        return folder
    with _locked(folder):
        if _finished(folder, key, len(ids)):  # another process rendered them while this one waited
            return folder
        _claim(folder)
        todo = [i for i in ids if not mask_path(folder, i).is_file()]
        log(f"{source}: rendering {len(todo)} ground-truth masks into {folder} (once; {CACHE_ENV} moves the cache)", quiet)
        with make_progress(quiet) as progress:
            bar = progress.add_task("coco masks", total=len(todo), info="")
            for i in todo:
                write_label_png(mask_path(folder, i), render(i))
                progress.update(bar, advance=1)
        files = sorted(mask_path(folder, i).name for i in ids)
        manifest = build_manifest(STAGE, key, inputs={"annotations": source}, format_version=FORMAT_VERSION,
                                  extra={"images": len(ids)}, files=files)  # fmt: skip
        write_manifest(folder, manifest)
        (folder / MARKER).unlink(missing_ok=True)
    return folder
