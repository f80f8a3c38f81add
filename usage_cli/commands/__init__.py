"""One module per command; each exposes ``command`` (a Typer-annotated function).

Heavy imports (torch, timm) happen inside the functions so ``usage --help`` stays fast.
Commands are listed in pipeline order (the order of ``usage --help``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# command name -> module under usage_cli.commands
COMMAND_MODULES = {
    "synth": "synth",
    "train-cls": "train_cls",
    "gen-seeds": "gen_seeds",
    "refine-psa": "refine_psa",
    "train-seg": "train_seg",
    "predict-seg": "predict_seg",
    "evaluate": "evaluate",
    "report": "report",
}


def _load() -> dict[str, Callable]:
    commands = {}
    for name, module in COMMAND_MODULES.items():
        qualified = f"usage_cli.commands.{module}"
        try:
            mod = importlib.import_module(qualified)
        except ModuleNotFoundError as e:
            if e.name != qualified:  # a real missing dependency inside the module: loud
                raise
            continue  # tests/test_cli.py checks that every listed command is present
        commands[name] = mod.command
    return commands


COMMANDS = _load()
