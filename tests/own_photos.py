"""Data sets the way users have them, made inside the tests (issue 28): a ``--dataset folder`` set
(photos + metadata.jsonl, masks under ROOT/masks/) from a ``usage synth`` set, a bare folder of photos,
and a 3-image COCO set in the official layout (photos + annotations/instances_<split>.json, no PNG mask)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from usage_cli.data import load_dataset


def folder_from_synth(voc_root: Path, out: Path, splits=("train", "val"), subfolders: bool = True) -> Path:
    """The photos, labels (as class names) and masks of a VOC-layout set, as a folder set at ``out``;
    with ``subfolders`` every other photo goes to ``more/`` (its id ``more/<id>``)."""
    names = None
    for split in splits:
        ds = load_dataset("voc", voc_root, split)
        names = ds.meta.class_names
        rows = []
        for k, rec in enumerate(ds.records):
            rel = f"more/{rec.id}" if subfolders and k % 2 else rec.id
            (out / split / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(rec.image_path, out / split / f"{rel}.jpg")
            (out / "masks" / split / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(rec.mask_path, out / "masks" / split / f"{rel}.png")
            rows.append({"file_name": f"{rel}.jpg", "labels": [names[c - 1] for c in rec.labels]})
        (out / split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "classes.txt").write_text("".join(n + "\n" for n in names))
    return out


def bare_photos(voc_root: Path, out: Path, n: int = 3) -> Path:
    """``n`` photos in a bare folder (one in a subfolder): no labels, no split, no masks."""
    ds = load_dataset("voc", voc_root, "val")
    for k, rec in enumerate(ds.records[:n]):
        dst = out / ("sub" if k == 0 else "") / f"new{k}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rec.image_path, dst)
    return out


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode()}


def coco_set(root: Path, split: str = "train2017", size: tuple[int, int] = (64, 48)) -> Path:
    """Three photos in ``root/<split>/`` and ``root/annotations/instances_<split>.json`` (categories
    person = id 1, dog = id 18, so the values are 1 and 2):

    * ``000000000001``: a person (polygon, area 1200) and a dog (polygon, area 400) overlapping it;
    * ``000000000002``: a crowd of people (compressed RLE) and a dog (uncompressed RLE);
    * ``000000000003``: no annotation (all background).
    Each object is painted on its photo, so a classifier has something to see."""
    w, h = size
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    person, dog = (200, 60, 60), (60, 60, 200)
    crowd = np.zeros((h, w), bool)
    crowd[:16, 40:] = True
    dog2 = np.zeros((h, w), bool)
    dog2[30:44, 4:24] = True
    shapes = {1: [("poly", person, [10, 8, 50, 8, 50, 38, 10, 38]), ("poly", dog, [30, 20, 50, 20, 50, 40, 30, 40])],
              2: [("mask", person, crowd), ("mask", dog, dog2)], 3: []}  # fmt: skip
    images, anns = [], []
    for i, objects in shapes.items():
        img = Image.new("RGB", (w, h), (120, 140, 110))
        draw = ImageDraw.Draw(img)
        for kind, colour, geom in objects:
            if kind == "poly":
                draw.polygon(geom, fill=colour)
            else:
                arr = np.asarray(img).copy()
                arr[geom] = colour
                img = Image.fromarray(arr)
                draw = ImageDraw.Draw(img)
        name = f"{i:012d}.jpg"
        img.save(root / split / name, quality=95)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "segmentation": [[10, 8, 50, 8, 50, 38, 10, 38]], "area": 1200.0, "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 18, "segmentation": [[30, 20, 50, 20, 50, 40, 30, 40]], "area": 400.0, "iscrowd": 0},
        {"id": 21, "image_id": 2, "category_id": 1, "segmentation": _rle(crowd), "area": float(crowd.sum()), "iscrowd": 1},
        {"id": 22, "image_id": 2, "category_id": 18, "area": float(dog2.sum()), "iscrowd": 0,
         "segmentation": {"size": [h, w], "counts": _uncompressed(dog2)}},
    ]  # fmt: skip
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def _uncompressed(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts (column-major runs, starting with a run of zeros)."""
    flat = mask.T.ravel().astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts
