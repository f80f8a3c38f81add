"""Option blocks nested in a stage config — the run-time block (``runtime: Runtime``) and the dataset
block (``data: DataSpec``) — that stay flat everywhere a user sees them.

A block is a frozen dataclass held by one field of the config. The config's constructor takes the
block's options flat as well (``TrainSegConfig(masks=..., root=..., device="cpu")``), folding them
into the block; ``--config`` files, ``--print-config`` and a manifest's ``config`` hold them as flat
keys in the block's place (``config.py``, ``artifacts/manifest.py:run_config``), reading which names a
block contributes from the class's ``FLAT_BLOCKS``. So a new option of a block is one field of its
dataclass. Torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def nest_flat(cls: type, field: str, names: tuple[str, ...], every: tuple[str, ...] | None = None) -> None:
    """Let ``cls`` (a config dataclass with the block field ``field``) take the block's options
    ``names`` flat, and record them in ``cls.FLAT_BLOCKS[field]``. ``every``: all the block's option
    names; one of them outside ``names`` is a TypeError, as any unknown argument."""
    every = names if every is None else every
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        flat = {k: kwargs.pop(k) for k in list(kwargs) if k in every}
        foreign = sorted(set(flat) - set(names))
        if foreign:
            raise TypeError(f"{cls.__name__} takes no {field} option {', '.join(foreign)} (it takes {', '.join(names)})")
        if flat:
            block = kwargs.get(field) or cls.__dataclass_fields__[field].default
            kwargs[field] = dataclasses.replace(block, **flat)
        init(self, *args, **kwargs)

    __init__.__doc__ = init.__doc__
    cls.__init__ = __init__
    cls.FLAT_BLOCKS = {**getattr(cls, "FLAT_BLOCKS", {}), field: names}


def flat_blocks(cfg: Any) -> dict[str, tuple[str, ...]]:
    """Block field -> the option names it contributes flat, of a config (or its class)."""
    return getattr(cfg if isinstance(cfg, type) else type(cfg), "FLAT_BLOCKS", {})


def flat_names(cfg: Any) -> list[str]:
    """The option names of a config as a user sees them: its fields, each block's options in its place."""
    blocks = flat_blocks(cfg)
    names: list[str] = []
    for f in dataclasses.fields(cfg):
        names += list(blocks[f.name]) if f.name in blocks else [f.name]
    return names


def unset_later_options(cfg: Any) -> tuple[str, ...]:
    """The options of ``cfg``'s blocks that came after manifests recorded them (a block's ``LATER``) and
    are at their default: a manifest config leaves them out, so it stays the one a run before them had."""
    out = []
    for field in flat_blocks(cfg):
        block = getattr(cfg, field)
        defaults = {f.name: f.default for f in dataclasses.fields(block)}
        out += [n for n in getattr(type(block), "LATER", ()) if getattr(block, n) == defaults[n]]
    return tuple(out)


def flat_values(cfg: Any) -> dict[str, Any]:
    """``{name: value}`` of :func:`flat_names` (block options read from their block)."""
    blocks, out = flat_blocks(cfg), {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out.update({n: getattr(v, n) for n in blocks[f.name]} if f.name in blocks else {f.name: v})
    return out


def with_flat(cfg: Any, values: dict[str, Any]) -> Any:
    """``cfg`` with ``values`` (flat names) replaced, block options inside their block."""
    blocks, values = flat_blocks(cfg), dict(values)
    for field, names in blocks.items():
        inner = {k: values.pop(k) for k in list(values) if k in names}
        if inner:
            values[field] = dataclasses.replace(getattr(cfg, field), **inner)
    return dataclasses.replace(cfg, **values)
