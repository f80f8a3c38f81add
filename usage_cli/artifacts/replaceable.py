"""Folders and files a stage replaces as a whole (the report's ``--html`` folder, evaluate's and the
report's JSON ``--out``): absent, or provably written by usage earlier; a user's file of that name is
never deleted or overwritten."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usage_cli.artifacts.claims import check_writable_file, files_under, read_json, some
from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.errors import ArtifactError, ConfigError


def check_replaceable_folder(out: Path, stage: str, option: str) -> None:
    """A folder a stage replaces as a whole (the report's ``--html``): absent, empty, or holding only
    files its own earlier manifest (``stage``) lists; otherwise one line naming a file it would delete."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{option} {out}: is an existing file, not a folder; choose a new or empty folder")
    present = files_under(out, out)
    if not present:
        return
    old = read_json(out / MANIFEST_NAME)
    if old is None or old.get("tool") != "usage" or old.get("stage") != stage or not isinstance(old.get("files"), list):
        raise ConfigError(
            f"{option} {out}: not a {stage} folder (no {stage} {MANIFEST_NAME} lists its files): it holds {some(present)}, "
            f"which usage never deletes; choose a new or empty folder"
        )
    foreign = [f for f in present if f not in set(old["files"]) | {MANIFEST_NAME}]
    if foreign:
        raise ConfigError(
            f"{option} {out}: holds {some(foreign)}, which the {stage} there did not write and usage never deletes; "
            f"move them away or choose a new or empty folder"
        )


def check_replaceable_file(path: Path, is_own: Callable[[Any], bool], what: str, option: str = "--out") -> Path:
    """``path`` can be written (:func:`check_writable_file`) and, if it exists, is a file of ``what`` that
    ``is_own`` recognises in its JSON — a user's file of that name is never overwritten."""
    path = check_writable_file(path, option)
    if path.exists():
        try:
            own = is_own(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            own = False
        if not own:
            raise ArtifactError(f"{path}: exists and is not {what}; usage does not overwrite it — choose another {option}")
    return path
