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
    "psa-labels": "psa_labels",
    "train-aff": "train_aff",
    "psa-walk": "psa_walk",
    "train-seg": "train_seg",
    "predict-seg": "predict_seg",
    "evaluate": "evaluate",
    "report": "report",
}


def _load() -> dict[str, Callable]:
    """Every listed command; a module that is missing or fails to import is an error, never skipped."""
    return {name: importlib.import_module(f"usage_cli.commands.{module}").command for name, module in COMMAND_MODULES.items()}


COMMANDS = _load()
