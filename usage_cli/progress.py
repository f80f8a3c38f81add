"""One rich progress factory for every stage; quiet when asked or when stderr is not a terminal."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(quiet: bool = False) -> Progress:
    console = Console(stderr=True)
    disable = quiet or not sys.stderr.isatty()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=disable,
        transient=False,
    )


def log(msg: str, quiet: bool = False) -> None:
    """A status line on stderr (stdout stays for results)."""
    if not quiet:
        Console(stderr=True, highlight=False).print(msg)
