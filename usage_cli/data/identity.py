"""What an artifact was made from, and whether it belongs to the data set it is now given.

Every artifact records the identity of the split it was made from (:func:`identity`): the data set,
its root, the split, the class names (compared by name elsewhere) and a *fingerprint* — a sha256 over
the sorted ``(id, image size, labels)`` of its records, the sizes read from the image headers (never decoding an image; the
mask's header where the image is absent, as ``usage evaluate`` allows). Two data sets with the same
ids but other images or labels (two ``usage synth`` sets of different seeds, a data set regenerated
in place) have different fingerprints; the same data set moved elsewhere keeps its fingerprint.

:func:`check_pairing` is what a consumer (evaluate, refine-psa, train-seg, report) calls: it
recomputes the fingerprint of the artifact's ids in the given data set and refuses a mismatch with
one line naming both, unless ``--force``. Artifacts written before fingerprints were recorded, and
splits that do not hold every id of the artifact (scoring a subset), are not compared.

Reading the headers also refuses images that reading would clip (16-bit or float modes), naming the
file, before a stage does any work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from usage_cli.data.io import check_image_mode
from usage_cli.data.records import Dataset, Record
from usage_cli.errors import ArtifactError, DatasetError
from usage_cli.progress import log


def header_size(record: Record, check_mode: bool = False) -> tuple[int, int] | None:
    """(H, W) of a record from its image header, else its mask's; None when neither file exists.

    ``check_mode``: an image whose mode 8-bit RGB conversion would clip is refused (one line naming it)."""
    for path, is_image in ((record.image_path, True), (record.mask_path, False)):
        if path is None or not Path(path).is_file():
            continue
        try:
            with Image.open(path) as im:  # reads the header only
                if is_image and check_mode:
                    check_image_mode(path, im.mode)
                return im.height, im.width
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"{path}: unreadable or corrupt {'image' if is_image else 'mask'} ({e})") from e
    return None


def fingerprint(records: Iterable[Record], check_modes: bool = False) -> str:
    """sha256 over the sorted (id, H, W, labels) of ``records`` (``check_modes``: see :func:`header_size`).
    Class names are recorded beside it and compared on their own (``artifacts.compat``), by name."""
    rows = sorted((r.id, *(header_size(r, check_modes) or (None, None)), sorted(int(c) for c in r.labels)) for r in records)
    blob = json.dumps(rows, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def identity(ds: Dataset, split_file: str | Path | None = None, check_images: bool = True) -> dict[str, Any]:
    """What an artifact made from ``ds`` records as its ``data``. ``check_images``: refuse, before any
    work, an image that reading would clip (the stages that read images; not ``usage evaluate``)."""
    return {
        "dataset": ds.meta.name,
        "root": str(Path(ds.root).resolve()),
        "split": ds.split,
        "split_file": None if split_file is None else str(Path(split_file).resolve()),
        "class_names": list(ds.meta.class_names),
        "num_images": len(ds),
        "fingerprint": fingerprint(ds.records, check_images),
    }


def check_pairing(
    path: str | Path,
    recorded: dict[str, Any] | None,
    ds: Dataset,
    *,
    force: bool,
    ids: Iterable[str] | None = None,
    use: str = "use it",
    known: str | None = None,
) -> dict[str, Any] | None:
    """Refuse an artifact (``path``, whose recorded ``data`` is ``recorded``) made from another data set
    than ``ds``: the fingerprint of the artifact's ``ids`` (default: all of ``ds``) in ``ds`` must be
    the recorded one. Returns what the output records about the pairing — None when nothing could be
    compared, ``{"fingerprint": ..., "forced": False}`` when it matched, and with ``force`` a mismatch
    as ``{"forced": True, "recorded": ..., "given": ...}`` (after a warning line). ``known``: the
    fingerprint of all of ``ds`` when the caller has it (its :func:`identity`), not read twice."""
    if not isinstance(recorded, dict) or not recorded.get("fingerprint"):
        return None  # written before artifacts recorded their data set
    records = list(ds.records)
    if ids is not None:
        wanted = set(ids)
        records = [r for r in records if r.id in wanted]
        if len(records) != len(wanted):
            return None  # the split given does not hold every id of the artifact: not comparable
    given = known if known and len(records) == len(ds.records) else fingerprint(records)
    if given == recorded["fingerprint"]:
        return {"fingerprint": given, "forced": False}
    what = (
        f"{path}: made from {recorded.get('root', '?')} split '{recorded.get('split', '?')}' (fingerprint "
        f"{recorded['fingerprint'][:12]}) but given {Path(ds.root).resolve()} split '{ds.split}' (fingerprint {given[:12]}): "
        f"the same ids with other images or labels"
    )
    if not force:
        raise ArtifactError(f"{what}; give the data set it was made from, or pass --force to {use} anyway")
    log(f"[yellow]warning: {what}; --force: {use} anyway[/]")
    given_identity = {"root": str(Path(ds.root).resolve()), "split": ds.split, "fingerprint": given}
    return {"forced": True, "recorded": recorded, "given": given_identity}


def recorded_data(attrs_or_manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``data`` an artifact's manifest (or seed store attributes) records, if any."""
    data = (attrs_or_manifest or {}).get("data")
    return data if isinstance(data, dict) else None
