"""The ``usage`` command line: thin Typer commands over ``usage_cli.stages.*.run``.

Each command module in ``usage_cli/commands/`` defines one function; this file only registers
them. User errors (:class:`usage_cli.errors.UsageError`) become one red line and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

from usage_cli import __version__
from usage_cli.commands import COMMANDS
from usage_cli.errors import UsageError, os_error_line

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="usage",
    help="USAGE weakly supervised semantic segmentation, stage by stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def guard(fn: Callable) -> Callable:
    """Turn user errors, and errors of the environment (OSError), into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, highlight=False)  # "[viz]" is text
            raise typer.Exit(code=2) from None
        except OSError as e:  # the environment (a full disk, a vanished file): one line, not a traceback
            err_console.print(f"[bold red]error:[/] {escape(os_error_line(e))}", markup=True, highlight=False)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: no partial output was published")
            raise typer.Exit(code=130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"usage {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """USAGE weakly supervised semantic segmentation, stage by stage."""


def _register() -> None:
    for name, fn in COMMANDS.items():
        app.command(name)(guard(fn))


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
