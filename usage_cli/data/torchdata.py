"""torch Datasets over dataset records."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image

from usage_cli.data.io import read_image
from usage_cli.data.records import Record


class ClassificationSet(torch.utils.data.Dataset):
    """Image + multi-hot image-level label (+ index and flip flag, for per-image state such as OAA)."""

    def __init__(self, records: Sequence[Record], num_classes: int, transform: Callable):
        self.records = list(records)
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        image, flipped = self.transform(Image.fromarray(read_image(r.image_path)))
        return {
            "image": image,
            "label": torch.from_numpy(r.multi_hot(self.num_classes)),
            "index": torch.tensor(i),
            "flip": torch.tensor(flipped),
        }
