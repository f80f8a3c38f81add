"""One exception hierarchy for user-facing errors.

The CLI turns any :class:`UsageError` into one red line and exit code 2; anything else is a bug
and keeps its traceback. Messages say what is wrong *and* what to do.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable


class UsageError(Exception):
    """An error caused by the user's input or environment, with an actionable message."""


class DatasetError(UsageError):
    """Missing or malformed dataset files (root, split list, image, mask, labels)."""


class ArtifactError(UsageError):
    """A stage artifact that is missing, incomplete, of another version or of the wrong kind."""


class ConfigError(UsageError):
    """An invalid option or combination of options."""


class MissingDependencyError(UsageError):
    """An optional dependency (e.g. pydensecrf2) is not importable."""


def check_options(checks: Iterable[tuple[bool, str]]) -> None:
    """A stage's option checks, as (condition, message) pairs: the first failed one is a ConfigError."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# errno -> what to do (the system's own words say what happened)
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EFBIG: "the file is larger than this file system allows: write elsewhere",
    errno.EROFS: "choose a place on a disk you can write",
    errno.EACCES: "choose a place you can write, or change its permissions",
    errno.EPERM: "choose a place you can write, or change its permissions",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another place",
    errno.EMFILE: "too many open files: lower --workers or raise the limit (ulimit -n)",
    errno.ENFILE: "too many open files: lower --workers or raise the limit (ulimit -n)",
    errno.EIO: "the disk or network mount failed: check it",
    errno.ENOENT: "check the path",
}


def os_error_line(e: OSError, path: object = None, then: str = "rerun") -> str:
    """One line for an error of the environment: the path, what the system says, what to do, ``then``."""
    where = path if path is not None else (e.filename if e.filename else None)
    what = e.strerror or (os.strerror(e.errno) if e.errno else str(e).splitlines()[0] if str(e) else type(e).__name__)
    advice = _OS_ADVICE.get(e.errno)
    return f"{f'{where}: ' if where else ''}{what}{f'; {advice}, then {then}' if advice else ''}"
