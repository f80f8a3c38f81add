"""A chain's config composed of its steps' configs: the chain declares only what is its own (its
inputs, its ``--out``, an option whose meaning differs at the chain), and every other field is taken
from the step configs, with their types and defaults — so an option of a step is declared once, in
its stage, and the chain has it too."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def compose_config(
    name: str, steps: tuple[type, ...], own: list[tuple[str, Any, Any]], tail: list[tuple[str, Any, Any]], *,
    override: dict[str, tuple[Any, Any]] | None = None, internal: tuple[str, ...] = (), doc: str = "", module: str = __name__,
) -> type:
    """A frozen dataclass ``name``: the fields ``own`` (``(name, type, default)``, ``dataclasses.MISSING``
    for a required one), then every field of ``steps`` in their order (a name the steps share once:
    they must agree on its type and default), then ``tail``. ``own`` and ``tail`` replace a step's
    field of the same name; ``override`` (name -> (type, default)) gives a step's field another type
    and default in its place; ``internal`` are step fields the chain sets itself (a step's input
    that an earlier step writes)."""
    mine, override = {n for n, _, _ in own + tail}, override or {}
    taken: dict[str, tuple[Any, Any]] = {}  # name -> (type, default)
    for step in steps:
        hints = typing.get_type_hints(step)
        for f in dataclasses.fields(step):
            if f.name in mine or f.name in internal:
                continue
            spec = override.get(f.name, (hints[f.name], f.default))
            if taken.setdefault(f.name, spec) != spec:
                raise TypeError(f"{name}: the steps declare {f.name} differently ({taken[f.name]} and {spec})")
    fields = [_spec(*o) for o in own] + [_spec(n, t, d) for n, (t, d) in taken.items()] + [_spec(*t) for t in tail]
    cls = dataclasses.make_dataclass(name, fields, frozen=True)
    cls.__doc__, cls.__module__ = doc or cls.__doc__, module
    return cls


def _spec(name: str, type_: Any, default: Any) -> tuple:
    return (name, type_) if default is dataclasses.MISSING else (name, type_, dataclasses.field(default=default))


def pick(step: type, cfg: Any, **values: Any) -> Any:
    """The ``step`` config of a chain's ``cfg``: each of its fields from the chain's field of that
    name, ``values`` where the chain sets them itself."""
    return step(**{f.name: values[f.name] if f.name in values else getattr(cfg, f.name) for f in dataclasses.fields(step)})
