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

Every path a command writes — ``--out`` folders, ``--aff-out``, evaluate's and the report's files, the
report's page — is declared in its config's ``OUTPUTS`` (:class:`Output`) and checked by
:func:`check_outputs` before any work (:func:`owns_outputs` on the stage's ``run``): it is never one of
the run's own inputs (nor a folder whose files the run would replace while it reads one), never inside
the data set's root, where the loaders look their files up (``--out-in-root`` says a user means it), and
an existing file there is replaced only when usage wrote it. A refused start leaves no folder it made.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usage_cli.artifacts.labels import png_marker
from usage_cli.artifacts.last_checkpoint import LAST
from usage_cli.artifacts.lock import LOCK_NAME, F, holds_out_lock, lock_out, main_rank
from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.artifacts.option_diff import differing
from usage_cli.artifacts.seeds import FILENAME as SEEDS_FILE
from usage_cli.artifacts.seeds import partial_path
from usage_cli.errors import ArtifactError, ConfigError, os_error_line
from usage_cli.registry import LABEL_FOLDERS, SEEDS, STAGES, TRAINED, kind_of

SYNTH_MARKER = ".synth.partial"  # in a folder while usage synth writes its data set


def run_state(stage: str) -> tuple[str, ...]:
    """Files whose presence, with no manifest yet, proves an unfinished run of ``stage`` in its folder,
    by the kind of artifact the registry says it writes: a training's ``last.pt``; a seed store's partial
    file or the complete store (which waits for its overlays and manifest; its format is checked when
    it is read); a label-PNG folder's resume marker (an interrupted psa-labels or psa-walk run resumes);
    a data set's marker (usage synth)."""
    kind = kind_of(stage)
    if kind in TRAINED:
        return (LAST,)
    if kind == SEEDS:
        return (partial_path(SEEDS_FILE).name, SEEDS_FILE)
    if kind == "dataset":
        return (SYNTH_MARKER,)
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
    except OSError as e:  # read-only, no permission, a file where a folder should be: what to do
        raise ArtifactError(f"{option} cannot be written: {os_error_line(e, out, then='rerun')}") from e
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
        marker = next((n for s in STAGES if s.name != stage for n in run_state(s.name) if (out / n).exists()), None)
        if marker is not None:  # usage's, but another stage's unfinished run (a killed refine-psa's masks)
            other = " or ".join(s.name for s in STAGES if marker in run_state(s.name))
            raise ArtifactError(
                f"{out}: holds an unfinished {other} run ({marker}); rerun that command to finish it (or with --force "
                f"to start it over), or choose another --out"
            )
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
        _keeps_inputs(out, stage, owned, old)
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


# ---------------------------------------------------------------- every path a command writes (module doc)
@dataclass(frozen=True)
class Output:
    """An option of a stage config that names what the stage writes (the config's ``OUTPUTS``)."""

    option: str  # its flag, as the one-line errors name it
    kind: str = "folder"  # folder: a stage's --out (claim_out); file: one file, replaced whole; page: a folder replaced whole
    what: str = ""  # file: what usage's own file of that name is ("a usage metrics file")
    is_own: Callable[[Path], bool] | None = None  # file: whether an existing file is one usage wrote of that kind
    example: str = ""  # file: a file name, for the hint when a folder is given
    check: Callable[[Path], None] | None = None  # page: the kind's own check (the report's page folder)


def json_is(kind: Callable[[Any], bool]) -> Callable[[Path], bool]:
    """An ``Output.is_own`` for a JSON file: its content passes ``kind`` (evaluate's metrics, the report's rows)."""

    def is_own(path: Path) -> bool:
        try:
            return bool(kind(json.loads(Path(path).read_text())))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False

    return is_own


_RUNNING: list[dict[str, Path]] = []  # the inputs of the stages running in this process, innermost last


def _path_hint(hint: Any) -> bool:
    """A field type that holds a path (``Path``, ``Path | None``, ``tuple[Path, ...]``)."""
    args = typing.get_args(hint)
    return hint is Path or Path in args or any(_path_hint(a) for a in args if a is not Path)


def input_paths(cfg: Any) -> dict[str, Path]:
    """Field name -> path of every path-valued field of a stage config (nested dataclasses too) that its
    ``OUTPUTS`` do not name: what the run reads (``root`` and ``seeds`` alike)."""
    outputs, found = getattr(type(cfg), "OUTPUTS", {}), {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in outputs or v is None:
            continue
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            found.update(input_paths(v))
        elif _path_hint(hints[f.name]):
            for i, p in enumerate(v if isinstance(v, tuple | list) else (v,)):
                found[f.name if i == 0 else f"{f.name}[{i}]"] = Path(p)
    return found


def data_root(cfg: Any) -> Path | None:
    """The data set's root of a stage config (``root``, or ``data.root`` where a DataSpec is nested)."""
    root = getattr(cfg, "root", None) or getattr(getattr(cfg, "data", None), "root", None)
    return None if root is None else Path(root)


def _flag(field: str) -> str:
    base = field.split("[")[0]
    return {"classes_file": "--classes", "metrics": "METRICS"}.get(base, "--" + base.replace("_", "-"))


def _inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or below it (links and relative spellings resolved)."""
    p, f = path.resolve(), folder.resolve()
    return p == f or f in p.parents


def check_outputs(cfg: Any) -> None:
    """The rules of the module doc for every output ``cfg``'s ``OUTPUTS`` names, before any work."""
    inputs, root = input_paths(cfg), data_root(cfg)
    in_root_ok = getattr(getattr(cfg, "runtime", None), "out_in_root", False)
    given = [(Path(v), spec) for name, spec in getattr(type(cfg), "OUTPUTS", {}).items() if (v := getattr(cfg, name, None))]
    for path, spec in given:
        # a page is replaced whole (an input inside it too); the files of a folder: claim_out (_keeps_inputs)
        same = next((k for k, p in inputs.items() if p.exists() and (_inside(p, path) if spec.kind == "page" else p.resolve() == path.resolve())), None)
        if same is not None:
            raise ArtifactError(
                f"{path}: {spec.option} names the run's own input {_flag(same)} ({inputs[same]}); an output never replaces what "
                f"its run reads — choose another {spec.option}"
            )
        if root is not None and not in_root_ok and root.exists() and _inside(path, root):
            raise ArtifactError(
                f"{path}: {spec.option} is inside the data set's root {root}, where its files are looked up; write outside it "
                f"(or pass --out-in-root if you mean it)"
            )
        if spec.kind == "folder":
            check_writable_folder(path, spec.option)
        elif spec.kind == "file":
            _check_file_output(path, spec)
        elif spec.check is not None:
            spec.check(path)


def _check_file_output(path: Path, spec: Output) -> None:
    """A file output: not a folder, writable, and an existing file there is one usage wrote (``is_own``)."""
    if path.is_dir():
        hint = f" such as {path / spec.example}" if spec.example else ""
        raise ArtifactError(f"{path}: {spec.option} is a folder; give a file name{hint}")
    check_writable_file(path, spec.option)
    if path.exists() and not (spec.is_own is not None and spec.is_own(path)):
        raise ArtifactError(f"{path}: {spec.option} exists and is not {spec.what}; usage never overwrites it — choose another {spec.option}")


def _keeps_inputs(out: Path, stage: str, owned: Iterable[str], old: dict[str, Any] | None) -> None:
    """An output folder never replaces the inputs of the run claiming it: one that is the folder, that a
    finished artifact of another stage there holds, or that the stage's own names would replace is refused."""
    inputs = _RUNNING[-1] if _RUNNING else {}
    mine = [p.resolve() for pattern in owned for p in out.glob(pattern)]
    for name, path in inputs.items():
        if not path.exists() or not _inside(path, out):
            continue
        p = path.resolve()
        if p == out.resolve() or (old is not None and old.get("stage") != stage) or any(p == m or m in p.parents for m in mine):
            raise ArtifactError(
                f"{out}: --out holds the run's own input {_flag(name)} ({path}); an output never replaces what its run "
                f"reads — choose another --out"
            )


def _made_from(path: Path) -> Path | None:
    """The top folder that writing into ``path`` would create (None when ``path`` exists)."""
    top = None
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        top, p = p, p.parent
    return top


def _remove_made(path: Path, top: Path) -> None:
    """The folders from ``path`` up to ``top`` that a refused start made and left empty."""
    p = Path(path).absolute()
    if p.is_dir():
        _remove_empty_dirs(p)  # and the empty folders made below it (a chain's step folders)
    while True:
        try:
            p.rmdir()  # only when empty
        except OSError:
            return
        if p == top or p == p.parent:
            return
        p = p.parent


def owns_outputs(fn: F) -> F:
    """A stage's ``run(cfg)``: its outputs checked before any work (:func:`check_outputs`), the folders it
    claims locked until it returns (``lock.holds_out_lock``), and a folder it made removed again when
    the run fails before writing into it."""
    locked = holds_out_lock(fn)

    @functools.wraps(fn)
    def wrapper(cfg, *args, **kwargs):
        outputs = getattr(type(cfg), "OUTPUTS", {})
        folders = [p if outputs[n].kind == "folder" else p.parent for n in outputs if (p := Path(getattr(cfg, n) or "")) != Path("")]
        made = [(f.absolute(), top) for f in folders if (top := _made_from(f)) is not None]
        _RUNNING.append(input_paths(cfg))
        try:
            check_outputs(cfg)
            return locked(cfg, *args, **kwargs)
        except BaseException:
            for folder, top in made:
                _remove_made(folder, top)
            raise
        finally:
            _RUNNING.pop()

    wrapper.owns_outputs = True  # tests/test_layout_rules.py: every stage's run is wrapped
    return wrapper  # type: ignore[return-value]
