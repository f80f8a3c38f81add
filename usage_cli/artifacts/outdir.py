"""A stage's output folder, claimed before any work.

Four rules, the same for every stage:

* ``--out`` must be a folder this process can write (checked by writing a probe file), so a stage
  never fails after an hour of work because of its output path;
* one writer per folder: the claim takes an advisory lock (``fcntl.flock`` on ``<out>/.usage.lock``,
  which holds the writer's PID) until the stage returns; a second process is refused with one line
  naming the folder and that PID. Under torchrun rank 0 takes it for the job (the other ranks share
  the folder);
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

import fcntl
import functools
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.errors import ArtifactError, ConfigError
from usage_cli.progress import log

F = TypeVar("F", bound=Callable[..., Any])

LOCK_NAME = ".usage.lock"  # in every claimed --out while a stage writes it; never an artifact
_HELD: dict[str, int] = {}  # resolved folder -> the open, locked lock file of this process

# stage -> the marker file in its PNG folder while a run writes it; it holds that run's key
PNG_MARKERS = {
    "refine-psa": ".refine-psa.partial", "predict-seg": ".predict-seg.partial.json",
    "psa-labels": ".psa-labels.partial.json", "psa-walk": ".psa-walk.partial.json",
}  # fmt: skip

# stage -> files whose presence, with no manifest yet, proves an unfinished run of that stage in the folder
# (a complete seeds.h5 waits for its overlays and manifest; its format is checked when it is read);
# every PNG stage's marker is one (an interrupted psa-labels or psa-walk run resumes)
RUN_STATE = {
    "train-cls": ("last.pt",),
    "train-aff": ("last.pt",),
    "train-seg": ("last.pt",),
    "gen-seeds": ("seeds.h5.partial", "seeds.h5"),
    **{stage: (marker,) for stage, marker in PNG_MARKERS.items()},
}


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


def _main_rank() -> bool:
    """Rank 0 of a torchrun job, or a process outside one (read from torchrun's environment, which is
    set before the process group is joined)."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("RANK", "0") == "0"


def lock_out(out: Path, stage: str) -> None:
    """Take the writer's lock of the folder ``out`` for this process (see the module doc); a second
    process gets one line naming the folder and the holder's PID. Re-entrant within a process; held
    until :func:`release_out_locks` (which :func:`holds_out_lock` calls when the stage returns)."""
    key = str(Path(out).resolve())
    if key in _HELD or not _main_rank():
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


def _files_under(p: Path, out: Path) -> list[str]:
    """``p`` (a file, or every file below a folder) as paths relative to ``out``."""
    if p.is_dir() and not p.is_symlink():
        return sorted(q.relative_to(out).as_posix() for q in p.rglob("*") if not q.is_dir())
    return [p.relative_to(out).as_posix()]


def owned_files(out: Path, patterns: Iterable[str]) -> list[str]:
    """What a stage lists as its own in its manifest (``files``): every file matching ``patterns`` (names
    or globs; folders with everything below them), relative to ``out``, sorted. Called just before the
    manifest is written, while the folder is claimed (so no file of these names is anyone else's)."""
    out = Path(out)
    found = {f for pattern in patterns for p in out.glob(pattern) for f in _files_under(p, out)}
    return sorted(found - {LOCK_NAME, MANIFEST_NAME})


def check_owned(out: Path, stage: str, owned: Iterable[str], old: dict[str, Any] | None) -> None:
    """Every entry of ``owned``'s names in ``out`` must be provably a usage run's (module doc): listed by
    the manifest ``old``; of a manifest written before manifests listed their files; or, with no manifest,
    of the unfinished run that :data:`RUN_STATE` proves. Otherwise one line naming the first, even with
    ``--force``."""
    present = sorted({p for pattern in owned for p in out.glob(pattern) if p.name not in (LOCK_NAME, MANIFEST_NAME)})
    if not present:
        return
    if old is not None and isinstance(old.get("files"), list):
        listed, why = set(old["files"]), f"not listed in its {MANIFEST_NAME}"
    elif old is not None:
        return  # a manifest written before manifests listed their files: its stage's names are its own
    elif any((out / name).exists() for name in RUN_STATE.get(stage, ())):
        return  # an unfinished run of this stage, which the stage resumes or (with --force) starts over
    else:
        listed, why = set(), f"no {MANIFEST_NAME} and no unfinished {stage} run here"
    foreign = [f for p in present for f in _files_under(p, out) if f not in listed]
    if foreign:
        raise ArtifactError(
            f"{out}: holds {_some(foreign)}, which no usage run wrote ({why}); usage never deletes or replaces "
            f"them — move them away or choose another --out"
        )


def _some(names: list[str], n: int = 3) -> str:
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
    main = _main_rank()
    if main:
        lock_out(out, stage)
    old = _old_manifest(out) if main else _read_json(out / MANIFEST_NAME)
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


def _read_json(path: Path) -> dict[str, Any] | None:
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
                for f in _files_under(p, out):
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


def check_replaceable_folder(out: Path, stage: str, option: str) -> None:
    """A folder a stage replaces as a whole (the report's ``--html``): absent, empty, or holding only
    files its own earlier manifest (``stage``) lists; otherwise one line naming a file it would delete."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{option} {out}: is an existing file, not a folder; choose a new or empty folder")
    present = _files_under(out, out)
    if not present:
        return
    old = _read_json(out / MANIFEST_NAME)
    if old is None or old.get("tool") != "usage" or old.get("stage") != stage or not isinstance(old.get("files"), list):
        raise ConfigError(
            f"{option} {out}: not a {stage} folder (no {stage} {MANIFEST_NAME} lists its files): it holds {_some(present)}, "
            f"which usage never deletes; choose a new or empty folder"
        )
    foreign = [f for f in present if f not in set(old["files"]) | {MANIFEST_NAME}]
    if foreign:
        raise ConfigError(
            f"{option} {out}: holds {_some(foreign)}, which the {stage} there did not write and usage never deletes; "
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


def resume_png_folder(out: Path, key: dict[str, Any], *, stage: str, force: bool, main: bool = True) -> set[str]:
    """Ids whose ``<id>.png`` an unfinished run of the same ``key`` already wrote (to be skipped).

    The stage's marker file (:data:`PNG_MARKERS`) holds the key of the run writing the folder. PNGs of an
    unfinished run with another key are not mixed into this run: without ``force`` that is an error, with
    it they are deleted (by the ``main`` process only). PNGs no run of ``stage`` is writing are not
    usage's to delete: always an error (:func:`claim_out` says so first)."""
    m = Path(out) / PNG_MARKERS[stage]
    pngs = sorted(Path(out).glob("*.png"))
    old = None
    if m.exists():
        try:
            old = json.loads(m.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if old == key and not force:
            return {p.stem for p in pngs}
    if pngs and old is None:
        raise ArtifactError(
            f"{out}: holds {len(pngs)} PNG files no {stage} run is writing (first: {pngs[0].name}); usage never deletes "
            f"those — move them away or choose an empty folder"
        )
    if pngs and not force:
        raise ArtifactError(
            f"{out}: an unfinished {stage} run of another config or other inputs is here; rerun it with the same "
            f"options to resume, or pass --force to start over"
        )
    if main:
        for p in pngs:
            p.unlink(missing_ok=True)
    return set()


def start_png_folder(out: Path, key: dict[str, Any], *, stage: str) -> None:
    """Before the PNGs: the folder stops reading as finished (manifest removed) and its marker names the
    run writing it. Called by the main process only, after every process has read the old marker."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    write_text_atomic(out / PNG_MARKERS[stage], json.dumps(key) + "\n")


def finish_png_folder(out: Path, *, stage: str) -> None:
    """After the manifest is written: no run is writing the folder any more."""
    (Path(out) / PNG_MARKERS[stage]).unlink(missing_ok=True)
