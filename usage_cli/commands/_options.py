"""Options that several commands share — the dataset options (:func:`data_options`, one bundle read
into a ``DataSpec``) and the run-time options (:func:`runtime_options`, one bundle read into a
``Runtime``), each with one help text; not a command. Torch-free, so that ``usage --help`` stays fast."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated

import typer

from usage_cli.dataspec import FIELDS as DATA_FIELDS
from usage_cli.dataspec import DataSpec
from usage_cli.presets import REFINE_PSA, preset_help
from usage_cli.runtime import OPTIONS, Runtime

# the run-time options' flags and help (their defaults are usage_cli/runtime.py's); a command may word
# one for what it does (refine-psa's --workers run the CRF too)
RUNTIME_FLAGS = {"amp": ("--amp/--no-amp",)}
RUNTIME_HELP = {
    "device": "auto (CUDA when PyTorch sees a GPU), cpu, cuda or cuda:N.",
    "amp": "Mixed precision. Default: on for CUDA, off on the CPU (float32); --amp on the CPU runs bfloat16 autocast.",
    "sync_bn": "Under torchrun on GPUs: BatchNorm statistics over all processes (SyncBatchNorm), for CNN backbones.",
    "timeout": "Under torchrun: minutes a process may wait at a collective (NCCL's own default, 10, is shorter than rank 0's solo work on large datasets).",
    "workers": "Worker processes.",
    "seed": "Random seed.",
    "resume": "Continue from OUT/last.pt (--epochs may grow: the schedule is recomputed).",
    "force": "Replace a finished or unfinished run of other options in OUT.",
    "quiet": "No progress lines.",
    "out_in_root": "Write outputs inside the data set's root (refused by default: the data set's files are looked up there).",
    "tensorboard": "Also write each epoch's log.jsonl figures as TensorBoard events in OUT/tensorboard/ (needs usage-wsss's `tensorboard` extra, or pip install tensorboard).",
}
WORKERS_DEFAULT = "Default: by device: 4 per process on a GPU (at most the CPUs per process), 0 on the CPU."



def runtime_options(stage: str, **help: str) -> Callable[[Callable], Callable]:
    """Give a command the run-time flags of ``stage`` (``runtime.OPTIONS[stage]``), in place of its
    ``runtime: Runtime`` parameter, which receives them as one :class:`~usage_cli.runtime.Runtime`.
    ``help`` rewords a flag's help for this command (``workers="CRF worker processes."``)."""

    def text(name: str) -> str:
        return help.get(name, RUNTIME_HELP[name]) + (f" {WORKERS_DEFAULT}" if name == "workers" else "")

    return _block_options("runtime", Runtime, OPTIONS[stage], text, RUNTIME_FLAGS)


def data_options(**help: str) -> Callable[[Callable], Callable]:
    """Give a command the dataset flags (every field of :class:`~usage_cli.dataspec.DataSpec`, with the
    help and flag its field declares), in place of its ``data: DataSpec = DataSpec(split=...)``
    parameter (whose defaults the flags show), which receives them as one ``DataSpec``. ``help`` words
    a flag for this command: ``split`` always (what the split is for)."""
    meta = {f.name: f.metadata for f in dataclasses.fields(DataSpec)}
    flags = {n: (m["flag"],) for n, m in meta.items() if "flag" in m}
    return _block_options("data", DataSpec, DATA_FIELDS, lambda name: help.get(name, meta[name].get("help", "")), flags)


def _block_options(param: str, block: type, names: tuple[str, ...], text: Callable[[str], str], flags: dict) -> Callable[[Callable], Callable]:
    """A decorator replacing the command's parameter ``param`` (a ``block`` dataclass, its default the
    defaults shown) by one flag per option ``names``, and handing them to it as one ``block``."""
    hints = typing.get_type_hints(block)

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        defaults = sig.parameters[param].default

        def flag(name: str) -> inspect.Parameter:
            option = typer.Option(*flags.get(name, ()), help=text(name), show_default=getattr(defaults, name) is not None)
            return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name), annotation=Annotated[hints[name], option])

        params = []
        for p in sig.parameters.values():
            params += [flag(n) for n in names] if p.name == param else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(fn)
        def command(**kwargs):
            value = block(**{n: kwargs.pop(n) for n in names})
            return fn(**kwargs, **{param: value})

        command.__signature__ = sig.replace(parameters=params)
        return command

    return decorate


def number_pair(text: str, option: str) -> tuple[float, float]:
    """``"A:B"`` (or one number ``"A"`` for ``A:A``) as two floats; one-line ConfigError otherwise."""
    from usage_cli.errors import ConfigError

    a, _, b = text.partition(":")
    try:
        return float(a), float(b or a)
    except ValueError:
        raise ConfigError(f"{option} must be LOW:HIGH (two numbers) or one number, got {text!r}") from None


# the random walk's options (psa-walk, and refine-psa, which runs it): None takes the preset's value
Beta = Annotated[float | None, typer.Option(help=preset_help("beta", "Affinity sharpening power.", REFINE_PSA))]
Logt = Annotated[int | None, typer.Option(help=preset_help("logt", "log2 of the number of walk steps.", REFINE_PSA))]
BgMode = Annotated[str | None, typer.Option(help=preset_help("bg_mode", "Walk background: power or const.", REFINE_PSA))]
BgPower = Annotated[float | None, typer.Option(help=preset_help("bg_power", "Background (1-max)^power in the walk.", REFINE_PSA))]
BgConst = Annotated[float | None, typer.Option(help=preset_help("bg_const", "Constant background score in the walk.", REFINE_PSA))]
WalkNorm = Annotated[str | None, typer.Option(help=preset_help("walk_norm", "The walked class scores before the arg-max: none (as walked), class-max (each / its max, as the seeds) or max (all / their joint max, IRN).", REFINE_PSA))]
Radius = Annotated[int, typer.Option(help="Affinity radius on the feature grid.")]
Walk = Annotated[str, typer.Option(help="Random walk: auto, dense (GPU) or local (low memory).")]
