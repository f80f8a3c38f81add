"""Datasets: a plain registry (name -> loader function returning a :class:`Dataset` of sorted
records); :class:`DataSpec`, the dataset options every stage shares, is ``usage_cli/dataspec.py``'s
(torch- and numpy-free, for the commands) and loads through :func:`load_dataset`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from usage_cli.data import coco, folder, voc
from usage_cli.data.records import IGNORE_INDEX, Dataset, DatasetMeta, Record, voc_palette
from usage_cli.dataspec import DataSpec
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


__all__ = ["IGNORE_INDEX", "LOADERS", "DataSpec", "Dataset", "DatasetMeta", "Record", "dataset_names", "load_dataset", "voc_palette"]
