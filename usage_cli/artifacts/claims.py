"""Claiming a stage's output folder before any work, and removing only what a usage run wrote.

Four rules, the same for every stage:

* ``--out`` must be a folder this process can write (checked by writing a probe file), so a stage
  never fails after an hour of work because of its output path;
* one writer per folder: the claim takes the folder's lock (``artifacts/lock.py``) until the stage
  returns;
* a folder holding a *finished* artifact (its ``manifest.json``) of another stage, or of the same
  stage with other options, is not overwritten without ``--force``;
* a stage removes or replaces only what it can prove a usage run wrote: the files its manifest lists
  (``files``), or — with no manifest yet — the files of an unfinished run of the same stage, proven by
  that run's own state (its resume marker, ``seeds.h5.partial``, ``last.pt``). Anything else of the
  stage's names (a user's ``mine.png`` in a mask folder, a ``notes.txt`` in ``overlays/``) is refused
  with one line, even with ``--force``; other files are kept. Before a new run writes anything, the old
  artifact is removed — its manifest first, so the folder never reads as finished while it mixes two
  runs.

Options are compared, not inputs: rerunning a stage with the same options on a retrained input (what
``make`` does) replaces the artifact without ``--force``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usage_cli.artifacts.labels import png_marker
from usage_cli.artifacts.last_checkpoint import LAST
from usage_cli.artifacts.lock import LOCK_NAME, lock_out, main_rank
from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.artifacts.option_diff import differing
from usage_cli.artifacts.seeds import FILENAME as SEEDS_FILE
from usage_cli.artifacts.seeds import partial_path
from usage_cli.errors import ArtifactError, ConfigError
from usage_cli.registry import LABEL_FOLDERS, SEEDS, TRAINED, kind_of


def run_state(stage: str) -> tuple[str, ...]:
    """Files whose presence, with no manifest yet, proves an unfinished run of ``stage`` in its folder,
    by the kind of artifact the registry says it writes: a training's ``last.pt``; a seed store's partial
    file or the complete store (which waits for its overlays and manifest; its format is checked when
    it is read); a label-PNG folder's resume marker (an interrupted psa-labels or psa-walk run resumes)."""
    kind = kind_of(stage)
    if kind in TRAINED:
        return (LAST,)
    if kind == SEEDS:
        return (partial_path(SEEDS_FILE).name, SEEDS_FILE)
    return (png_marker(stage),) if kind in LABEL_FOLDERS else ()



def check_writable_folder(out: Path, option: str = "--out") -> Path:
    """Create ``out`` if needed and prove it writable; one-line errors otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: {option} is an existing file, not a folder; choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".usage-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ArtifactError(f"{out}: {option} cannot be written ({e.strerror or e})") from e
    return out


def check_writable_file(path: Path, option: str = "--out") -> Path:
    """``path`` is a file that can be written (its folder is created and probed)."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: {option} is a folder; give a file name such as {path / 'metrics.json'}")
    check_writable_folder(path.parent, option)
    return path


def _old_manifest(out: Path) -> dict[str, Any] | None:
    """The usage manifest in ``out`` (None when there is none); a ``manifest.json`` usage did not write is
    refused — it is never replaced, even with ``--force``."""
    path = out / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        old = None
    if not isinstance(old, dict) or old.get("tool") != "usage" or "stage" not in old:
        raise ArtifactError(f"{path}: not a usage manifest; the folder holds files usage did not write — choose another --out")
    return old


def files_under(p: Path, out: Path) -> list[str]:
    """``p`` (a file, or every file below a folder) as paths relative to ``out``."""
    if p.is_dir() and not p.is_symlink():
        return sorted(q.relative_to(out).as_posix() for q in p.rglob("*") if not q.is_dir())
    return [p.relative_to(out).as_posix()]


def owned_files(out: Path, patterns: Iterable[str]) -> list[str]:
    """What a stage lists as its own in its manifest (``files``): every file matching ``patterns`` (names
    or globs; folders with everything below them), relative to ``out``, sorted. Called just before the
    manifest is written, while the folder is claimed (so no file of these names is anyone else's)."""
    out = Path(out)
    found = {f for pattern in patterns for p in out.glob(pattern) for f in files_under(p, out)}
    return sorted(found - {LOCK_NAME, MANIFEST_NAME})


def check_owned(out: Path, stage: str, owned: Iterable[str], old: dict[str, Any] | None) -> None:
    """Every entry of ``owned``'s names in ``out`` must be provably a usage run's (module doc): listed by
    the manifest ``old``; of a manifest written before manifests listed their files; or, with no manifest,
    of the unfinished run that :func:`run_state` proves. Otherwise one line naming the first, even with
    ``--force``."""
    present = sorted({p for pattern in owned for p in out.glob(pattern) if p.name not in (LOCK_NAME, MANIFEST_NAME)})
    if not present:
        return
    if old is not None and isinstance(old.get("files"), list):
        listed, why = set(old["files"]), f"not listed in its {MANIFEST_NAME}"
    elif old is not None:
        return  # a manifest written before manifests listed their files: its stage's names are its own
    elif any((out / name).exists() for name in run_state(stage)):
        return  # an unfinished run of this stage, which the stage resumes or (with --force) starts over
    else:
        listed, why = set(), f"no {MANIFEST_NAME} and no unfinished {stage} run here"
    foreign = [f for p in present for f in files_under(p, out) if f not in listed]
    if foreign:
        raise ArtifactError(
            f"{out}: holds {some(foreign)}, which no usage run wrote ({why}); usage never deletes or replaces "
            f"them — move them away or choose another --out"
        )


def some(names: list[str], n: int = 3) -> str:
    """``a, b, c and 4 more``."""
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def claim_out(
    out: Path,
    stage: str,
    options: dict[str, Any],
    owned: Iterable[str],
    *,
    force: bool,
    ignore: Iterable[str] = (),
) -> Path:
    """Check ``out`` (see the module doc), lock it, and clear the finished artifact found there.

    ``owned``: names or glob patterns of what the stage writes there (the manifest is always owned);
    ``ignore``: option names that may differ without ``--force`` (e.g. ``epochs`` when extending).
    Under torchrun the checks and the lock are rank 0's; every rank removes only what the manifest lists."""
    owned = tuple(owned)
    out = check_writable_folder(out)
    main = main_rank()
    if main:
        lock_out(out, stage)
    old = _old_manifest(out) if main else read_json(out / MANIFEST_NAME)
    if main:
        check_owned(out, stage, owned, old)
    if old is None:
        return out
    if not force:
        if old.get("stage") != stage:
            raise ArtifactError(
                f"{out}: holds a '{old.get('stage', 'unknown')}' artifact, not {stage} output; choose another --out "
                f"or pass --force to replace it"
            )
        changed = differing(old.get("config", {}), options, ignore, old.get("paths"))
        if changed:
            raise ConfigError(
                f"{out}: holds a finished {stage} run of another config ({', '.join(changed[:6])}"
                f"{', ...' if len(changed) > 6 else ''} differ); choose another --out or pass --force to replace it"
            )
    remove_artifact(out, owned, old.get("files"))
    return out


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def remove_artifact(out: Path, owned: Iterable[str], listed: Iterable[str] | None = None) -> None:
    """Remove the manifest first (the folder stops reading as finished), then what the stage owns: of
    ``owned``'s names only the files the manifest lists (``listed``; every match for a manifest written
    before manifests listed their files)."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    keep = None if listed is None else set(listed)
    for pattern in owned:
        for p in sorted(out.glob(pattern)):
            if p.name == LOCK_NAME:
                continue
            if keep is None and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.is_dir() and not p.is_symlink():
                for f in files_under(p, out):
                    if f in keep:
                        (out / f).unlink(missing_ok=True)
                _remove_empty_dirs(p)
            elif keep is None or p.relative_to(out).as_posix() in keep:
                p.unlink(missing_ok=True)


def _remove_empty_dirs(folder: Path) -> None:
    """``folder`` and the folders below it that are left empty (another rank may remove them too)."""
    for d in sorted((q for q in folder.rglob("*") if q.is_dir()), key=lambda q: len(q.parts), reverse=True) + [folder]:
        try:
            if not any(d.iterdir()):
                d.rmdir()
        except OSError:  # removed meanwhile, or not empty after all
            continue
