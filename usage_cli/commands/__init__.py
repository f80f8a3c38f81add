"""One module per command; each exposes ``command`` (a Typer-annotated function).

Heavy imports (torch, timm) happen inside the functions so ``usage --help`` stays fast.
"""

from __future__ import annotations

from usage_cli.commands import evaluate, synth

COMMANDS = {
    "synth": synth.command,
    "evaluate": evaluate.command,
}
