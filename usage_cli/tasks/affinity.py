"""AffinityNet training for the shared loop: the confident-label dataset and the affinity task.

Items are an augmented image crop and its confident label (0 background, 1..K classes, 255 the
uncertain band and the crop padding) sampled at the network's feature stride. The task turns
the features into pair affinities within the radius and applies PSA's balanced loss; the new
projection layers train at 10x the backbone's learning rate (PSA's scratch layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from usage_cli.algorithms.affinity import affinity_loss, pair_distance, pair_labels
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


def read_confident_png(path: Path, num_classes: int) -> np.ndarray:
    """A confident-label PNG written by psa-labels: palette of 256 colours, values 0..K or 255."""

    try:
        with Image.open(path) as img:
            palette = img.getpalette() if img.mode == "P" else None
    except FileNotFoundError as e:
        raise ArtifactError(f"{path}: confident label not found; rerun `usage psa-labels`") from e
    except OSError as e:
        raise ArtifactError(f"{path}: unreadable label PNG ({e}); delete it and rerun `usage psa-labels`") from e
    if palette is None or len(palette) != 256 * 3:
        n = "no" if palette is None else f"a {len(palette) // 3}-colour"
        raise ArtifactError(
            f"{path}: label PNG has {n} palette, expected the 256-colour VOC palette psa-labels writes; "
            "delete it and rerun `usage psa-labels`"
        )
    label = read_label_png(path)
    bad = (label > num_classes) & (label != IGNORE_INDEX)
    if bad.any():
        raise ArtifactError(f"{path}: label value {int(label[bad].max())} outside 0..{num_classes} and 255")
    return label


def sample_at_stride(label: np.ndarray, stride: int) -> np.ndarray:
    """The label at the centre pixel of every stride x stride block (nearest-neighbour downsampling)."""
    c = stride // 2
    return label[c::stride, c::stride]


class ConfidentLabelSet(torch.utils.data.Dataset):
    """{"image": 3 x S x S, "label": S/stride x S/stride int64} from images and confident-label PNGs;
    images normalised by ``norm`` (mean, std: what the network expects), crops padded with its mean."""

    def __init__(
        self,
        records: Sequence[Record],
        label_dir: Path,
        num_classes: int,
        *,
        crop: int,
        stride: int,
        scale: tuple[float, float] = (0.7, 1.3),
        norm: tuple = (IMAGENET_MEAN, IMAGENET_STD),
    ):
        self.records = list(records)
        self.paths = [label_path(label_dir, r.id) for r in self.records]
        self.num_classes, self.crop, self.stride, self.scale, self.norm = num_classes, crop, stride, scale, norm

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec, path = self.records[i], self.paths[i]
        image, label = read_image(rec.image_path), read_confident_png(path, self.num_classes)
        if label.shape != image.shape[:2]:
            raise ArtifactError(f"{path}: size {label.shape[::-1]} differs from image {rec.image_path}; rerun `usage psa-labels`")
        # the loop seeds torch per epoch and worker, so the numpy draws follow it
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
        image, (label,) = random_scale_crop_flip(image, [label], crop=self.crop, scale=self.scale, rng=rng, image_fill=mean_pixel(self.norm[0]))
        small = np.ascontiguousarray(sample_at_stride(label, self.stride))
        return {"image": normalize(image, *self.norm), "label": torch.from_numpy(small.astype(np.int64))}


class AffinityTask(nn.Module):
    """``forward(batch)`` -> {"loss", "bg_loss", "fg_loss", "neg_loss"} for the shared loop."""

    def __init__(self, net: nn.Module, offsets: Sequence[tuple[int, int]], head_lr_mult: float = 10.0):
        super().__init__()
        self.net = net
        self.offsets = list(offsets)
        self.head_lr_mult = head_lr_mult

    def param_groups(self, lr: float) -> list[dict]:
        return backbone_head_groups(self.net.backbone_parameters(), self.net.head_parameters(), lr, self.head_lr_mult)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat = self.net(batch["image"]).float()
        label = batch["label"]
        if feat.shape[-2:] != label.shape[-2:]:
            raise ValueError(f"feature grid {tuple(feat.shape[-2:])} does not match label grid {tuple(label.shape[-2:])}")
        dist = pair_distance(feat, self.offsets)
        return affinity_loss(dist, *pair_labels(label, self.offsets))
