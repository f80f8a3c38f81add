"""MS COCO in the WSSS convention: 80 classes, single-channel PNG masks (0 bg, 1..80, 255 ignore).

The official download (``ROOT/train2014/``, ``ROOT/annotations/instances_train2014.json``, likewise
val and 2017, or any ``instances_<split>.json``) is read by ``data/coco_json.py``: labels from the
annotations, masks rendered into usage's cache. It is used when the split has no PNG mask folder
with a split list (the PNG layouts below keep working as they were).

PNG layouts (``ROOT`` = the COCO folder):

* flat (``../shared/data/coco128``): ``images/*.jpg``, ``SegmentationClass/*.png``, ``<split>.txt``
* MCTformer style: ``train2014/``, ``val2014/`` (or ``images/train2014``), masks in
  ``SegmentationClass/train2014`` or ``mask/train2014``, ids ``COCO_train2014_000000xxxxxx``
* ToCo's coco2voc style: ``JPEGImages/{train,val}``, ``SegmentationClass/{train,val}``

Split lists: ``--split-file``, or ``<split>.txt`` in ROOT, ``ROOT/ImageSets``, ``ROOT/ImageSets/Segmentation``.
Labels: ``cls_labels*.npy`` ({id: 80-dim}) in ROOT, else the masks.
"""

from __future__ import annotations

import os
from pathlib import Path

from usage_cli.data import coco_json
from usage_cli.data.io import check_ground_truth_folder
from usage_cli.data.labels_io import load_cls_labels, read_class_names, read_split_file
from usage_cli.data.records import Dataset, DatasetMeta, Record
from usage_cli.data.voc import _labels_from_mask
from usage_cli.errors import DatasetError

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def _subsets(split: str) -> list[str]:
    s = split.lower()
    if s.startswith("train"):
        return list(dict.fromkeys([split, "train2014", "train"]))
    if s.startswith("val"):
        return list(dict.fromkeys([split, "val2014", "val"]))
    return [split]


def _split_path(root: Path, split: str, split_file) -> Path:
    if split_file is not None:
        p = Path(split_file)
        if not p.exists():
            raise DatasetError(f"{p}: split file not found")
        return p
    cands = [root / f"{split}.txt", root / "ImageSets" / f"{split}.txt", root / "ImageSets" / "Segmentation" / f"{split}.txt"]
    for p in cands:
        if p.exists():
            return p
    have = sorted({q.stem for c in cands if c.parent.is_dir() for q in c.parent.glob("*.txt")})
    raise DatasetError(f"{cands[0]}: split file not found (lists here: {', '.join(have) or 'none'}; or pass --split-file)")


def _mask_dirs(root: Path, split: str) -> list[Path]:
    subs = _subsets(split)
    return [root / b / s for b in ("SegmentationClass", "mask", "masks") for s in subs] + [root / "SegmentationClass", root / "mask", root / "masks"]


def _png_layout(root: Path, split: str, split_file) -> bool:
    """The split is in a PNG layout: a mask folder and a split list (given, or found in ROOT)."""
    try:
        _split_path(root, split, split_file)
    except DatasetError:
        return False
    return any(d.is_dir() for d in _mask_dirs(root, split))


def _pick_dir(cands: list[Path], probe_id: str) -> Path | None:
    """The first candidate folder holding the probe id (any image extension), else the first that exists."""
    existing = [c for c in cands if c.is_dir()]
    for c in existing:
        if any((c / f"{probe_id}{e}").exists() for e in _IMAGE_EXT):
            return c
    return existing[0] if existing else None


def _listing(folder: Path | None) -> dict[str, Path]:
    if folder is None:
        return {}
    out = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() in _IMAGE_EXT:
            out.setdefault(stem, folder / name)
    return out


def load(
    root: Path,
    split: str,
    *,
    split_file=None,
    classes_file=None,
    require_images: bool = True,
) -> Dataset:
    # 1. class names, ids
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    json_path = coco_json.annotation_file(root, split)
    if json_path is not None and not _png_layout(root, split, split_file):
        return coco_json.load(root, split, json_path, split_file=split_file, classes_file=classes_file, require_images=require_images)
    names = read_class_names(classes_file, [root / "classes.txt"], COCO_CLASSES)
    ids = sorted(read_split_file(_split_path(root, split, split_file)))
    # 2. resolve the image and mask folders of this split
    subs = _subsets(split)
    img_dir = _pick_dir(
        [root / b / s for b in ("images", "JPEGImages") for s in subs] + [root / s for s in subs] + [root / "images", root / "JPEGImages"],
        ids[0],
    )
    if img_dir is None and require_images:
        raise DatasetError(f"{root}: no image folder (looked for images/, JPEGImages/, {'/, '.join(subs)}/)")
    mask_dir = _pick_dir(_mask_dirs(root, split), ids[0])
    check_ground_truth_folder(mask_dir)
    images, masks = _listing(img_dir), _listing(mask_dir)
    # 3. labels: cls_labels*.npy, else masks
    cls_files = sorted(root.glob("cls_labels*.npy"))
    cls = load_cls_labels(cls_files[0], len(names)) if cls_files else None
    records = []
    for i in ids:
        img, mask = images.get(i), masks.get(i)
        if img is None:
            if require_images:
                raise DatasetError(f"{(img_dir or root) / (i + '.jpg')}: image not found (listed in the '{split}' split)")
            if mask is None:  # nothing of this id exists: say so, not that its label is missing
                raise DatasetError(f"{(img_dir or root) / (i + '.jpg')}: image not found, nor a mask in {mask_dir or root} (id '{i}', listed in the '{split}' split)")
            img = (img_dir or root) / f"{i}.jpg"
        if cls is not None and i in cls:
            labels = cls[i]
        elif mask is not None:
            labels = _labels_from_mask(mask, len(names))
        else:
            raise DatasetError(f"{cls_files[0] if cls_files else root}: no image-level label for '{i}' (no cls_labels entry or mask)")
        records.append(Record(id=i, image_path=img, mask_path=mask, labels=labels))
    return Dataset(meta=DatasetMeta(name="coco", class_names=tuple(names)), records=tuple(records), root=root, split=split)
