"""PASCAL VOC layout loader (also any dataset in that layout, e.g. `usage synth` output or MSRC).

Layout: ``ROOT/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug, Annotations,
ImageSets/Segmentation}``; ``ROOT`` may also point at the ``VOC2012`` folder itself.
Image-level labels, in order of preference: ``cls_labels.npy`` (PSA style, in ROOT or VOC2012), else
``cls_labels.json`` (no pickle; ``usage synth`` writes both), the XML annotations, the ground-truth masks.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from usage_cli.data.io import check_ground_truth_folder, read_mask
from usage_cli.data.labels_io import read_class_names, read_cls_labels, read_split_file
from usage_cli.data.records import Dataset, DatasetMeta, Record
from usage_cli.errors import DatasetError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def voc_dir(root: Path) -> Path:
    """The VOC2012 folder under ``root`` (or ``root`` itself)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset root not found")
    for cand in (root / "VOCdevkit" / "VOC2012", root):
        if (cand / "JPEGImages").is_dir() or (cand / "ImageSets").is_dir():
            return cand
    raise DatasetError(f"{root}: no VOCdevkit/VOC2012 (with JPEGImages or ImageSets) inside; is this a VOC-layout root?")


def _split_path(vdir: Path, split: str, split_file: str | Path | None) -> Path:
    if split_file is not None:
        p = Path(split_file)
        if not p.exists():
            raise DatasetError(f"{p}: split file not found")
        return p
    p = vdir / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not p.exists():
        have = sorted(q.stem for q in p.parent.glob("*.txt")) if p.parent.is_dir() else []
        raise DatasetError(f"{p}: split file not found (splits here: {', '.join(have) or 'none'}; or pass --split-file)")
    return p


def _labels_from_xml(path: Path, class_index: dict[str, int]) -> tuple[int, ...]:
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise DatasetError(f"{path}: unreadable XML annotation ({e})") from e
    labels = set()
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_index:
            raise DatasetError(f"{path}: unknown class '{name}' (known: {', '.join(class_index)})")
        labels.add(class_index[name])
    return tuple(sorted(labels))


def _labels_from_mask(path: Path, num_classes: int) -> tuple[int, ...]:
    values = np.unique(read_mask(path, num_classes))
    return tuple(int(v) for v in values if 0 < v <= num_classes)


def _find_cls_labels(root: Path, vdir: Path) -> Path | None:
    for p in (root / "cls_labels.npy", vdir / "cls_labels.npy", root / "cls_labels.json", vdir / "cls_labels.json"):
        if p.exists():
            return p
    return None


def load(
    root: Path,
    split: str,
    *,
    split_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    require_images: bool = True,
) -> Dataset:
    # 1. folders, class names, split ids
    root = Path(root)
    vdir = voc_dir(root)
    names = read_class_names(classes_file, [root / "classes.txt", vdir / "classes.txt"], VOC_CLASSES)
    ids = read_split_file(_split_path(vdir, split, split_file))
    images = vdir / "JPEGImages"
    mask_dir = next((d for d in (vdir / "SegmentationClassAug", vdir / "SegmentationClass") if d.is_dir()), None)
    check_ground_truth_folder(mask_dir)
    image_files = _listing(images)
    mask_files = _listing(mask_dir) if mask_dir else {}
    # 2. image-level labels: cls_labels.npy > cls_labels.json > XML > masks
    cls_path = _find_cls_labels(root, vdir)
    cls = read_cls_labels(cls_path, names) if cls_path else None
    class_index = {n: i + 1 for i, n in enumerate(names)}
    records = []
    for i in sorted(ids):
        img, mask = image_files.get(i), mask_files.get(i)
        if img is None:
            if require_images:
                raise DatasetError(f"{images / (i + '.jpg')}: image not found (listed in the '{split}' split)")
            if mask is None:  # nothing of this id exists: say so, not that its label is missing
                where = mask_dir or vdir / "SegmentationClass"
                raise DatasetError(f"{images / (i + '.jpg')}: image not found, nor a mask in {where} (id '{i}', listed in the '{split}' split)")
            img = images / f"{i}.jpg"
        if cls is not None and i in cls:
            labels = cls[i]
        elif (vdir / "Annotations" / f"{i}.xml").exists():
            labels = _labels_from_xml(vdir / "Annotations" / f"{i}.xml", class_index)
        elif mask is not None:
            labels = _labels_from_mask(mask, len(names))
        else:
            src = cls_path or vdir / "Annotations"
            raise DatasetError(f"{src}: no image-level label for '{i}' (no cls_labels entry, XML or mask)")
        records.append(Record(id=i, image_path=img, mask_path=mask, labels=labels))
    meta = DatasetMeta(name="voc", class_names=tuple(names))
    return Dataset(meta=meta, records=tuple(records), root=root, split=split)


def _listing(folder: Path | None) -> dict[str, Path]:
    """id -> file for the images/masks of a folder, from one directory listing."""
    if folder is None or not folder.is_dir():
        return {}
    out = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() in (".jpg", ".jpeg", ".png") and stem not in out:
            out[stem] = folder / name
    return out
