"""Classification augmentation, by recipe:

* ``deit``: DeiT / MCTformer — random resized crop, flip, RandAugment m9, colour jitter 0.4, random
  erasing 0.25 (timm ``create_transform``);
* ``psa``: PSA / IRN — random rescale, flip, colour jitter, random crop with padding;
* ``light``: resize, flip, mild colour jitter (short CPU runs, and OAA which needs aligned views);
* ``none``: resize only (evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from usage_cli.errors import ConfigError

RECIPES = ("deit", "psa", "light", "none")


def build_transform(recipe: str, size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Image.Image], tuple[torch.Tensor, bool]]:
    """A callable PIL image -> (normalised C x size x size tensor, whether it was flipped)."""

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if recipe == "deit":
        tf = create_transform(
            size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, re_prob=0.25,
            re_mode="pixel", re_count=1, interpolation="bicubic", mean=tuple(mean), std=tuple(std),
        )  # fmt: skip
        return lambda img: (tf(img), False)
    if recipe == "psa":
        body = T.Compose([
            T.RandomResizedCrop(size, scale=(0.3, 1.0), ratio=(0.75, 1.333)),
            T.ColorJitter(0.3, 0.3, 0.3, 0.1), *norm,
        ])  # fmt: skip
        return _with_flip(body)
    if recipe == "light":
        return _with_flip(T.Compose([T.Resize((size, size)), T.ColorJitter(0.1, 0.1, 0.1), *norm]))
    if recipe == "none":
        tf = T.Compose([T.Resize((size, size)), *norm])
        return lambda img: (tf(img), False)
    raise ConfigError(f"unknown augmentation '{recipe}'; choose from {', '.join(RECIPES)}")


def _with_flip(tf: Callable) -> Callable:
    def apply(img: Image.Image) -> tuple[torch.Tensor, bool]:
        x = tf(img)
        flip = bool(torch.rand(()) < 0.5)
        return (x.flip(-1) if flip else x), flip

    return apply
