"""Overlay pictures a person can look at: image | heat map per present class | seed at a threshold
(:func:`overlay_panel`), and a photo with its predicted label map (:func:`prediction_panel`).

Each heat map carries its class name and the seed its background threshold, written on the tile.
Pictures for people, not an artifact a stage reads: ``usage gen-seeds`` writes a few beside its seed
store, ``usage predict-seg --images`` one per photo, and the report's gallery draws its heat maps with
:func:`jet` and its label maps with :func:`paint`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.artifacts.labels import label_path, voc_palette
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data.io import read_image


def jet(x: np.ndarray) -> np.ndarray:
    """The 'jet' colour map of values in [0, 1] as HxWx3 uint8."""
    x = np.clip(x, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (255 * np.concatenate([r, g, b], -1)).astype(np.uint8)


def label_tile(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with ``text`` written in its top-left corner, white on a dark box (readable on any colour)."""
    img = Image.fromarray(tile)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(10, min(16, tile.shape[0] // 10)))
    x0, y0, x1, y1 = draw.textbbox((3, 2), text, font=font)
    draw.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def paint(image: np.ndarray, label: np.ndarray, pal: np.ndarray) -> np.ndarray:
    """A label map over its image: classes (and 255) in their palette colour, background dimmed."""
    out = image.astype(np.float32) * 0.55
    fg = label != 0
    out[fg] = 0.35 * image[fg] + 0.65 * pal[label[fg]]
    return out.astype(np.uint8)


def legend_strip(values: list[int], names: tuple[str, ...], pal: np.ndarray, width: int) -> np.ndarray:
    """A strip ``width`` wide: a colour swatch and the name of each label value, in rows as needed."""
    font = ImageFont.load_default(size=14)
    items = [(pal[v], names[v] if v < len(names) else f"class {v}") for v in values] or [(None, "background only")]
    rows, x = [[]], 6
    for colour, text in items:
        w = 22 + int(font.getlength(text)) + 14
        if x + w > width and rows[-1]:
            rows.append([])
            x = 6
        rows[-1].append((x, colour, text))
        x += w
    img = Image.new("RGB", (width, 22 * len(rows) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        y = 5 + 22 * r
        for x, colour, text in row:
            if colour is not None:
                draw.rectangle((x, y, x + 15, y + 15), fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
            draw.text((x + 22 if colour is not None else x, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def prediction_panel(image: np.ndarray, label: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The photo beside its label map painted over it, and below them the classes present, named."""
    pal = np.array(voc_palette(), np.uint8).reshape(256, 3)
    top = np.concatenate([image, np.full((image.shape[0], 4, 3), 255, np.uint8), paint(image, label, pal)], axis=1)
    values = sorted(set(np.unique(label).tolist()) - {0})
    return np.concatenate([top, legend_strip(values, names, pal, top.shape[1])], axis=0)


def write_prediction_overlay(path: Path, image: np.ndarray, label: np.ndarray, names: tuple[str, ...]) -> None:
    """:func:`prediction_panel` as a JPEG at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(prediction_panel(image, label, names)).save(tmp, format="JPEG", quality=90)


def overlay_panel(
    image: np.ndarray, cam: np.ndarray, keys: np.ndarray, threshold: float, names: tuple[str, ...] | None = None
) -> np.ndarray:
    """One row: the image, one heat map blended on it per class (named after ``names[key]``, background
    first), the arg-max seed at ``threshold`` (VOC colours)."""
    tiles = [image]
    for k, m in zip(keys, cam.astype(np.float32), strict=True):
        heat = (0.5 * image + 0.5 * jet(m)).astype(np.uint8)
        tiles.append(label_tile(heat, names[k] if names is not None and k < len(names) else f"class {k}"))
    scores = np.concatenate([np.full((1, *image.shape[:2]), threshold, np.float32), cam.astype(np.float32)])
    label = np.concatenate([[0], keys])[scores.argmax(0)].astype(np.uint8)
    pal = np.array(voc_palette(), np.uint8).reshape(256, 3)
    tiles.append(label_tile(pal[label], f"seed, bg {threshold:.2f}"))
    return np.concatenate(tiles, axis=1)


def write_overlays(seeds: Path, ds, out_dir: Path, count: int, threshold: float) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    by_id = ds.by_id()
    with SeedReader(seeds) as r:
        for image_id in r.ids()[:count]:
            e = r.read(image_id)
            panel = overlay_panel(read_image(by_id[image_id].image_path), e.cam, e.keys, threshold, ds.meta.all_names)
            path = label_path(out_dir, image_id)
            with atomic_path(path) as tmp:
                Image.fromarray(panel).save(tmp, format="PNG")
            written.append(path)
    return written
