"""``metrics.json`` (``usage evaluate``): the scores, and a ``manifest`` block saying what made them.

The score keys are listed in docs/evaluate.md; ``usage report`` reads them. The ``manifest`` block has
the keys of a stage's ``manifest.json`` (docs/artifacts.md): a metrics file is one file, often one of
several in a folder, so its provenance travels inside it rather than beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from usage_cli.artifacts.atomic import write_text_atomic

FILENAME = "metrics.json"  # the name the docs and the Makefile give it (evaluate's --out names the file)


def write_metrics(path: str | Path, result: dict[str, Any], manifest: dict[str, Any]) -> Path:
    """Write ``result`` with ``manifest`` as its last key, atomically."""
    if "manifest" in result:
        raise ValueError("metrics hold a 'manifest' key of their own")
    write_text_atomic(path, json.dumps({**result, "manifest": manifest}, indent=2, default=str) + "\n")
    return Path(path)
