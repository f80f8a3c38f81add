"""Lay out a VOC-layout data set as a ``--dataset folder`` one (docs/datasets.md), for the check that
both layouts score alike (issue 28):

    python bench/to_folder.py --root ../shared/data/msrc-objects --out /tmp/msrc-folder [--copy] [--format csv]

Per split of ``ImageSets/Segmentation``: ``OUT/<split>/<id>.jpg`` (a symbolic link to the photo, or a
copy with ``--copy``), ``OUT/<split>/metadata.jsonl`` (or ``.csv``) with the image-level labels as class
names, ``OUT/masks/<split>/<id>.png`` (the ground truth, linked or copied), and ``OUT/classes.txt``.
The labels are the ones ``--dataset voc`` reads (cls_labels.npy / .json, XML, masks), so the two
layouts hold the same photos, labels and masks. ``OUT`` must not exist (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from usage_cli.data import load_dataset  # noqa: E402
from usage_cli.data.voc import voc_dir  # noqa: E402


def place(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(Path(src).resolve(), dst)


def write_split(root: Path, split: str, out: Path, copy: bool, fmt: str) -> int:
    ds = load_dataset("voc", root, split)
    names = ds.meta.class_names
    rows = []
    for rec in ds.records:
        file_name = f"{rec.id}{Path(rec.image_path).suffix}"
        place(rec.image_path, out / split / file_name, copy)
        if rec.mask_path is not None:
            place(rec.mask_path, out / "masks" / split / f"{rec.id}.png", copy)
        rows.append((file_name, [names[c - 1] for c in rec.labels]))
    if fmt == "jsonl":
        text = "".join(json.dumps({"file_name": f, "labels": labels}) + "\n" for f, labels in rows)
        (out / split / "metadata.jsonl").write_text(text)
    else:
        with open(out / split / "metadata.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file_name", "labels"])
            w.writerows((fn, ";".join(labels)) for fn, labels in rows)
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="a VOC-layout dataset root")
    ap.add_argument("--out", type=Path, required=True, help="the folder dataset to make (must not exist)")
    ap.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    ap.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    args = ap.parse_args()
    if args.out.exists():
        sys.exit(f"{args.out}: exists; give a new folder")
    lists = voc_dir(args.root) / "ImageSets" / "Segmentation"
    splits = sorted(p.stem for p in lists.glob("*.txt"))
    names = load_dataset("voc", args.root, splits[0]).meta.class_names
    args.out.mkdir(parents=True)
    (args.out / "classes.txt").write_text("".join(n + "\n" for n in names))
    for split in splits:
        n = write_split(args.root, split, args.out, args.copy, args.format)
        print(f"{split}: {n} photos -> {args.out / split}")


if __name__ == "__main__":
    main()
