"""A built-in miniature of the WSSS problem, written in the VOC layout (`usage synth`).

Each object has a large *body* whose texture is shared by all classes and a small class-specific
*head* (colour + pattern) at one end: the class is recognisable from the head alone, so a plain CAM
under-activates the body. Most classes prefer one background texture (a boat is usually on water),
so context leaks into the activation maps: over-activation. 0-3 objects per image, varied sizes,
shapes and orientations, occlusion, a one-pixel ignore (255) band on object borders as in VOC, noise.
See docs/synth.md for the statistics.
"""

from __future__ import annotations

import colorsys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.artifacts.labels import write_label_png
from usage_cli.data.labels_io import write_cls_labels_json

CLASSES = ("boat", "car", "cow", "plane", "bird", "person")
BACKGROUNDS = ("water", "road", "grass", "sky", "indoor")
# class -> preferred background (None: any); the preferred one is drawn with probability CONTEXT_P
PREFERRED = {"boat": "water", "car": "road", "cow": "grass", "plane": "sky", "bird": None, "person": None}
CONTEXT_P = 0.8
# head colours (RGB) and patterns; no background or body texture uses these saturated colours
HEADS = {
    "boat": ((230, 30, 30), "solid"),
    "car": ((250, 220, 20), "checker"),
    "cow": ((220, 40, 220), "ring"),
    "plane": ((20, 220, 230), "stripes"),
    "bird": ((255, 140, 0), "dot"),
    "person": ((40, 230, 60), "checker"),
}
BODY_TEXTURES = ("fur", "metal", "cloth")
EMPTY_P = 0.1
MAX_CLASSES = 20
FILES = ("VOCdevkit", "cls_labels.npy", "cls_labels.json", "classes.txt")  # what generate() writes into its root
PATTERNS = ("solid", "checker", "stripes", "ring", "dot")


def class_table(num_classes: int = len(CLASSES)) -> tuple[tuple[str, ...], dict, dict]:
    """Names, heads and preferred backgrounds of a set of ``num_classes`` (2..20) classes.

    The first six are the default set above, unchanged; classes 7..20 (``thing07``..) get a head colour
    from a golden-ratio walk round the hue circle (saturated, unlike any background), a pattern in
    turn from PATTERNS and a preferred background in turn (or none). More classes at the same number
    of objects per image lower each class's frequency: VOC's regime (20 classes, 5-10 % each).
    """

    names, heads, preferred = list(CLASSES[:num_classes]), dict(HEADS), dict(PREFERRED)
    for i in range(len(CLASSES) + 1, num_classes + 1):
        name = f"thing{i:02d}"
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.9, 0.95)
        heads[name] = ((int(r * 255), int(g * 255), int(b * 255)), PATTERNS[i % len(PATTERNS)])
        preferred[name] = (*BACKGROUNDS, None)[i % (len(BACKGROUNDS) + 1)]
        names.append(name)
    return tuple(names), heads, preferred


@dataclass(frozen=True)
class SynthObject:
    cls: int  # label value 1..K
    body: np.ndarray  # bool HxW
    head: np.ndarray  # bool HxW
    bbox: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax (1-based like VOC)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 HxWx3 texture in [0, 255]."""
    yy, xx = _grid(size)
    n = rng.normal(0, 1, (size, size)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "water":
        wave = np.sin(yy / size * 40 + np.sin(xx / size * 9 + phase) * 2)
        base = np.stack([40 + 10 * wave, 80 + 20 * wave, 150 + 30 * wave], -1)
    elif kind == "road":
        lane = (np.abs(((xx + yy * 0.3) % (size / 2)) - size / 4) < size / 60).astype(np.float32)
        base = np.stack([105 + 90 * lane, 105 + 90 * lane, 110 + 60 * lane], -1)
    elif kind == "grass":
        blades = ndimage.uniform_filter(rng.random((size, size)).astype(np.float32), (5, 1))
        base = np.stack([60 + 40 * blades, 120 + 60 * blades, 40 + 20 * blades], -1)
    elif kind == "sky":
        base = np.stack([150 + 60 * yy / size, 190 + 40 * yy / size, 235 + 0 * yy], -1)
    else:  # indoor: beige checker floor
        chk = ((xx // (size / 8) + yy // (size / 8)) % 2).astype(np.float32)
        base = np.stack([200 - 25 * chk, 180 - 25 * chk, 150 - 25 * chk], -1)
    return base + 6 * n[..., None]


def body_texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    n = rng.normal(0, 1, (size, size)).astype(np.float32)
    if kind == "fur":
        v = ndimage.gaussian_filter(rng.random((size, size)).astype(np.float32), 1.5)
        base = np.stack([110 + 80 * v, 85 + 60 * v, 60 + 40 * v], -1)
    elif kind == "metal":
        s = 0.5 + 0.5 * np.sin(xx / 2.5 + yy / 5)
        base = np.stack([120 + 40 * s, 120 + 40 * s, 130 + 40 * s], -1)
    else:  # cloth: dotted
        d = ((xx % 6 < 2) & (yy % 6 < 2)).astype(np.float32)
        base = np.stack([150 - 60 * d, 110 - 50 * d, 120 - 50 * d], -1)
    return base + 5 * n[..., None]


def head_pattern(cls_name: str, size: int, heads: dict = HEADS) -> np.ndarray:
    (r, g, b), pattern = heads[cls_name]
    yy, xx = _grid(size)
    col = np.array([r, g, b], np.float32)
    if pattern == "checker":
        on = ((xx // 3 + yy // 3) % 2).astype(np.float32)
    elif pattern == "stripes":
        on = ((yy // 2) % 2).astype(np.float32)
    else:
        on = np.ones((size, size), np.float32)
    dark = np.array([25, 25, 25], np.float32)
    return on[..., None] * col + (1 - on[..., None]) * dark


def _object(cls: int, size: int, rng: np.random.Generator, pattern: str) -> SynthObject:
    # 1. body: ellipse or rounded rectangle, random size / aspect / rotation
    yy, xx = _grid(size)
    a = rng.uniform(0.12, 0.32) * size  # semi-major
    b = a * rng.uniform(0.45, 0.8)  # semi-minor
    cy, cx = rng.uniform(a * 0.9, size - a * 0.9, 2)
    th = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
    v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
    if rng.random() < 0.5:
        body = (u / a) ** 2 + (v / b) ** 2 <= 1
    else:
        body = (np.abs(u / a) ** 4 + np.abs(v / b) ** 4) <= 1
    # 2. head: a disk at one end of the major axis, inside the body (the discriminative part)
    rh = 0.42 * b
    sgn = 1 if rng.random() < 0.5 else -1
    hu = sgn * (a - rh * 1.1)
    hx, hy = cx + hu * np.cos(th), cy + hu * np.sin(th)
    head = ((xx - hx) ** 2 + (yy - hy) ** 2 <= rh**2) & body
    if pattern == "ring":  # a hollow head (the dot pattern is drawn solid, as before)
        inner = (xx - hx) ** 2 + (yy - hy) ** 2 <= (rh * 0.45) ** 2
        head = head & ~inner
    ys, xs = np.nonzero(body)
    bbox = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1) if xs.size else (1, 1, 1, 1)
    return SynthObject(cls=cls, body=body, head=head, bbox=bbox)


def sample_image(size: int, rng: np.random.Generator, num_classes: int = len(CLASSES)) -> tuple[np.ndarray, np.ndarray, list[SynthObject], str]:
    """One image: (HxWx3 uint8, HxW uint8 mask with 255 borders, objects, background name)."""
    names, heads, preferred = class_table(num_classes)
    # 1. which classes, then the background (context correlated with the first object)
    n_obj = 0 if rng.random() < EMPTY_P else int(rng.choice([1, 1, 2, 2, 3]))
    classes = [int(c) + 1 for c in rng.integers(0, num_classes, n_obj)]
    pref = preferred[names[classes[0] - 1]] if classes else None
    bg = pref if pref is not None and rng.random() < CONTEXT_P else BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    img = background(bg, size, rng)
    mask = np.zeros((size, size), np.uint8)
    border = np.zeros((size, size), bool)
    # 2. objects, later ones occlude earlier ones
    objects = [_object(c, size, rng, heads[names[c - 1]][1]) for c in classes]
    for obj in objects:
        name = names[obj.cls - 1]
        tex = body_texture(BODY_TEXTURES[int(rng.integers(len(BODY_TEXTURES)))], size, rng)
        img[obj.body] = tex[obj.body]
        img[obj.head] = head_pattern(name, size, heads)[obj.head]
        mask[obj.body] = obj.cls
        edge = obj.body & ~ndimage.binary_erosion(obj.body)
        border = (border & ~obj.body) | edge
    # 3. VOC-like ignore band on object borders, photometric jitter and noise
    mask[border] = 255
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask, objects, bg


def _xml(image_id: str, size: int, objects: list[SynthObject], names: tuple[str, ...]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    sz = ET.SubElement(root, "size")
    for k, v in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, k).text = str(v)
    for obj in objects:  # only visible objects (an occluded one has no pixel left)
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = names[obj.cls - 1]
        ET.SubElement(o, "difficult").text = "0"
        bb = ET.SubElement(o, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), obj.bbox, strict=True):
            ET.SubElement(bb, k).text = str(v)
    return ET.tostring(root)


def generate(
    out: str | Path, n_train: int, n_val: int, size: int = 128, seed: int = 0, num_classes: int = len(CLASSES), n_aug: int = 0,
) -> dict:
    """Write the dataset under ``out`` (VOC layout) and return its statistics. Deterministic for a seed.

    ``n_aug`` more images (ids ``aug_*``, drawn the same way) join ``train_aug`` only, as SBD's images
    join VOC's: the classifier's split, which ``train_aug`` then holds as ``train`` plus these; with
    ``n_aug = 0`` it is ``train`` and the files are what they were before the option existed."""
    names = class_table(num_classes)[0]
    out = Path(out)
    vdir = out / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (vdir / sub).mkdir(parents=True, exist_ok=True)
    labels: dict[str, np.ndarray] = {}
    stats = {"images": 0, "empty": 0, "objects": 0, "context": {c: {b: 0 for b in BACKGROUNDS} for c in names}, "head_fraction": []}
    splits = {"train": n_train, "val": n_val, "aug": n_aug}
    lists: dict[str, list[str]] = {}
    for s_idx, (split, n) in enumerate(splits.items()):
        ids = [f"{split}_{i:05d}" for i in range(n)]
        for i, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, s_idx, i])
            img, mask, objects, bg = sample_image(size, rng, num_classes)
            with atomic_path(vdir / "JPEGImages" / f"{image_id}.jpg") as tmp:
                Image.fromarray(img).save(tmp, format="JPEG", quality=95)
            write_label_png(vdir / "SegmentationClass" / f"{image_id}.png", mask)
            visible = [o for o in objects if (mask[o.body] == o.cls).any()]
            with atomic_path(vdir / "Annotations" / f"{image_id}.xml") as tmp:
                tmp.write_bytes(_xml(image_id, size, visible, names))
            vec = np.zeros(num_classes, np.float32)
            present = set(np.unique(mask).tolist()) - {0, 255}
            vec[[c - 1 for c in present]] = 1
            labels[image_id] = vec
            stats["images"] += 1
            stats["empty"] += int(not present)
            stats["objects"] += len(visible)
            for obj in visible:
                stats["context"][names[obj.cls - 1]][bg] += 1
                stats["head_fraction"].append(float(obj.head.sum() / max(obj.body.sum(), 1)))
        lists[split] = ids
    lists["train_aug"] = lists["train"] + lists.pop("aug")
    for split, ids in lists.items():
        (vdir / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    with atomic_path(out / "cls_labels.npy") as tmp:  # PSA's format, for PSA-style tools
        with open(tmp, "wb") as f:
            np.save(f, np.array(labels, dtype=object), allow_pickle=True)
    write_cls_labels_json(out / "cls_labels.json", {k: np.flatnonzero(v) + 1 for k, v in labels.items()}, names)  # no pickle
    (out / "classes.txt").write_text("\n".join(("background", *names)) + "\n")
    hf = np.array(stats["head_fraction"] or [0.0])
    stats["head_fraction"] = {"mean": float(hf.mean()), "max": float(hf.max())}
    return stats
