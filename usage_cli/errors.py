"""One exception hierarchy for user-facing errors.

The CLI turns any :class:`UsageError` into one red line and exit code 2; anything else is a bug
and keeps its traceback. Messages say what is wrong *and* what to do.
"""

from __future__ import annotations

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
