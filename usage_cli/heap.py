"""The process heap: hand back to the system what freed tensors left in glibc's heap.

Once glibc has raised its mmap threshold (it does when a large mmapped block is freed), tensors of a
few MB come from the heap, and small long-lived allocations among them (HDF5's, reading or writing a
seed store) keep the freed space from going back to the system: gen-seeds grew by about 9.5 MB an
image and psa-walk by about 0.1-0.3 MB (``bench/bench_scaling.py``, docs/results.md). Stages that
loop over images call :func:`release_freed` every few images; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError, TypeError):  # musl, macOS, Windows: no malloc_trim
        return None


_TRIM = _malloc_trim()


def release_freed() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim(0)``; a few ms)."""
    if _TRIM is not None:
        _TRIM(0)
