"""Small readers shared by the dataset loaders: split lists, class lists, image-level labels.

Image-level labels come as PSA's ``cls_labels.npy`` (a pickled dict, read by a restricted unpickler
that builds nothing but numpy arrays, dicts and strings) or as ``cls_labels.json`` (written by
``usage synth`` beside the ``.npy``; plain JSON, no pickle). Formats: docs/datasets.md.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.errors import DatasetError

CLS_LABELS_JSON = "usage-cls-labels"  # format name of cls_labels.json
CLS_LABELS_JSON_VERSION = "1.0.0"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # photos a folder dataset reads


def read_split_file(path: Path, folders: bool = False) -> list[str]:
    """Ids of a split list: bare ids (IRN/MCTformer) or PSA/SEAM pairs (`/JPEGImages/X.jpg /Seg.../X.png`).
    ``folders``: ids are paths inside a folder of photos (``dogs/a`` or ``dogs/a.jpg`` is ``dogs/a``).

    An id listed twice is an error naming both lines: every count (images scored, seeds written) is per
    image, and a repeated id would be counted twice."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(_text(path, "split file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        first = fields[0]
        is_path = "/" in first or "." in Path(first).name[-5:]
        if folders:
            image_id = first.strip("/").removesuffix(Path(first).suffix) if Path(first).suffix.lower() in IMAGE_SUFFIXES else first.strip("/")
        elif len(fields) > 1 and not is_path:  # 'val 00000', or a classification list's 'id -1'
            raise DatasetError(
                f"{path}: line {number} reads {line!r}: {len(fields)} fields, not an image id nor a PSA pair "
                f"(/JPEGImages/X.jpg /SegmentationClass/X.png); list one id a line"
            )
        else:
            image_id = Path(first).stem if is_path else first
        if image_id in seen:
            raise DatasetError(f"{path}: id '{image_id}' is listed twice (lines {seen[image_id]} and {number}); list each image once")
        seen[image_id] = number
        ids.append(image_id)
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
    names = [ln.strip() for ln in _text(path, "classes file").splitlines() if ln.strip()]
    if names and names[0].lower() in ("background", "_background_", "bg"):
        names = names[1:]
    if not names:
        raise DatasetError(f"{path}: classes file lists no class")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: classes file repeats a class name")
    return names


def _text(path: Path, what: str) -> str:
    """A text file's content; a byte-order mark (saved so by Windows editors) is not part of its first line."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except IsADirectoryError:
        raise DatasetError(f"{path}: {what} is a folder; give the text file") from None


class RefusedPickle(pickle.UnpicklingError):
    """A pickle names a global (function, class) that :class:`_ArraysOnlyUnpickler` does not build."""


# what numpy's pickle of an object array names: the functions that rebuild arrays, dtypes and scalars
# (numpy 1 spells the module numpy.core, numpy 2 numpy._core); nothing else is ever looked up
_NUMPY_REBUILDERS = {
    "_reconstruct": np.empty(0).__reduce__()[0],
    "scalar": np.float32(0).__reduce__()[0],
    "_frombuffer": np.empty(0).__reduce_ex__(5)[0],
}


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (PSA's file has an array's data so)."""
    if encoding not in ("latin1", "latin-1"):
        raise RefusedPickle(f"it encodes bytes as {encoding!r}")
    return text.encode("latin1")


_SAFE_GLOBALS = {
    **{(f"numpy.{core}.multiarray", n): _NUMPY_REBUILDERS[n] for core in ("core", "_core") for n in ("_reconstruct", "scalar")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _NUMPY_REBUILDERS["_frombuffer"] for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays (of numbers or strings), dicts, lists and strings; any other global a pickle
    names (a function to call, a class to build) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise RefusedPickle(f"it names {module}.{name}")


def read_npy_restricted(path: Path):
    """The array in a ``.npy`` file; an object array is unpickled by :class:`_ArraysOnlyUnpickler`."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        return _ArraysOnlyUnpickler(f).load()


def load_cls_labels(path: Path, num_classes: int) -> dict[str, tuple[int, ...]]:
    """PSA-style ``cls_labels.npy`` ({id: K-dim vector}) -> {id: label values 1..K}.

    The pickle inside is read by a restricted unpickler: a file naming anything but numpy arrays,
    dicts and strings is refused (it could run code), never executed."""
    try:
        obj = read_npy_restricted(path)
        table = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () else None
    except RefusedPickle as e:
        raise DatasetError(
            f"{path}: refused: its pickle holds more than numpy arrays, dicts and strings ({e}), which could run "
            f"code when loaded; a cls_labels file holds only {{id: {num_classes}-dim vector}} (or use cls_labels.json)"
        ) from e
    except (OSError, ValueError, EOFError, TypeError, AttributeError, pickle.UnpicklingError) as e:
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
    outside = ~np.isin(mat, (0.0, 1.0))  # 2, -1, 0.7 and NaN alike: never guessed as present or absent
    if outside.any():
        r, c = (int(v[0]) for v in np.nonzero(outside))
        raise DatasetError(
            f"{path}: the label vector of '{ids[r]}' holds {mat[r, c]:g} (class {c + 1}); label vectors hold 0 (absent) or 1 (present)"
        )
    rows, cols = np.nonzero(mat == 1.0)
    out: dict[str, list[int]] = {str(i): [] for i in ids}
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        out[str(ids[r])].append(c + 1)
    return {k: tuple(v) for k, v in out.items()}


def read_cls_labels(path: Path, class_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """{id: label values 1..K} of a ``cls_labels.npy`` or a ``cls_labels.json`` (by its suffix)."""
    if Path(path).suffix == ".json":
        return load_cls_labels_json(path, class_names)
    return load_cls_labels(path, len(class_names))


def write_cls_labels_json(path: Path, labels: Mapping[str, Sequence[int]], class_names: Sequence[str]) -> None:
    """``cls_labels.json``: the image-level labels as label values 1..K per id, with the class names."""
    doc = {
        "format": CLS_LABELS_JSON, "version": CLS_LABELS_JSON_VERSION, "class_names": list(class_names),
        "labels": {str(k): sorted(int(c) for c in v) for k, v in sorted(labels.items())},
    }  # fmt: skip
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def load_cls_labels_json(path: Path, class_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``cls_labels.json`` -> {id: label values 1..K}; refused when made for other classes."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable cls_labels file ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != CLS_LABELS_JSON:
        raise DatasetError(f"{path}: not a usage cls_labels.json (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    if str(doc.get("version", "")).split(".")[0] != CLS_LABELS_JSON_VERSION.split(".")[0]:
        raise DatasetError(f"{path}: cls_labels.json version {doc.get('version')} is not readable by this usage (1.x); rewrite it or use the usage version that wrote it")
    names = [str(n) for n in doc.get("class_names", [])]
    if names != [str(n) for n in class_names]:
        raise DatasetError(f"{path}: labels of the classes {names} but the dataset has {list(class_names)} (check the file, classes.txt / --classes)")
    table, k = doc.get("labels"), len(class_names)
    if not isinstance(table, dict):
        raise DatasetError(f"{path}: 'labels' must map each id to a list of label values 1..{k}")
    out = {}
    for image_id, values in table.items():
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= k for v in values):
            raise DatasetError(f"{path}: the labels of '{image_id}' are {values!r}; expected a list of label values 1..{k}")
        out[str(image_id)] = tuple(sorted(set(values)))
    return out


LABEL_FILES = ("cls_labels.npy", "cls_labels.json")  # in a dataset root, in the order the loaders prefer them


def root_label_file(root: str | Path) -> Path | None:
    """The image-level label file directly in ``root`` that a loader reads first (None when there is none)."""
    return next((p for p in (Path(root) / n for n in LABEL_FILES) if p.exists()), None)
