"""Which options differ between a recorded run and a new one: what a claim (``--force``) and a
resume (``last.pt``) compare. Options only — input digests are inputs — and a path spelled another
way that names the same place is the same option."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Options only: input digests (``*sha256*``) are inputs, not options."""
    return {k: v for k, v in json.loads(json.dumps(d, default=str)).items() if "sha256" not in k}


def differing(old: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = (), old_paths: dict[str, str] | None = None) -> list[str]:
    """The option names whose values differ. ``old_paths``: where the old run's path options pointed
    (a manifest's ``paths``): a path spelled another way (relative / absolute, through a link) that
    names the same place is the same option."""
    a, b = _plain(old), _plain(new)
    skip, where = set(ignore), old_paths or {}
    return sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k) and not same_place(b.get(k), where.get(k)))


def same_place(value: Any, resolved: str | None) -> bool:
    """``value`` (an option as given) is a path naming ``resolved`` (an absolute path recorded earlier)."""
    return resolved is not None and isinstance(value, (str, Path)) and bool(value) and str(Path(value).resolve()) == resolved


def resolved_paths(options: dict[str, Any]) -> dict[str, str]:
    """The absolute form of every option that names an existing file or folder (for :func:`differing`'s
    ``old_paths`` when no manifest records them: a resume state)."""
    return {k: str(Path(v).resolve()) for k, v in options.items() if isinstance(v, str) and v and Path(v).exists()}
