"""Does an artifact belong to this dataset? Its class names, compared one by one (not only counted)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from usage_cli.errors import ArtifactError


def check_class_names(path: str | Path, names: Sequence[str] | None, dataset_names: Sequence[str], rerun: str) -> None:
    """One line naming the first differing class when ``names`` (an artifact's) are not the dataset's.

    ``rerun`` says what to do, e.g. "rerun `usage gen-seeds` on this dataset". Artifacts that record
    no names (``None``) are checked by their count elsewhere."""
    if names is None:
        return
    names, dataset_names = [str(n) for n in names], [str(n) for n in dataset_names]
    if len(names) != len(dataset_names):
        raise ArtifactError(f"{path}: made for {len(names)} classes but the dataset has {len(dataset_names)}; {rerun}")
    diff = [(a, b) for a, b in zip(names, dataset_names, strict=True) if a != b]
    if diff:
        more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
        raise ArtifactError(
            f"{path}: made for other classes than the dataset's (class '{diff[0][0]}' where the dataset has "
            f"'{diff[0][1]}'{more}); {rerun}"
        )
