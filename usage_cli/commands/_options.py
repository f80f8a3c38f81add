"""Options that several commands share — the dataset options (one help text each, read into a
``data.DataSpec`` by the stages) and the run-time options (:func:`runtime_options`, one bundle
for every stage); not a command. Torch-free, so that ``usage --help`` stays fast."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from usage_cli.presets import REFINE_PSA, preset_help
from usage_cli.runtime import DEFAULTS, OPTIONS, Runtime

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
}
WORKERS_DEFAULT = "Default: by device: 4 per process on a GPU (at most the CPUs per process), 0 on the CPU."


def runtime_options(stage: str, **help: str) -> Callable[[Callable], Callable]:
    """Give a command the run-time flags of ``stage`` (``runtime.OPTIONS[stage]``), in place of its
    ``runtime: Runtime`` parameter, which receives them as one :class:`~usage_cli.runtime.Runtime`.
    ``help`` rewords a flag's help for this command (``workers="CRF worker processes."``)."""
    names = OPTIONS[stage]
    hints = typing.get_type_hints(Runtime)

    def flag(name: str) -> inspect.Parameter:
        text = help.get(name, RUNTIME_HELP[name]) + (f" {WORKERS_DEFAULT}" if name == "workers" else "")
        shown = getattr(DEFAULTS, name) is not None
        option = typer.Option(*RUNTIME_FLAGS.get(name, ()), help=text, show_default=shown)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(DEFAULTS, name), annotation=Annotated[hints[name], option])

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        params = []
        for p in sig.parameters.values():
            params += [flag(n) for n in names] if p.name == "runtime" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(fn)
        def command(**kwargs):
            runtime = Runtime(**{n: kwargs.pop(n) for n in names})
            return fn(**kwargs, runtime=runtime)

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


# the dataset options (the split itself says what it is for in each command)
Dataset = Annotated[str, typer.Option(help="Dataset loader: voc or coco.")]
Root = Annotated[Path | None, typer.Option(help="Dataset root. Required (here or in --config).")]
SplitFile = Annotated[Path | None, typer.Option(help="Explicit split list (bare ids or PSA pairs), instead of the split's own list.")]
Classes = Annotated[Path | None, typer.Option(help="classes.txt replacing the dataset's class names.")]

# the random walk's options (psa-walk, and refine-psa, which runs it): None takes the preset's value
Beta = Annotated[float | None, typer.Option(help=preset_help("beta", "Affinity sharpening power.", REFINE_PSA))]
Logt = Annotated[int | None, typer.Option(help=preset_help("logt", "log2 of the number of walk steps.", REFINE_PSA))]
BgMode = Annotated[str | None, typer.Option(help=preset_help("bg_mode", "Walk background: power or const.", REFINE_PSA))]
BgPower = Annotated[float | None, typer.Option(help=preset_help("bg_power", "Background (1-max)^power in the walk.", REFINE_PSA))]
BgConst = Annotated[float | None, typer.Option(help=preset_help("bg_const", "Constant background score in the walk.", REFINE_PSA))]
WalkNorm = Annotated[str | None, typer.Option(help=preset_help("walk_norm", "The walked class scores before the arg-max: none (as walked), class-max (each / its max, as the seeds) or max (all / their joint max, IRN).", REFINE_PSA))]
Radius = Annotated[int, typer.Option(help="Affinity radius on the feature grid.")]
Walk = Annotated[str, typer.Option(help="Random walk: auto, dense (GPU) or local (low memory).")]
