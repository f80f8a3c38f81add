"""Small readers shared by the dataset loaders: split lists, class lists, cls_labels.npy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from usage_cli.errors import DatasetError


def read_split_file(path: Path) -> list[str]:
    """Ids of a split list: bare ids (IRN/MCTformer) or PSA/SEAM pairs (`/JPEGImages/X.jpg /Seg.../X.png`)."""
    ids = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0]
        ids.append(Path(first).stem if ("/" in first or "." in Path(first).name[-5:]) else first)
    if not ids:
        raise DatasetError(f"{path}: split file lists no ids")
    return ids


def read_class_names(classes_file: str | Path | None, candidates: Sequence[Path], default: Sequence[str]) -> list[str]:
    """Foreground class names from --classes, else the first existing candidate, else ``default``.

    A leading ``background`` line is dropped (the file may list all K+1 label names).
    """
    if classes_file is not None:
        path = Path(classes_file)
        if not path.exists():
            raise DatasetError(f"{path}: classes file not found")
    else:
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            return list(default)
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if names and names[0].lower() in ("background", "_background_", "bg"):
        names = names[1:]
    if not names:
        raise DatasetError(f"{path}: classes file lists no class")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: classes file repeats a class name")
    return names


def load_cls_labels(path: Path, num_classes: int) -> dict[str, tuple[int, ...]]:
    """PSA-style ``cls_labels.npy`` ({id: K-dim vector}) -> {id: label values 1..K}."""
    try:
        obj = np.load(path, allow_pickle=True)
        table = obj.item() if obj.dtype == object and obj.shape == () else None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable cls_labels file ({e})") from e
    if not isinstance(table, dict):
        raise DatasetError(f"{path}: expected a pickled dict {{id: {num_classes}-dim vector}}")
    if not table:
        return {}
    ids = list(table)
    try:
        rows = [np.asarray(table[i], dtype=np.float32).ravel() for i in ids]
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{path}: a label vector is not numeric ({e})") from e
    bad = next((i for i, r in zip(ids, rows, strict=True) if r.shape[0] != num_classes), None)
    if bad is not None:
        n = len(table[bad]) if hasattr(table[bad], "__len__") else 1
        raise DatasetError(f"{path}: the label vector of '{bad}' has {n} entries but the dataset has {num_classes} classes (check the file, classes.txt / --classes)")
    mat = np.stack(rows) if rows else np.zeros((0, num_classes), np.float32)
    rows, cols = np.nonzero(mat > 0.5)
    out: dict[str, list[int]] = {str(i): [] for i in ids}
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        out[str(ids[r])].append(c + 1)
    return {k: tuple(v) for k, v in out.items()}
