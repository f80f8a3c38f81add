"""A stage's output folder, claimed before any work.

Three rules, the same for every stage:

* ``--out`` must be a folder this process can write (checked by writing a probe file), so a stage
  never fails after an hour of work because of its output path;
* a folder holding a *finished* artifact (its ``manifest.json``) of another stage, or of the same
  stage with other options, is not overwritten without ``--force``;
* before a new run writes anything, the old artifact is removed — its manifest first, so the folder
  never reads as finished while it mixes two runs.

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

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.errors import ArtifactError, ConfigError


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


def differing(old: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    a, b = _plain(old), _plain(new)
    skip = set(ignore)
    return sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))


def claim_out(
    out: Path,
    stage: str,
    options: dict[str, Any],
    owned: Iterable[str],
    *,
    force: bool,
    ignore: Iterable[str] = (),
) -> Path:
    """Check ``out`` (see the module doc) and clear the finished artifact found there.

    ``owned``: names or glob patterns of what the stage writes there (the manifest is always owned);
    ``ignore``: option names that may differ without ``--force`` (e.g. ``epochs`` when extending)."""
    out = check_writable_folder(out)
    manifest = out / MANIFEST_NAME
    if not manifest.exists():
        return out
    try:
        old = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    if not force:
        if old.get("stage") != stage:
            raise ArtifactError(
                f"{out}: holds a '{old.get('stage', 'unknown')}' artifact, not {stage} output; choose another --out "
                f"or pass --force to replace it"
            )
        changed = differing(old.get("config", {}), options, ignore)
        if changed:
            raise ConfigError(
                f"{out}: holds a finished {stage} run of another config ({', '.join(changed[:6])}"
                f"{', ...' if len(changed) > 6 else ''} differ); choose another --out or pass --force to replace it"
            )
    remove_artifact(out, owned)
    return out


def remove_artifact(out: Path, owned: Iterable[str]) -> None:
    """Remove the manifest first (the folder stops reading as finished), then what the stage owns."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for pattern in owned:
        for p in sorted(out.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


# stage -> the marker file in its PNG folder while a run writes it; it holds that run's key
PNG_MARKERS = {
    "refine-psa": ".refine-psa.partial", "predict-seg": ".predict-seg.partial.json",
    "psa-labels": ".psa-labels.partial.json", "psa-walk": ".psa-walk.partial.json",
}  # fmt: skip


def resume_png_folder(out: Path, key: dict[str, Any], *, stage: str, force: bool, main: bool = True) -> set[str]:
    """Ids whose ``<id>.png`` an unfinished run of the same ``key`` already wrote (to be skipped).

    The stage's marker file (:data:`PNG_MARKERS`) holds the key of the run writing the folder. PNGs of an
    unfinished run with another key, or PNGs no run of ``stage`` is writing, are not mixed into this run:
    without ``force`` that is an error, with it they are deleted (by the ``main`` process only)."""
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
    if pngs and not force:
        if old is not None:
            raise ArtifactError(
                f"{out}: an unfinished {stage} run of another config or other inputs is here; rerun it with the same "
                f"options to resume, or pass --force to start over"
            )
        raise ArtifactError(f"{out}: holds {len(pngs)} PNG files no {stage} run is writing; choose an empty folder or pass --force to delete them")
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
