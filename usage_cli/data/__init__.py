"""Datasets: a plain registry (name -> loader function returning a :class:`Dataset` of sorted
records) and :class:`DataSpec`, the dataset options every stage shares."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usage_cli.data import coco, folder, voc
from usage_cli.data.records import IGNORE_INDEX, Dataset, DatasetMeta, Record, voc_palette
from usage_cli.errors import ConfigError, DatasetError

Loader = Callable[..., Dataset]

# a new dataset layout: a module with a ``load(root, split, *, split_file, classes_file,
# require_images)`` function (and ``allow_unlabelled`` where photos may lack a label), and one line here
LOADERS: dict[str, Loader] = {"voc": voc.load, "coco": coco.load, "folder": folder.load, "images": folder.load_images}


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def load_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    split_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    require_images: bool = True,
    allow_unlabelled: bool = False,
) -> Dataset:
    """Load the records of ``split`` of dataset ``name`` at ``root``.

    ``require_images=False`` accepts ids whose image file is absent (``evaluate`` reads only masks);
    ``allow_unlabelled`` leaves out the photos a ``folder`` dataset's metadata has no row for.
    """
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset '{name}'; known: {', '.join(sorted(LOADERS))}")
    loader, extra = LOADERS[name], {}
    if allow_unlabelled:
        if "allow_unlabelled" not in inspect.signature(loader).parameters:
            raise ConfigError(f"--allow-unlabelled: --dataset {name} lists its images itself; it is for --dataset folder")
        extra["allow_unlabelled"] = True
    return loader(Path(root), split, split_file=split_file, classes_file=classes_file, require_images=require_images, **extra)


@dataclass(frozen=True)
class DataSpec:
    """The dataset options of a stage (``--dataset --root --split --split-file --classes
    --allow-unlabelled``)."""

    dataset: str
    root: Path
    split: str
    split_file: Path | None = None
    classes_file: Path | None = None
    allow_unlabelled: bool = False

    @classmethod
    def of(cls, cfg: Any) -> DataSpec:
        """The spec of any stage config holding the dataset fields."""
        return cls(cfg.dataset, cfg.root, cfg.split, cfg.split_file, cfg.classes_file, getattr(cfg, "allow_unlabelled", False))

    def load(self, split: str | None = None, split_file: str | Path | None = None, *, require_images: bool = True) -> Dataset:
        """This dataset's ``split`` (default: the spec's, with its split file), or another split of it."""
        if split is None and split_file is None:
            split, split_file = self.split, self.split_file
        return load_dataset(self.dataset, self.root, split or self.split, split_file=split_file,
                            classes_file=self.classes_file, require_images=require_images,
                            allow_unlabelled=self.allow_unlabelled)  # fmt: skip


__all__ = ["IGNORE_INDEX", "LOADERS", "DataSpec", "Dataset", "DatasetMeta", "Record", "dataset_names", "load_dataset", "voc_palette"]
