"""Typed dataset records and metadata shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the label PNGs' colours: their on-disk format (artifacts/labels.py) owns them
from usage_cli.artifacts.labels import voc_palette

IGNORE_INDEX = 255


@dataclass(frozen=True)
class Record:
    """One image of a split.

    ``labels`` holds the present foreground classes as *mask label values* (1..K; background 0
    is never listed). An empty tuple is a valid all-background image.
    """

    id: str
    image_path: Path
    mask_path: Path | None
    labels: tuple[int, ...]

    def multi_hot(self, num_classes: int) -> np.ndarray:
        """Image-level label as a float32 vector over the K foreground classes."""
        vec = np.zeros(num_classes, dtype=np.float32)
        for c in self.labels:
            vec[c - 1] = 1.0
        return vec


@dataclass(frozen=True)
class DatasetMeta:
    """Class names (foreground only, K of them), palette and ignore index of a dataset."""

    name: str
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    palette: tuple[int, ...] = field(default_factory=lambda: tuple(voc_palette()))

    @property
    def num_classes(self) -> int:
        """Number of foreground classes K (the masks hold 0..K and 255)."""
        return len(self.class_names)

    @property
    def all_names(self) -> tuple[str, ...]:
        """Names of the K+1 label values, background first."""
        return ("background", *self.class_names)


@dataclass(frozen=True)
class Dataset:
    meta: DatasetMeta
    records: tuple[Record, ...]
    root: Path
    split: str

    def __len__(self) -> int:
        return len(self.records)

    def by_id(self) -> dict[str, Record]:
        return {r.id: r for r in self.records}
