"""The metadata file of an image folder (the Hugging Face ``imagefolder`` convention): one row per
photo with its ``file_name`` (a path inside the folder) and its ``labels`` (class names).

* ``metadata.jsonl``: one JSON object a line, ``{"file_name": "a/b.jpg", "labels": ["dog", "sofa"]}``
  (``labels`` may also be one string, ``"dog;sofa"``);
* ``metadata.csv``: a header naming a ``file_name`` and a ``labels`` column, labels ``dog;sofa``.

Other keys or columns are ignored; an empty label list is an all-background photo. Every error names
the file and the line. Rules: docs/datasets.md.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from usage_cli.errors import DatasetError

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
LABEL_SEPARATOR = ";"


@dataclass(frozen=True)
class Row:
    """One row: where it is (``path``:``line``), the photo's path inside the folder, its class names."""

    path: Path
    line: int
    file_name: str  # normalised: posix separators, no leading "./"
    labels: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def id(self) -> str:
        """The image id: the path without its extension."""
        return str(PurePosixPath(self.file_name).with_suffix(""))


def metadata_file(folder: Path) -> Path | None:
    """The metadata file of ``folder`` (None when it has none); both kinds at once is an error."""
    found = [folder / n for n in METADATA_NAMES if (folder / n).is_file()]
    if len(found) > 1:
        raise DatasetError(f"{folder}: holds both {found[0].name} and {found[1].name}; keep one metadata file")
    return found[0] if found else None


def read_metadata(path: Path) -> list[Row]:
    """The rows of a ``metadata.jsonl`` or ``metadata.csv`` (by its name), checked for duplicates."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable metadata file ({e})") from e
    rows = _jsonl_rows(path, text) if Path(path).suffix == ".jsonl" else _csv_rows(path, text)
    _check_unique(rows)
    return rows


def _jsonl_rows(path: Path, text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{path}:{number}: not JSON ({e.msg}, column {e.colno}); each line is one object like "
                f'{{"file_name": "a.jpg", "labels": ["dog"]}}'
            ) from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{number}: a JSON {type(obj).__name__}, not an object with file_name and labels")
        if "file_name" not in obj:
            raise DatasetError(f"{path}:{number}: no \"file_name\" (keys: {', '.join(obj) or 'none'})")
        if "labels" not in obj:
            raise DatasetError(f"{path}:{number}: no \"labels\" (a list of class names; [] for a photo without any)")
        rows.append(Row(path, number, _file_name(path, number, obj["file_name"]), _labels(path, number, obj["labels"])))
    return rows


def _csv_rows(path: Path, text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DatasetError(f"{path}:1: empty CSV; the first line names the columns: file_name,labels")
    header = [h.strip() for h in header]
    for column in ("file_name", "labels"):
        if column not in header:
            raise DatasetError(f"{path}:1: no '{column}' column (columns: {', '.join(header) or 'none'}); the header is file_name,labels")
    fi, li = header.index("file_name"), header.index("labels")
    rows = []
    for cells in reader:
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise DatasetError(f"{path}:{number}: {len(cells)} cells but the header has {len(header)} ({','.join(header)}); quote a cell holding a comma")
        rows.append(Row(path, number, _file_name(path, number, cells[fi]), _labels(path, number, cells[li])))
    return rows


def _file_name(path: Path, number: int, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}:{number}: file_name must be a path inside {path.parent}, got {value!r}")
    p = PurePosixPath(value.strip().replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise DatasetError(f"{path}:{number}: file_name {value!r} leaves {path.parent}; give a path inside it")
    return str(p)


def _labels(path: Path, number: int, value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(LABEL_SEPARATOR)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{path}:{number}: labels must be a list of class names (or one string 'dog;sofa'), got {value!r}")
    names = [v.strip() for v in value if v.strip()]
    bg = next((n for n in names if n.lower() in ("background", "_background_", "bg")), None)
    if bg is not None:
        raise DatasetError(f"{path}:{number}: '{bg}' is not a class to list; list the objects present ([] for a photo of background only)")
    return tuple(dict.fromkeys(names))


def _check_unique(rows: list[Row]) -> None:
    """No file listed twice, and no two files with one id (``a.jpg`` and ``a.png``)."""
    by_name: dict[str, Row] = {}
    by_id: dict[str, Row] = {}
    for r in rows:
        if r.file_name in by_name:
            raise DatasetError(f"{r.where}: '{r.file_name}' is listed twice (lines {by_name[r.file_name].line} and {r.line}); list each photo once")
        if r.id in by_id:
            other = by_id[r.id]
            raise DatasetError(
                f"{r.where}: '{r.file_name}' and '{other.file_name}' (line {other.line}) share the id '{r.id}' "
                f"(a path without its extension); rename one"
            )
        by_name[r.file_name], by_id[r.id] = r, r
