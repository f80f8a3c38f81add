"""Label maps on disk: palette PNG (VOC colours), uint8, 255 = ignore, one per image id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.errors import ArtifactError


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
