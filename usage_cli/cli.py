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
from typer.core import TyperGroup

from usage_cli import __version__
from usage_cli.commands import COMMANDS
from usage_cli.errors import UsageError, os_error_line

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

class _OneLineErrors(TyperGroup):
    """The command group: a command line that cannot be parsed (``--epochs abc``, an unknown option) is one
    red line naming the option and where the help is, as every other error; ``usage`` alone shows the help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            err_console.print("Aborted!")
            sys.exit(1)
        except Exception as e:  # click's own parse errors (its exception classes are typer's private module)
            if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
                raise
            if type(e).__name__ == "NoArgsIsHelpError":  # no arguments: the help, as typer shows it
                return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
            ctx = getattr(e, "ctx", None)
            see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err_console.print(f"[bold red]error:[/] {escape(' '.join(e.format_message().split()))}{see}", markup=True, highlight=False)
            sys.exit(e.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="usage",
    help="USAGE weakly supervised semantic segmentation, stage by stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
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
