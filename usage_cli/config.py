"""Stage configs as files, for every command: ``--config FILE`` (JSON or YAML) read into the stage's
frozen config dataclass, and ``--print-config``, the resolved config as YAML on stdout.

Keys are the config's field names, exactly as ``--print-config`` prints them (``classes_file`` for
``--classes``, ``metrics`` for ``--metric``; some settings have no flag and only a key); the run-time
options (``device``, ``workers``, ...: ``usage_cli/runtime.py``) and the dataset options (``root``,
``split``, ...: ``usage_cli/dataspec.py``) are flat keys beside them. Flags given
on the command line win over the file, the file wins over the defaults. Relative paths in a file
are relative to the working directory, as on the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from usage_cli.artifacts.manifest import run_config  # the one config-to-JSON (torch-free)
from usage_cli.blocks import flat_blocks, flat_names, flat_values, with_flat
from usage_cli.errors import ConfigError

C = TypeVar("C")

ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="JSON or YAML file of option values, keys as --print-config prints them (flags win)."),
]
PrintConfig = Annotated[
    bool,
    typer.Option("--print-config", help="Print the resolved config as YAML on stdout and exit without running anything."),
]

# command-line option name -> config field, where the two differ
OPTION_FIELDS = {"classes": "classes_file", "metric": "metrics"}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON (``.json``) or YAML (any other suffix) file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: --config is a folder; give a JSON or YAML file (one that --print-config wrote)")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not part of the text
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid {kind} ({' '.join(str(e).split())})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: must hold a mapping of option names to values, not a {type(data).__name__}")
    return data


def option_names(cfg) -> list[str]:
    """The keys of a stage config as a file and ``--print-config`` hold them: its fields, with the
    options of its blocks (the run-time options it takes, ``runtime.OPTIONS``; the dataset options)
    flat in place of ``runtime`` and ``data`` (``usage_cli/blocks.py``)."""
    return flat_names(cfg)


def _hints(cfg) -> dict[str, Any]:
    """Option name -> its type, block options included."""
    hints = typing.get_type_hints(type(cfg))
    for field in flat_blocks(cfg):
        hints.update(typing.get_type_hints(type(getattr(cfg, field))))
    return hints


def _required_names(cfg) -> list[str]:
    """The required options: fields without a default, and a block's ``REQUIRED`` ones."""
    blocks = flat_blocks(cfg)
    names = [f.name for f in dataclasses.fields(cfg) if f.name not in blocks and _required(f)]
    return names + [n for field in blocks for n in getattr(type(getattr(cfg, field)), "REQUIRED", ())]


def _missing(cfg) -> list[str]:
    """The required options still unset."""
    values = flat_values(cfg)
    return [n for n in _required_names(cfg) if values.get(n) is None]


def merge_config(cfg: C, data: dict[str, Any], given: set[str] | frozenset[str] = frozenset(), source: str = "config") -> C:
    """``cfg`` with the values of ``data`` (type-checked) for every option not in ``given``; run-time
    options are flat keys (``device: cpu``), as --print-config prints them. Every value is type-checked,
    also those a flag overrides: a bad value in the file is an error, never silently ignored."""
    names = option_names(cfg)
    retired = getattr(type(cfg), "RETIRED_OPTIONS", {})  # options of earlier versions: said and skipped
    for k in sorted(set(data) & set(retired)):
        typer.echo(f"{source}: '{k}' is no longer an option ({retired[k]}); ignored", err=True)
    data = {k: v for k, v in data.items() if k not in retired}
    unknown = sorted(set(data) - set(names))
    if unknown:
        near = {m for k in unknown for m in difflib.get_close_matches(k, names, n=1)}
        hint = f" (did you mean {', '.join(sorted(near))}?)" if near else "; the keys are those --print-config prints"
        raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}{hint}")
    hints = _hints(cfg)
    required = _required_names(cfg)
    # a required option set to null is unset (as if the key were absent): a flag or the missing-option check fills it
    values = {k: _coerce(k, v, hints[k], source) for k, v in data.items() if not (v is None and k in required)}
    return with_flat(cfg, {k: v for k, v in values.items() if k not in given})


def given_options(ctx: typer.Context, cfg) -> set[str]:
    """The config options whose flags were given on the command line (not left at their defaults)."""
    names = set(option_names(cfg))
    given = set()
    for param in ctx.params:
        source = ctx.get_parameter_source(param)  # click's ParameterSource (typer may vendor click: compare names)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            field = param if param in names else OPTION_FIELDS.get(param)
            if field in names:
                given.add(field)
    return given


def apply_cli_config(
    ctx: typer.Context, cfg: C, config_file: Path | None, print_config: bool = False, resolve: Callable[[C], C] | None = None
) -> C:
    """The config of the running command: ``cfg`` (built from its flags) with the ``--config`` file's
    values for the options not given as flags. A required option missing from both is an error. With
    ``print_config``, print ``resolve(cfg)`` as YAML on stdout and exit 0 before any work."""
    if config_file is not None:
        cfg = merge_config(cfg, read_config_file(config_file), given_options(ctx, cfg), str(config_file))
    missing = _missing(cfg)
    if missing:
        flags = ", ".join(f"--{_option(n)}" for n in missing)
        raise ConfigError(f"missing option {flags}: give it on the command line or in the --config file")
    if print_config:
        typer.echo(dump_config(resolve(cfg) if resolve else cfg), nl=False)
        raise typer.Exit(0)
    return cfg


def dump_config(cfg) -> str:
    """The config as YAML, one key a line in field order, lists inline."""
    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    return yaml.dump(run_config(cfg), Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _option(field: str) -> str:
    back = {v: k for k, v in OPTION_FIELDS.items()}
    return back.get(field, field).replace("_", "-")


def _coerce(name: str, value, hint, source: str):
    """``value`` as the field's type: lists become tuples, strings paths, integers floats; else an error."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for t in options:
        origin, args = typing.get_origin(t) or t, typing.get_args(t)
        if origin is tuple and isinstance(value, (list, tuple)):
            elems = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
            if len(elems) == len(value):
                return tuple(_coerce(name, x, a, source) for x, a in zip(value, elems, strict=True))
        elif (t is Path and isinstance(value, str)) or (t is float and type(value) is int):
            return t(value)
        elif (origin in (bool, str, float, dict) and isinstance(value, origin)) or (t is int and type(value) is int):
            return value
    raise ConfigError(f"{source}: {name} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint) -> str:
    return str(hint).replace("pathlib.", "").replace("typing.", "").replace("<class '", "").replace("'>", "")
