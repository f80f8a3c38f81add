"""Joint image + label-map augmentation: random scale, crop and horizontal flip.

The image and every label map go through the same geometric transform. Labels are resized with
nearest neighbour and the padding a crop needs gets the ignore label (255), never background:
the anchors (MCTformer, PSA) pad labels with 0, which teaches "background" on pixels that do not
exist. The image padding is the ImageNet mean, which :func:`normalize` maps to zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mean_pixel(mean) -> tuple[int, ...]:
    """The uint8 colour that :func:`normalize` with ``mean`` maps to zero (the padding of a crop)."""
    return tuple(int(round(m * 255)) for m in mean)


MEAN_PIXEL = mean_pixel(IMAGENET_MEAN)  # (124, 116, 104)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image to ``size`` = (H, W)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW uint8 label map to ``size`` = (H, W)."""
    if label.shape == tuple(size):
        return label
    return np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST))


def pad_to(array: np.ndarray, min_h: int, min_w: int, fill) -> np.ndarray:
    """Pad at the bottom/right so the array is at least ``min_h`` x ``min_w``."""
    h, w = array.shape[:2]
    ph, pw = max(min_h - h, 0), max(min_w - w, 0)
    if ph == 0 and pw == 0:
        return array
    out = np.empty((h + ph, w + pw, *array.shape[2:]), dtype=array.dtype)
    out[...] = np.asarray(fill, dtype=array.dtype)
    out[:h, :w] = array
    return out


def random_scale_crop_flip(
    image: np.ndarray,
    labels: Sequence[np.ndarray],
    *,
    crop: int,
    scale: tuple[float, float] = (0.7, 1.3),
    flip: bool = True,
    rng: np.random.Generator,
    ignore_index: int = 255,
    image_fill: Sequence[int] = MEAN_PIXEL,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scale by a factor drawn from ``scale``, pad to ``crop``, take a random ``crop`` square, flip.

    Returns the crop x crop x 3 image and the crop x crop label maps (padding = ``ignore_index``).
    """
    h, w = image.shape[:2]
    for lab in labels:
        if lab.shape != (h, w):
            raise ValueError(f"label map of shape {lab.shape} does not match image {(h, w)}")
    # 1. random scale: bilinear for the image, nearest for the labels
    s = float(rng.uniform(scale[0], scale[1]))
    size = (max(int(round(h * s)), 1), max(int(round(w * s)), 1))
    image = resize_image(image, size)
    labels = [resize_label(lab, size) for lab in labels]
    # 2. pad up to the crop size: image with the mean colour, labels with the ignore label
    image = pad_to(image, crop, crop, image_fill)
    labels = [pad_to(lab, crop, crop, ignore_index) for lab in labels]
    # 3. random crop window, the same for all
    H, W = image.shape[:2]
    y0 = int(rng.integers(0, H - crop + 1))
    x0 = int(rng.integers(0, W - crop + 1))
    image = image[y0:y0 + crop, x0:x0 + crop]
    labels = [lab[y0:y0 + crop, x0:x0 + crop] for lab in labels]
    # 4. horizontal flip with probability 1/2
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
        labels = [lab[:, ::-1] for lab in labels]
    return np.ascontiguousarray(image), [np.ascontiguousarray(lab) for lab in labels]


def normalize(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """HxWx3 uint8 -> 3xHxW float32 tensor, normalised by ``mean`` / ``std`` (of 0..1 values): the
    statistics the network's weights expect, which it records (``input_norm()`` of the networks)."""

    x = torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(mean).view(3, 1, 1)
    std = torch.tensor(std).view(3, 1, 1)
    return (x - mean) / std
