"""One writer per output folder: an advisory lock held while a stage writes it.

A claim (``artifacts/claims.py:claim_out``) takes ``fcntl.flock`` on ``<out>/.usage.lock``, which holds
the writer's PID, until the stage returns (:func:`holds_out_lock` on its ``run``); a second process is
refused with one line naming the folder and that PID. Under torchrun rank 0 takes it for the job (the
other ranks share the folder).
"""

from __future__ import annotations

import fcntl
import functools
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from usage_cli.errors import ArtifactError
from usage_cli.progress import log

F = TypeVar("F", bound=Callable[..., Any])

LOCK_NAME = ".usage.lock"  # in every claimed --out while a stage writes it; never an artifact
_HELD: dict[str, int] = {}  # resolved folder -> the open, locked lock file of this process


def main_rank() -> bool:
    """Rank 0 of a torchrun job, or a process outside one (read from torchrun's environment, which is
    set before the process group is joined)."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("RANK", "0") == "0"


def lock_out(out: Path, stage: str) -> None:
    """Take the writer's lock of the folder ``out`` for this process (see the module doc); a second
    process gets one line naming the folder and the holder's PID. Re-entrant within a process; held
    until :func:`release_out_locks` (which :func:`holds_out_lock` calls when the stage returns)."""
    key = str(Path(out).resolve())
    if key in _HELD or not main_rank():
        return
    path = Path(key) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ArtifactError(
                f"{out}: another usage process is writing this folder ({holder or 'PID unknown'}); wait for it to "
                f"finish or choose another --out"
            ) from None
        except OSError as e:  # a file system without flock (some network mounts): no lock, said once
            os.close(fd)
            log(f"[yellow]warning: {out}: cannot lock the folder ({e.strerror or e}); make sure no other process writes it[/]")
            return
        try:  # the holder removes the file as it releases it: locked a removed file? take the new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}, usage {stage}\n".encode(), 0)
    _HELD[key] = fd


def release_out_locks(keys: Iterable[str] | None = None) -> None:
    """Release (and remove) the lock files this process holds (``keys``: resolved folders; default all)."""
    for key in list(_HELD if keys is None else keys):
        fd = _HELD.pop(key, None)
        if fd is None:
            continue
        try:
            (Path(key) / LOCK_NAME).unlink(missing_ok=True)  # still locked: a waiting opener retries (inode check)
        finally:
            os.close(fd)


def holds_out_lock(fn: F) -> F:
    """A stage's ``run``: the folders it claims stay locked until it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = set(_HELD)
        try:
            return fn(*args, **kwargs)
        finally:
            release_out_locks([k for k in _HELD if k not in before])

    return wrapper  # type: ignore[return-value]
