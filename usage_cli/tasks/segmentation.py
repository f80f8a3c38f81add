"""Segmentation training for the shared loop: pseudo-mask dataset and the cross-entropy task.

The dataset pairs each image of a split with its pseudo mask ``<masks>/<id>.png`` and applies
random scale / crop / flip (crop padding = ignore label 255). The task is per-pixel cross
entropy with 255 ignored; the head (ASPP, decoder, classifier) trains at 10x the backbone's rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from usage_cli.artifacts.labels import label_path, read_label_png
from usage_cli.data.io import read_image
from usage_cli.data.joint_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    mean_pixel,
    normalize,
    random_scale_crop_flip,
)
from usage_cli.data.records import IGNORE_INDEX, Record
from usage_cli.engine.optim import backbone_head_groups
from usage_cli.errors import ArtifactError


def mask_paths(records: Sequence[Record], masks: Path) -> list[Path]:
    """``<masks>/<id>.png`` for every record; a missing one is an error naming it."""
    paths = [label_path(masks, r.id) for r in records]
    missing = [p for p in paths if not p.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ArtifactError(
            f"{missing[0]}: pseudo mask not found{more}; the masks folder does not cover this split — "
            "rerun `usage refine-psa` on the same split"
        )
    return paths


class PseudoMaskDataset(torch.utils.data.Dataset):
    """(image, pseudo mask) pairs, augmented; items are {"image": 3xSxS float, "label": SxS int64}, the
    image normalised by ``norm`` (mean, std: what the network expects), crops padded with its mean."""

    def __init__(
        self,
        records: Sequence[Record],
        masks: Path,
        num_classes: int,
        *,
        crop: int,
        scale: tuple[float, float] = (0.7, 1.3),
        flip: bool = True,
        norm: tuple = (IMAGENET_MEAN, IMAGENET_STD),
    ):
        self.records = list(records)
        self.paths = mask_paths(self.records, masks)
        self.num_classes = num_classes
        self.crop, self.scale, self.flip, self.norm = crop, scale, flip, norm

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rec, path = self.records[i], self.paths[i]
        image, mask = read_image(rec.image_path), read_label_png(path)
        if mask.shape != image.shape[:2]:
            raise ArtifactError(f"{path}: mask size {mask.shape[::-1]} differs from image {rec.image_path} {image.shape[1::-1]}")
        bad = (mask > self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            raise ArtifactError(f"{path}: label value {int(mask[bad].max())} outside 0..{self.num_classes} and 255")
        return image, mask

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask = self.load(i)
        # torch's generator is seeded by the loop (and per worker), so numpy draws follow it
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
        image, (mask,) = random_scale_crop_flip(image, [mask], crop=self.crop, scale=self.scale, flip=self.flip, rng=rng, image_fill=mean_pixel(self.norm[0]))
        return {"image": normalize(image, *self.norm), "label": torch.from_numpy(mask.astype(np.int64))}


def seg_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross entropy over the non-ignored pixels (zero, with gradient, when all are ignored).

    The sum divided by the count of valid pixels: no branch on the data, so no host sync."""
    valid = (label != ignore_index).sum()
    total = F.cross_entropy(logits.float(), label, ignore_index=ignore_index, reduction="sum")
    return total / valid.clamp_min(1).to(total.dtype)


class SegmentationTask(nn.Module):
    """``forward(batch)`` -> {"loss", "pixel_acc"} for :func:`usage_cli.engine.loop.fit`."""

    def __init__(self, net: nn.Module, head_lr_mult: float = 10.0):
        super().__init__()
        self.net = net
        self.head_lr_mult = head_lr_mult

    def param_groups(self, lr: float) -> list[dict]:
        return backbone_head_groups(self.net.backbone_parameters(), self.net.head_parameters(), lr, self.head_lr_mult)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.net(batch["image"])
        label = batch["label"]
        loss = seg_loss(logits, label)
        with torch.no_grad():
            valid = label != IGNORE_INDEX
            correct = (logits.argmax(1) == label) & valid
            acc = correct.sum().float() / valid.sum().clamp(min=1).float()
        return {"loss": loss, "pixel_acc": acc}
