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
from usage_cli.artifacts.manifest import input_digest

FILENAME = "metrics.json"  # the name the docs and the Makefile give it (evaluate's --out names the file)


def write_metrics(path: str | Path, result: dict[str, Any], manifest: dict[str, Any]) -> Path:
    """Write ``result`` with ``manifest`` as its last key, atomically."""
    if "manifest" in result:
        raise ValueError("metrics hold a 'manifest' key of their own")
    write_text_atomic(path, json.dumps({**result, "manifest": manifest}, indent=2, default=str) + "\n")
    return Path(path)


def stale_inputs(metrics: dict[str, Any]) -> dict[str, str]:
    """The inputs of a metrics file that are no longer the files it scored: name -> what became of it
    (``<path> changed since it was scored ...`` / ``<path> is gone``), for each one whose recorded sha256
    differs from the file on disk now. A regenerated seed store or mask folder makes the scores stale;
    inputs recorded without a digest (PNGs made by hand) are not compared."""
    inputs = (metrics.get("manifest") or {}).get("inputs") or {}
    stale = {}
    for name, rec in inputs.items():
        if not isinstance(rec, dict) or not rec.get("sha256"):
            continue
        path = Path(rec.get("resolved") or rec.get("path") or "")
        now = input_digest(path, required=False) if path.exists() else None
        if now != rec["sha256"]:
            stale[name] = f"{path} is gone" if now is None else f"{path} changed since it was scored (its sha256 differs)"
    return stale
