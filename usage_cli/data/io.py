"""Reading images and masks with one clear error line per bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.errors import DatasetError


def check_ground_truth_folder(folder: str | Path | None) -> None:
    """A folder a loader reads ground truth from never holds a usage output: predictions put there (an
    ``--out`` inside the data set) would be scored against themselves. One line naming the folder."""
    manifest = None if folder is None else Path(folder) / MANIFEST_NAME
    if manifest is None or not manifest.is_file():
        return
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # not a usage manifest: a data set's own file of that name
    if isinstance(doc, dict) and doc.get("tool") == "usage":
        raise DatasetError(
            f"{folder}: the ground-truth folder holds {MANIFEST_NAME} of a usage {doc.get('stage', '?')} run — these are usage's "
            f"outputs, not ground truth (they would be scored against themselves); move them out of the data set"
        )


def check_image_mode(path: str | Path, mode: str) -> None:
    """Refuse an image that 8-bit RGB conversion would clip: 16- and 32-bit integer ("I;16", "I") and
    float ("F") modes (PIL clips every value above 255 to white)."""
    if mode.startswith("I") or mode == "F":
        depth = "16-bit" if "16" in mode else ("float" if mode == "F" else "32-bit")
        raise DatasetError(
            f"{path}: {depth} image (mode {mode}); reading it as 8-bit RGB would clip its values — convert it to "
            f"8-bit RGB first"
        )


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as HxWx3 uint8 (an image of a mode that conversion would clip is refused)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: image not found")
    try:
        with Image.open(p) as img:
            check_image_mode(p, img.mode)
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{p}: unreadable or corrupt image ({e})") from e


def read_mask(path: str | Path, num_classes: int | None = None, ignore_index: int = 255) -> np.ndarray:
    """A ground-truth mask as HxW uint8 label values; checks the range when K is given."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: mask not found")
    try:
        with Image.open(p) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(f"{p}: mask has mode {img.mode}; expected a palette or single-channel PNG of label values")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{p}: unreadable or corrupt mask ({e})") from e
    if num_classes is not None:
        bad = (arr > num_classes) & (arr != ignore_index)
        if bad.any():
            raise DatasetError(
                f"{p}: mask holds label value {int(arr[bad].max())} outside 0..{num_classes} and {ignore_index}"
            )
    return arr.astype(np.uint8)

