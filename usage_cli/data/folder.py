"""Your own photos: an image folder with a metadata file (``--dataset folder``), and a bare folder of
photos without labels (``--dataset images``, what ``usage predict-seg --images DIR`` reads).

``--dataset folder`` (docs/datasets.md has every rule)::

    ROOT/classes.txt                    optional: class names, one a line (else the sorted union of the labels)
    ROOT/<split>/metadata.jsonl         {"file_name": "a/b.jpg", "labels": ["dog", "sofa"]} (or metadata.csv)
    ROOT/<split>/a/b.jpg ...            the photos (subfolders allowed; the id is the path without extension)
    ROOT/masks/<split>/a/b.png          optional ground truth for ``usage evaluate`` (0 background, 1..K, 255 ignore)

A flat ROOT holding the photos and a metadata file is split ``train``. Labels are class names, never
indices. A photo without a row is refused (how many, the first few), unless ``--allow-unlabelled``
leaves it out.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from usage_cli.artifacts.labels import PNG_MARKERS
from usage_cli.artifacts.lock import LOCK_NAME
from usage_cli.artifacts.manifest import MANIFEST_NAME
from usage_cli.data.labels_io import IMAGE_SUFFIXES, read_class_names, read_split_file
from usage_cli.data.metadata import Row, metadata_file, read_metadata
from usage_cli.data.records import Dataset, DatasetMeta, Record
from usage_cli.errors import DatasetError
from usage_cli.progress import log

IMAGE_EXTENSIONS = IMAGE_SUFFIXES
MASKS = "masks"  # ROOT/masks/<split>/: the ground truth
FLAT_SPLIT = "train"  # the one split of a flat ROOT
# a folder usage wrote or is writing (a run's --out, finished or not): never scanned for photos
USAGE_MARKS = (MANIFEST_NAME, LOCK_NAME, *PNG_MARKERS.values())


def scan_images(folder: Path, skip: Iterable[Path] = ()) -> dict[str, Path]:
    """``{path inside folder (posix): file}`` of every photo below ``folder``; hidden files and folders,
    the folders ``skip`` and every usage output (a folder holding a manifest, a writer's lock or a PNG
    folder's resume marker: predictions written inside the photos' folder) are left out."""
    folder, skipped = Path(folder), {Path(s).resolve() for s in skip}
    found: dict[str, Path] = {}
    for here, dirs, files in os.walk(folder):
        base = Path(here)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (base / d).resolve() not in skipped and not _usage_output(base / d))
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found[(base / name).relative_to(folder).as_posix()] = base / name
    return found


def _usage_output(folder: Path) -> bool:
    return any((folder / m).exists() for m in USAGE_MARKS)


def image_id(file_name: str) -> str:
    return str(PurePosixPath(file_name).with_suffix(""))


def splits(root: Path) -> dict[str, Path]:
    """split -> its folder: ROOT itself (split ``train``) when it holds a metadata file, else every
    subfolder of ROOT (but ``masks/``) that holds one."""
    if metadata_file(root) is not None:
        return {FLAT_SPLIT: root}
    subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != MASKS)
    found = {d.name: d for d in subs if metadata_file(d) is not None}
    if not found:
        raise DatasetError(
            f"{root}: no metadata.jsonl or metadata.csv, neither in it (one split, train) nor in a split folder "
            f"(ROOT/train/metadata.jsonl); see docs/datasets.md"
        )
    return found


def _class_names(root: Path, classes_file, rows_of: dict[str, list[Row]]) -> tuple[list[str], Path | None]:
    """The class names and the file they came from (None: the sorted union of every split's labels)."""
    src = Path(classes_file) if classes_file is not None else (root / "classes.txt" if (root / "classes.txt").is_file() else None)
    if src is not None:
        return read_class_names(src, [], ()), src
    names = sorted({n for rows in rows_of.values() for r in rows for n in r.labels})
    if not names:
        where = ", ".join(str(metadata_file(p)) for p in splits(root).values())
        raise DatasetError(f"{where}: no row lists a label, and there is no classes.txt; list the classes present in each photo")
    return names, None


def _label_values(row: Row, index: dict[str, int], src: Path | None) -> tuple[int, ...]:
    for name in row.labels:
        if name not in index:
            close = difflib.get_close_matches(name, list(index), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DatasetError(f"{row.where}: unknown label '{name}' ({hint}classes in {src}: {', '.join(index)})")
    return tuple(sorted(index[n] for n in row.labels))


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _check_sizes(rec: Record) -> None:
    """A mask of another size than its photo, named with both sizes (headers only)."""
    sizes = []
    for p in (rec.image_path, rec.mask_path):
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise DatasetError(f"{p}: unreadable or corrupt {'mask' if p == rec.mask_path else 'image'} ({e})") from e
    if sizes[0] != sizes[1]:
        (iw, ih), (mw, mh) = sizes
        raise DatasetError(f"{rec.mask_path}: mask is {mw}x{mh} but its photo {rec.image_path} is {iw}x{ih}")


def load(
    root: Path,
    split: str,
    *,
    split_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    require_images: bool = True,
    allow_unlabelled: bool = False,
) -> Dataset:
    # 1. the split's folder and rows; the class names (classes.txt, else every split's labels)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    found = splits(root)
    if split not in found:
        flat = f"{root} is a flat folder: its one split is '{FLAT_SPLIT}'" if FLAT_SPLIT in found and found[FLAT_SPLIT] == root else f"splits here: {', '.join(found)}"
        raise DatasetError(f"{root}: no split '{split}' ({flat})")
    folder = found[split]
    meta = metadata_file(folder)
    rows_of = {s: read_metadata(metadata_file(p)) for s, p in found.items()}
    names, src = _class_names(root, classes_file, rows_of)
    rows = rows_of[split]
    if split_file is not None:
        rows = _pick(rows, read_split_file(Path(split_file), folders=True), Path(split_file), meta)
    # 2. every photo has a row (or --allow-unlabelled), every row a photo
    photos = scan_images(folder, [root / MASKS] if folder == root else [])
    listed = {r.file_name for r in rows_of[split]}
    unlisted = sorted(set(photos) - listed)
    if unlisted and split_file is None:
        if not allow_unlabelled:
            raise DatasetError(
                f"{meta}: {len(unlisted)} photo(s) in {folder} have no row ({_some(unlisted)}); add a row for each "
                f"(labels [] for a photo of background only) or pass --allow-unlabelled to leave them out"
            )
        log(f"{meta}: leaving out {len(unlisted)} photo(s) without a row (--allow-unlabelled)")
    # 3. the records: photo, mask (ROOT/masks/<split>/<id>.png), label values
    index = {n: i + 1 for i, n in enumerate(names)}
    masks = root / MASKS / split
    records = []
    for r in rows:
        image, mask = folder / r.file_name, masks / f"{r.id}.png"
        mask = mask if mask.is_file() else None
        if not image.is_file() and (require_images or mask is None):
            also = "" if require_images else f", nor a mask {masks / (r.id + '.png')}"
            raise DatasetError(f"{r.where}: {image}: photo not found{also}")
        rec = Record(id=r.id, image_path=image, mask_path=mask, labels=_label_values(r, index, src))
        if mask is not None and image.is_file():
            _check_sizes(rec)
        records.append(rec)
    records.sort(key=lambda rec: rec.id)
    return Dataset(meta=DatasetMeta(name="folder", class_names=tuple(names)), records=tuple(records), root=root, split=split)


def _pick(rows: list[Row], ids: list[str], split_file: Path, meta: Path) -> list[Row]:
    """The rows of the ids a ``--split-file`` lists (an id without a row is an error)."""
    by_id = {r.id: r for r in rows}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DatasetError(f"{split_file}: {len(missing)} id(s) without a row in {meta} ({_some(missing)})")
    return [by_id[i] for i in ids]


def load_images(
    root: Path,
    split: str,
    *,
    split_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    require_images: bool = True,
) -> Dataset:
    """Every photo under ``root`` (subfolders too; the id is the path without extension), without
    labels or masks: the input of ``predict-seg --images``. Class names from ``classes_file`` if any."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder of photos not found")
    photos = scan_images(root)
    if not photos:
        raise DatasetError(f"{root}: no photos in it ({', '.join(IMAGE_EXTENSIONS)})")
    by_id: dict[str, str] = {}
    for name in sorted(photos):
        if image_id(name) in by_id:
            raise DatasetError(f"{root}: '{by_id[image_id(name)]}' and '{name}' share the id '{image_id(name)}' (a path without its extension); rename one")
        by_id[image_id(name)] = name
    ids = sorted(by_id)
    if split_file is not None:
        wanted = read_split_file(Path(split_file), folders=True)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise DatasetError(f"{split_file}: {len(missing)} id(s) with no photo under {root} ({_some(missing)})")
        ids = sorted(wanted)
    names = read_class_names(classes_file, [], ()) if classes_file is not None else []
    records = tuple(Record(id=i, image_path=photos[by_id[i]], mask_path=None, labels=()) for i in ids)
    return Dataset(meta=DatasetMeta(name="images", class_names=tuple(names)), records=records, root=root, split=split)
