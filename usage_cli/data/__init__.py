"""Dataset registry: a name maps to a plain function returning a :class:`Dataset` of sorted records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from usage_cli.data.records import IGNORE_INDEX, Dataset, DatasetMeta, Record, voc_palette
from usage_cli.errors import DatasetError

Loader = Callable[..., Dataset]
_LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return deco


def dataset_names() -> list[str]:
    _ensure_loaded()
    return sorted(_LOADERS)


def load_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    split_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    require_images: bool = True,
) -> Dataset:
    """Load the records of ``split`` of dataset ``name`` at ``root``.

    ``require_images=False`` accepts ids whose image file is absent (``evaluate`` reads only masks).
    """
    _ensure_loaded()
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset '{name}'; known: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[name](
        Path(root), split, split_file=split_file, classes_file=classes_file, require_images=require_images
    )


def _ensure_loaded() -> None:
    # importing the loader modules registers them
    from usage_cli.data import coco, voc  # noqa: F401


__all__ = ["IGNORE_INDEX", "Dataset", "DatasetMeta", "Record", "dataset_names", "load_dataset", "register", "voc_palette"]
