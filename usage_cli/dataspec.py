"""The dataset options every stage shares, as one frozen dataclass nested in each stage config
(``cfg.data``), the way the run-time block is (``usage_cli/blocks.py``).

A stage config declares ``data: DataSpec = DataSpec(split=<its default split>)`` under
``@takes_data``; its command gets the flags from ``commands/_options.py:data_options`` (help in
``DATA_HELP``); ``--config`` files, ``--print-config`` and manifests hold the options flat. So a new
dataset option is one field here (with its one default; listed in ``LATER``, so that runs recorded
before it still compare equal) and its help line. Torch- and numpy-free,
so that ``usage --help`` stays fast; the layouts themselves are ``usage_cli/data``'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from usage_cli.blocks import nest_flat
from usage_cli.errors import ConfigError


@dataclass(frozen=True)
class DataSpec:
    """The dataset options of a stage (``--dataset --root --split --split-file --classes
    --allow-unlabelled``)."""

    dataset: str = "voc"
    root: Path | None = None  # required (REQUIRED)
    split: str = "train_aug"
    split_file: Path | None = None
    classes_file: Path | None = None
    allow_unlabelled: bool = False
    REQUIRED: ClassVar[tuple[str, ...]] = ("root",)  # no stage runs without it: missing from flags and --config is one line
    # options that came after manifests recorded this block: in a manifest config only when set, so a run
    # that does not use them keeps the config (and hash) it always had, and reruns and resumes as before
    LATER: ClassVar[tuple[str, ...]] = ("allow_unlabelled",)

    def load(self, split: str | None = None, split_file: str | Path | None = None, *, require_images: bool = True) -> Any:
        """This dataset's ``split`` (default: the spec's, with its split file), or another split of it:
        a :class:`usage_cli.data.Dataset`."""
        from usage_cli.data import (
            load_dataset,  # deferred: this module is read by every command's --help
        )

        if self.root is None:
            raise ConfigError("missing option --root: give it on the command line or in the --config file")
        if split is None and split_file is None:
            split, split_file = self.split, self.split_file
        return load_dataset(self.dataset, self.root, split or self.split, split_file=split_file,
                            classes_file=self.classes_file, require_images=require_images,
                            allow_unlabelled=self.allow_unlabelled)  # fmt: skip


FIELDS = tuple(f.name for f in dataclasses.fields(DataSpec))


def takes_data(cls):
    """Class decorator of a stage config with a ``data: DataSpec`` field: its constructor also takes
    the dataset options flat (``GenSeedsConfig(ckpt=..., root=..., split="val")``)."""
    nest_flat(cls, "data", FIELDS)
    return cls
