"""Room on the disk for what a stage writes, and one line when a write fails.

A full disk shows up late and in the words of the library that writes: torch's zip writer says
``unexpected pos 114432 vs 114320``, HDF5 prints its C call stack (and may crash the process when it
meets the error again while closing). The writers of large files (checkpoints, the seed store) ask
:func:`check_room` before each write, so that the usual case is one line naming the file before
anything is half-written, and turn a failed write into one line through :func:`write_failed`.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from usage_cli.errors import ArtifactError, os_error_line

MARGIN = 16 << 20  # bytes kept free beyond a write's estimate (file-system metadata, the manifest, a log line)

# what torch's stream writer raises (RuntimeError) when the file system refuses a write
_TORCH_WRITE_FAILED = ("inline_container", "iostream error", "file write failed", "unexpected pos", "PytorchStreamWriter")


def free_bytes(path: str | Path) -> int:
    """Bytes free on the file system that holds ``path`` (or the nearest folder above it that exists)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB"


def check_room(path: str | Path, need: int, then: str = "rerun") -> None:
    """One line naming ``path`` when its file system has less than ``need`` bytes (plus a margin) free."""
    free = free_bytes(path)
    if free < need + MARGIN:
        raise ArtifactError(
            f"{path}: no space left to write it ({_mb(free)} free on its disk, about {_mb(need + MARGIN)} needed); "
            f"free some space or write elsewhere, then {then}"
        )


def is_write_failure(e: BaseException) -> bool:
    """Whether ``e`` is a write the file system refused (an OSError, or torch's RuntimeError saying so)."""
    return isinstance(e, OSError) or (isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_FAILED))


def write_failed(path: str | Path, e: BaseException, then: str = "rerun") -> ArtifactError:
    """The one-line error of a failed write of ``path``: the system's reason where it gives one (a full
    disk also when the library does not say so), and what to do."""
    code = getattr(e, "errno", None)
    if code is None:  # HDF5 and torch: the errno inside their message, or a disk that is full now
        text = str(e)
        code = next((c for c in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)
                     if f"errno = {c}," in text), None)  # fmt: skip
        if code is None and free_bytes(path) < MARGIN:
            code = errno.ENOSPC
    if code is None:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return ArtifactError(f"{path}: the write failed ({first}); check the disk, then {then}")
    return ArtifactError(os_error_line(OSError(code, None), path, then))
