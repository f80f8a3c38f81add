"""The dataset options every stage shares, as one frozen dataclass nested in each stage config
(``cfg.data``), the way the run-time block is (``usage_cli/blocks.py``).

A stage config declares ``data: DataSpec = DataSpec(split=<its default split>)`` under
``@takes_data``; its command gets the flags from ``commands/_options.py:data_options`` (each field's
help from its metadata); ``--config`` files, ``--print-config`` and manifests hold the options flat.
So a new dataset option is one field here — its one default and its help (listed in ``LATER``, so
that runs recorded before it still compare equal) — and what it does in ``usage_cli/data``. Torch- and numpy-free,
so that ``usage --help`` stays fast; the layouts themselves are ``usage_cli/data``'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from usage_cli.blocks import nest_flat
from usage_cli.errors import ConfigError


@dataclass(frozen=True)
class DataSpec:
    """The dataset options of a stage (``--dataset --root --split --split-file --classes
    --allow-unlabelled``)."""

    # each option's flag help (and flag, where it is not --<name>) is declared with it; the split's help
    # is each command's own (what the split is for there)
    dataset: str = field(default="voc", metadata={"help": "Dataset loader: voc, coco, folder or images."})
    root: Path | None = field(default=None, metadata={"help": "Dataset root. Required (here or in --config)."})  # REQUIRED
    split: str = "train_aug"
    split_file: Path | None = field(default=None, metadata={"help": "Explicit split list (bare ids or PSA pairs), instead of the split's own list."})
    classes_file: Path | None = field(default=None, metadata={"help": "classes.txt replacing the dataset's class names.", "flag": "--classes"})
    allow_unlabelled: bool = field(default=False, metadata={"help": "Leave out the photos a folder dataset's metadata has no row for (--dataset folder)."})
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
