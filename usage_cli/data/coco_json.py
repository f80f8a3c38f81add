"""COCO from its official JSON (``annotations/instances_<split>.json``): image-level labels from the
annotations, and ground-truth masks rendered with ``pycocotools`` the way the WSSS code gets them.

MCTformer's and ToCo's COCO masks come from alicranck/coco2voc (ToCo's README names it, and both
read 81-value masks, 0 background + 80 classes); its rule, reproduced by :func:`render_mask`:

1. every annotation of the image, crowd ones included (``getAnnIds(img)`` leaves ``iscrowd`` open),
   decoded from its polygons (merged), uncompressed or compressed RLE;
2. sorted by the annotation's ``area``, smallest first (a stable sort: ties keep the file's order);
3. a pixel takes the class of the first annotation covering it, so where instances overlap the smaller
   one wins; no pixel is 255 (no ignore border);
4. the value is the category's rank in ``categories`` sorted by id (COCO's ids 1..90 -> 1..80).

An image without annotations is kept, labelled with no class and masked all background (MCTformer's
``coco/train_id.txt`` and ``val_id.txt`` list all 82,783 and 40,504 images, those included).
The masks are cached on first use (``artifacts/mask_cache.py``), never written beside the dataset.
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from usage_cli.artifacts import mask_cache
from usage_cli.data.labels_io import read_class_names, read_split_file
from usage_cli.data.records import Dataset, DatasetMeta, Record
from usage_cli.errors import DatasetError

RULE = "coco2voc: crowd included, smallest area first, no ignore"  # what the cached masks follow
YEARS = ("2014", "2017")  # --split train / val: the 2014 files first (the WSSS convention), else 2017


def annotation_file(root: Path, split: str) -> Path | None:
    """``ROOT/annotations/instances_<split>.json``; ``train`` / ``val`` try the 2014 and 2017 files."""
    names = [split] + ([f"{split}{y}" for y in YEARS] if split in ("train", "val") else [])
    return next((p for n in names if (p := root / "annotations" / f"instances_{n}.json").is_file()), None)


def image_folder(root: Path, json_path: Path) -> Path:
    """The photos of ``instances_<name>.json``: ``ROOT/<name>/`` or ``ROOT/images/<name>/``."""
    name = json_path.stem.removeprefix("instances_")
    cands = [root / name, root / "images" / name]
    return next((c for c in cands if c.is_dir()), cands[0])


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable annotation file ({e})") from e
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{path}: not a COCO instances file (needs the lists 'images', 'annotations' and 'categories')")
    return doc


def _category_values(path: Path, categories: list[dict], classes_file) -> tuple[list[str], dict[int, int]]:
    """Class names and category id -> label value: the categories sorted by id, or ``--classes``' order."""
    try:
        cats = sorted(((int(c["id"]), str(c["name"])) for c in categories), key=lambda c: c[0])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: a category without an integer 'id' and a 'name' ({e})") from None
    if not cats:
        raise DatasetError(f"{path}: 'categories' is empty")
    if classes_file is None:
        return [n for _, n in cats], {cid: i + 1 for i, (cid, _) in enumerate(cats)}
    names = read_class_names(classes_file, [], ())
    index = {n: i + 1 for i, n in enumerate(names)}
    for cid, n in cats:
        if n not in index:
            close = difflib.get_close_matches(n, names, n=1)
            raise DatasetError(f"{path}: category {cid} '{n}' is not in {classes_file}{f' (did you mean {close[0]!r}?)' if close else ''}")
    return names, {cid: index[n] for cid, n in cats}


def _images(path: Path, doc: dict) -> dict[int, dict]:
    out = {}
    for k, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "height", "width"} <= im.keys():
            raise DatasetError(f"{path}: images[{k}] lacks one of id, file_name, height, width")
        if im["id"] in out:
            raise DatasetError(f"{path}: images[{k}]: image id {im['id']} is listed twice")
        out[im["id"]] = im
    return out


def _annotations(path: Path, doc: dict, images: dict[int, dict], values: dict[int, int]) -> dict[int, list[dict]]:
    """image id -> its annotations, each naming a known image and a known category."""
    by_image: dict[int, list[dict]] = {i: [] for i in images}
    known = ", ".join(map(str, sorted(values)))
    for k, a in enumerate(doc["annotations"]):
        aid = a.get("id", k) if isinstance(a, dict) else k
        if not isinstance(a, dict) or "segmentation" not in a:
            raise DatasetError(f"{path}: annotation {aid} (annotations[{k}]) has no 'segmentation'")
        if a.get("category_id") not in values:
            raise DatasetError(f"{path}: annotation {aid} (annotations[{k}]) has category_id {a.get('category_id')!r}, not in 'categories' (ids {known})")
        if a.get("image_id") not in by_image:
            raise DatasetError(f"{path}: annotation {aid} (annotations[{k}]) names image_id {a.get('image_id')!r}, not in 'images'")
        by_image[a["image_id"]].append(a)
    return by_image


def render_mask(annotations: Sequence[dict], height: int, width: int, values: dict[int, int]) -> np.ndarray:
    """The semantic mask (H x W uint8) of one image's annotations, by coco2voc's rule (module doc)."""
    label = np.zeros((height, width), np.uint8)
    # 1.-2. smallest area first (stable: ties keep the file's order)
    for a in sorted(annotations, key=lambda a: a.get("area", 0)):
        m = _decode(a, height, width)
        if m.shape != label.shape:
            raise ValueError(f"annotation {a.get('id')}: segmentation of size {m.shape[::-1]}, image {width}x{height}")
        # 3. a pixel keeps the first (smallest) annotation over it; 4. the category's label value
        label[m & (label == 0)] = values[a["category_id"]]
    return label


def _decode(a: dict, height: int, width: int) -> np.ndarray:
    """An annotation's region (H x W bool) from its polygons (merged), uncompressed or compressed RLE."""
    seg = a["segmentation"]
    try:
        with warnings.catch_warnings():  # pycocotools' decode under numpy 2: a DeprecationWarning per call
            warnings.simplefilter("ignore", DeprecationWarning)
            if isinstance(seg, list):  # polygons: one object may have several parts
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, height, width)
            else:
                rle = seg
            return mask_utils.decode(rle).astype(bool)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        raise ValueError(f"annotation {a.get('id')}: unreadable segmentation ({e})") from None


def load(root: Path, split: str, json_path: Path, *, split_file=None, classes_file=None, require_images: bool = True) -> Dataset:
    # 1. the annotation file, its categories, images and annotations (checked)
    doc = _read(json_path)
    names, values = _category_values(json_path, doc["categories"], classes_file)
    images = _images(json_path, doc)
    anns = _annotations(json_path, doc, images, values)
    folder = image_folder(root, json_path)
    ids = {str(PurePosixPath(im["file_name"]).with_suffix("")): i for i, im in images.items()}
    chosen = sorted(ids)
    if split_file is not None:
        chosen = sorted(read_split_file(Path(split_file), folders=True))
        missing = [i for i in chosen if i not in ids]
        if missing:
            raise DatasetError(f"{split_file}: {len(missing)} id(s) not among the images of {json_path} (first: {missing[0]})")
    # 2. every photo on disk (evaluate reads masks only: there they may be absent)
    if require_images:
        for i in chosen:
            im = images[ids[i]]
            if not (folder / im["file_name"]).is_file():
                raise DatasetError(f"{json_path}: image {im['id']} '{im['file_name']}' not found at {folder / im['file_name']}")
    # 3. the masks: rendered into usage's cache on first use
    def render(image_id: str) -> np.ndarray:
        im = images[ids[image_id]]
        try:
            return render_mask(anns[im["id"]], int(im["height"]), int(im["width"]), values)
        except ValueError as e:
            raise DatasetError(f"{json_path}: {e}") from None

    key = {"rule": RULE, "values": {str(c): v for c, v in sorted(values.items())}, "class_names": names}
    masks = mask_cache.ensure(json_path, key, sorted(ids), render)
    records = tuple(
        Record(id=i, image_path=folder / images[ids[i]]["file_name"], mask_path=mask_cache.mask_path(masks, i),
               labels=tuple(sorted({values[a["category_id"]] for a in anns[ids[i]]})))
        for i in chosen
    )  # fmt: skip
    return Dataset(meta=DatasetMeta(name="coco", class_names=tuple(names)), records=records, root=root, split=split)
