"""A folder a stage replaces as a whole (the report's ``--html``): absent, or provably written by usage
earlier; a user's file in it is never deleted. (A file an output replaces whole — evaluate's and the
report's ``--out``, ``--aff-out`` — is checked by ``claims.check_outputs`` through its ``Output.is_own``.)"""

from __future__ import annotations

from pathlib import Path

from usage_cli.artifacts.claims import files_under, read_json, some
from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.errors import ConfigError


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
