"""Label maps on disk: palette PNG (VOC colours), uint8, 255 = ignore, one per image id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.data.records import voc_palette
from usage_cli.errors import ArtifactError

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
