"""The layering of docs/architecture.md, checked on the source: which package may import which.

Read from every ``import`` / ``from ... import`` statement (top level and inside functions), so a
deferred import cannot hide a dependency that breaks a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "usage_cli"

# package -> packages it must never import (directly or by a function-level import)
FORBIDDEN = {
    "artifacts": {"data", "models", "engine", "tasks", "stages", "commands", "report", "algorithms"},
    "algorithms": {"stages", "commands", "tasks", "engine", "report"},
    "metrics": {"stages", "commands", "tasks", "engine", "models", "report"},
    "losses": {"stages", "commands", "tasks", "engine", "data", "report"},
    "models": {"stages", "commands", "tasks", "report"},
    "data": {"stages", "commands", "tasks", "engine", "models", "report"},
    "engine": {"stages", "commands", "report"},
    "tasks": {"stages", "commands", "report"},
    "stages": {"commands"},
    "report": {"commands"},
}


def _imports(path: Path) -> set[str]:
    """Every usage_cli module ``path`` imports, as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("usage_cli.")}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _package(path: Path) -> str | None:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_layer_rules(path):
    pkg = _package(path)
    bad = sorted(
        n for n in _imports(path) if pkg in FORBIDDEN and n.split(".")[1] in FORBIDDEN[pkg]
    )
    assert not bad, f"{path.relative_to(PKG)} ({pkg}) imports {bad}"


def test_stages_talk_only_through_files():
    """No stage imports another stage: they share artifacts on disk, and code through lower layers."""
    for path in (PKG / "stages").glob("*.py"):
        other = {n.split(".")[2] for n in _imports(path) if n.startswith("usage_cli.stages.") and len(n.split(".")) > 2}
        other.discard(path.stem)
        assert not other, f"stages/{path.name} imports stage(s) {sorted(other)}"


def test_chains_sit_between_the_commands_and_the_stages():
    """A chain (chains/: refine-psa) runs stages in order: only a command imports a chain, and a chain
    imports no command (the stages below it keep their own rules above)."""
    for path in _modules():
        pkg = _package(path)
        chains = sorted(n for n in _imports(path) if n.split(".")[1] == "chains")
        if pkg not in ("commands", "chains"):
            assert not chains, f"{path.relative_to(PKG)} ({pkg}) imports {chains}"
        if pkg == "chains":
            bad = sorted(n for n in _imports(path) if n.split(".")[1] in ("commands", "report"))
            assert not bad, f"{path.relative_to(PKG)} imports {bad}"
