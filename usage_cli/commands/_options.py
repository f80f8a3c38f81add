"""Options that several commands share — the dataset options (one help text each, read into a
``data.DataSpec`` by the stages), quiet, and the GPU / multi-GPU ones; not a command. Torch-free, so
that ``usage --help`` stays fast: ``TIMEOUT_MIN`` equals ``engine.distributed.DEFAULT_TIMEOUT_MIN``
(a test checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TIMEOUT_MIN = 60.0

Device = Annotated[str, typer.Option(help="auto (CUDA when PyTorch sees a GPU), cpu, cuda or cuda:N.")]
Amp = Annotated[
    bool | None,
    typer.Option(
        "--amp/--no-amp",
        help="Mixed precision. Default: on for CUDA, off on the CPU (float32); --amp on the CPU runs bfloat16 autocast.",
        show_default=False,
    ),
]
SyncBn = Annotated[bool, typer.Option(help="Under torchrun on GPUs: BatchNorm statistics over all processes (SyncBatchNorm), for CNN backbones.")]
Timeout = Annotated[float, typer.Option(help="Under torchrun: minutes a process may wait at a collective (NCCL's own default, 10, is shorter than rank 0's solo work on large datasets).")]

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
Quiet = Annotated[bool, typer.Option(help="No progress lines.")]
