"""Label maps on disk: palette PNG (VOC colours), uint8, 255 = ignore, one per image id; and the
label-PNG folder that holds one per image with its manifest (:func:`read_label_folder`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from usage_cli.artifacts.atomic import atomic_path, write_text_atomic
from usage_cli.artifacts.manifest import MANIFEST_NAME, read_manifest
from usage_cli.errors import ArtifactError
from usage_cli.registry import LABEL_FOLDERS, producer, writing


def voc_palette() -> list[int]:
    """The bit-interleaved PASCAL VOC colour map as a flat list of 768 ints (index 255 = 224,224,192)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.extend((r, g, b))
    return palette


_PALETTE = voc_palette()


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write an HxW uint8 label map as a palette PNG, atomically."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label.shape}")
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG (palette or single-channel 'L') as HxW uint8 label values."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            if img.mode not in ("P", "L"):
                raise ArtifactError(
                    f"{p}: label PNG has mode {img.mode}; expected a palette ('P') or grey ('L') image of label values"
                )
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError as e:
        raise ArtifactError(f"{p}: label PNG not found") from e
    except (OSError, SyntaxError) as e:
        raise ArtifactError(f"{p}: unreadable label PNG ({e})") from e


# --- the label-PNG folder: <id>.png per image and a manifest.json (psa-labels, psa-walk, refine-psa,
# predict-seg write one; train-aff, train-seg and evaluate read one). The manifest's format_version is
# this layout's version; an unfinished folder resumes by its stage's marker (PNG_MARKERS below).

FOLDER_VERSION = "1.0.0"


def label_path(folder: str | Path, image_id: str) -> Path:
    """``<folder>/<id>.png``; an id of a photo in a subfolder (``a/b``) is one file, ``a%2Fb.png``
    (``%`` itself is ``%25``), as the seed store names its groups."""
    return Path(folder) / f"{image_id.replace('%', '%25').replace('/', '%2F')}.png"


def png_id(path: str | Path) -> str:
    """The image id of a label PNG (the inverse of :func:`label_path`)."""
    return Path(path).stem.replace("%2F", "/").replace("%25", "%")


CLASS_LIST = "classes.txt"  # predict-seg --images: the name of each label value, background first
OVERLAYS = "overlays"  # predict-seg --images: <id>.jpg, the photo beside its prediction, for people


def write_class_list(folder: str | Path, names: Sequence[str]) -> Path:
    """``<folder>/classes.txt``: one name a line, line n (from 0) naming label value n; background first."""
    path = Path(folder) / CLASS_LIST
    write_text_atomic(path, "".join(f"{n}\n" for n in names))
    return path


def overlay_path(folder: str | Path, image_id: str) -> Path:
    """Where a prediction's picture for people goes: ``<folder>/overlays/<id>.jpg`` (named as its PNG)."""
    return label_path(Path(folder) / OVERLAYS, image_id).with_suffix(".jpg")


def label_ids(folder: str | Path) -> set[str]:
    """The ids that have a PNG in ``folder``."""
    return {png_id(p) for p in Path(folder).glob("*.png")}


def read_label_folder(folder: str | Path, stages: tuple[str, ...]) -> dict:
    """The manifest of a finished label folder written by one of ``stages`` (a missing one, or one of
    another stage or major version, is a one-line error naming the command to run)."""
    manifest = read_manifest(folder, expect_stage=stages)
    version = str(manifest.get("format_version", ""))
    if version.split(".")[0] != FOLDER_VERSION.split(".")[0]:
        raise ArtifactError(
            f"{folder}: label folder version {version} is not readable by this usage ({FOLDER_VERSION.split('.')[0]}.x); "
            f"rerun `{producer(stages[0])}`, or use the usage version that wrote it"
        )
    return manifest


def folder_class_names(folder: str | Path) -> list[str] | None:
    """The class names a label folder's manifest records; None for a folder without a readable one
    (PNGs made by hand)."""
    try:
        return read_manifest(folder).get("class_names")
    except ArtifactError:
        return None


LEGACY_CACHE = "key.json"  # refine-psa's confident/ before it was psa-labels' folder: a private cache key


def clear_legacy_cache(folder: str | Path) -> bool:
    """Empty a ``confident/`` folder an older refine-psa left as a private cache (``key.json`` beside its
    PNGs, no manifest): its labels say nothing of what made them, so psa-labels makes them again."""
    folder = Path(folder)
    if not (folder / LEGACY_CACHE).exists() or (folder / MANIFEST_NAME).exists():
        return False
    for p in folder.glob("*.png"):
        p.unlink()
    (folder / LEGACY_CACHE).unlink()
    return True

# --- resuming an unfinished label-PNG folder: while a run writes it, its stage's marker file holds that
# run's key; the PNGs of a run with the same key are kept, the folder reads as finished only once its
# manifest is written and the marker removed

_OLD_MARKERS = {"refine-psa": ".refine-psa.partial"}  # named so before the others: kept, so its unfinished runs resume


def png_marker(stage: str) -> str:
    """The marker file in ``stage``'s PNG folder while a run writes it; it holds that run's key."""
    return _OLD_MARKERS.get(stage, f".{stage}.partial.json")


# every stage that writes a label-PNG folder (the registry's LABEL_FOLDERS kinds) -> its marker
PNG_MARKERS = {stage: png_marker(stage) for stage in writing(*LABEL_FOLDERS)}


def resume_png_folder(out: Path, key: dict[str, Any], *, stage: str, force: bool, main: bool = True) -> set[str]:
    """Ids whose ``<id>.png`` an unfinished run of the same ``key`` already wrote (to be skipped).

    The stage's marker file (:data:`PNG_MARKERS`) holds the key of the run writing the folder. PNGs of an
    unfinished run with another key are not mixed into this run: without ``force`` that is an error, with
    it they are deleted (by the ``main`` process only). PNGs no run of ``stage`` is writing are not
    usage's to delete: always an error (``artifacts/claims.py:claim_out`` says so first)."""
    m = Path(out) / PNG_MARKERS[stage]
    pngs = sorted(Path(out).glob("*.png"))
    old = None
    if m.exists():
        try:
            old = json.loads(m.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if old == key and not force:
            return {png_id(p) for p in pngs}
    if pngs and old is None:
        raise ArtifactError(
            f"{out}: holds {len(pngs)} PNG files no {stage} run is writing (first: {pngs[0].name}); usage never deletes "
            f"those — move them away or choose an empty folder"
        )
    if pngs and not force:
        changed = sorted(k.removesuffix("_sha256").replace("config_hash", "config") for k in set(key) | set(old) if key.get(k) != old.get(k))
        raise ArtifactError(
            f"{out}: an unfinished {stage} run is here, of another {' and '.join(changed) or 'config or other inputs'} "
            f"(its {PNG_MARKERS[stage]}); rerun it with the same options and inputs to resume, or pass --force to start over"
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
