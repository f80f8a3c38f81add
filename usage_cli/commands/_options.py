"""Options that several commands share (GPU / multi-GPU); not a command. Torch-free, so that
``usage --help`` stays fast: ``TIMEOUT_MIN`` equals ``engine.distributed.DEFAULT_TIMEOUT_MIN`` (a test
checks)."""

from __future__ import annotations

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
