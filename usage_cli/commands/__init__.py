"""One module per command; each exposes ``command`` (a Typer-annotated function).

Heavy imports (torch, timm) happen inside the functions so ``usage --help`` stays fast.
Commands are those of ``usage_cli/registry.py``, in its (pipeline) order: the order of ``usage --help``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from usage_cli.registry import STAGES

# command name -> module under usage_cli.commands (every command of the registry, in its order)
COMMAND_MODULES = {s.name: s.module for s in STAGES}


def _load() -> dict[str, Callable]:
    """Every listed command; a module that is missing or fails to import is an error, never skipped."""
    return {name: importlib.import_module(f"usage_cli.commands.{module}").command for name, module in COMMAND_MODULES.items()}


COMMANDS = _load()
