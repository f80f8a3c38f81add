"""``--dataset folder`` (an image folder with metadata.jsonl / metadata.csv) and ``--dataset images``
(a bare folder of photos): the layout rules of docs/datasets.md, on folders made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from usage_cli.artifacts.labels import PNG_MARKERS, label_ids, label_path, png_id
from usage_cli.data import DataSpec, load_dataset
from usage_cli.errors import ConfigError, DatasetError


def _photo(path, size=(24, 16), value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _mask(path, size=(24, 16), value=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def root(tmp_path):
    """train: dogs/a.jpg (dog), cats/a.jpg (cat, sofa), b.png (no label); val: c.jpg (dog); masks for two."""
    r = tmp_path / "photos"
    for f in ("dogs/a.jpg", "cats/a.jpg", "b.png"):
        _photo(r / "train" / f)
    _photo(r / "val" / "c.jpg")
    _jsonl(r / "train" / "metadata.jsonl", [
        {"file_name": "dogs/a.jpg", "labels": ["dog"]},
        {"file_name": "cats/a.jpg", "labels": ["cat", "sofa"], "caption": "ignored"},
        {"file_name": "b.png", "labels": []},
    ])  # fmt: skip
    _jsonl(r / "val" / "metadata.jsonl", [{"file_name": "c.jpg", "labels": ["dog"]}])
    _mask(r / "masks" / "train" / "dogs" / "a.png", value=2)
    _mask(r / "masks" / "val" / "c.png", value=2)
    return r


def test_folder_records_ids_labels_and_masks(root):
    ds = load_dataset("folder", root, "train")
    assert ds.meta.class_names == ("cat", "dog", "sofa")  # the sorted union of every split's labels
    assert [r.id for r in ds.records] == ["b", "cats/a", "dogs/a"]  # the path without extension
    assert [r.labels for r in ds.records] == [(), (1, 3), (2,)]  # an empty list: all background
    assert ds.by_id()["dogs/a"].mask_path == root / "masks" / "train" / "dogs" / "a.png"
    assert ds.by_id()["b"].mask_path is None
    assert load_dataset("folder", root, "val").meta.class_names == ds.meta.class_names


def test_classes_txt_gives_the_order_and_catches_typos(root):
    (root / "classes.txt").write_text("background\nsofa\ndog\ncat\nbird\n")
    ds = load_dataset("folder", root, "train")
    assert ds.meta.class_names == ("sofa", "dog", "cat", "bird")
    assert ds.by_id()["cats/a"].labels == (1, 3)
    _jsonl(root / "val" / "metadata.jsonl", [{"file_name": "c.jpg", "labels": ["dgo"]}])
    with pytest.raises(DatasetError, match=r"val/metadata.jsonl:1: unknown label 'dgo' \(did you mean 'dog'\?"):
        load_dataset("folder", root, "val")


def test_csv_reads_as_the_jsonl(root):
    before = load_dataset("folder", root, "train")
    (root / "train" / "metadata.jsonl").unlink()
    (root / "train" / "metadata.csv").write_text('file_name,labels\ndogs/a.jpg,dog\n"cats/a.jpg","cat;sofa"\nb.png,\n')
    after = load_dataset("folder", root, "train")
    assert [(r.id, r.labels, r.mask_path) for r in after.records] == [(r.id, r.labels, r.mask_path) for r in before.records]


def test_a_flat_root_is_split_train_and_its_masks_are_not_photos(tmp_path):
    r = tmp_path / "flat"
    _photo(r / "x.jpg")
    _photo(r / "y.jpg")
    _mask(r / "masks" / "train" / "x.png")
    _photo(r / "runs" / "seeds" / "overlays" / "x.png")  # a usage output inside ROOT: its manifest marks it
    (r / "runs" / "seeds" / "manifest.json").write_text("{}")
    _jsonl(r / "metadata.jsonl", [{"file_name": "x.jpg", "labels": "boat"}, {"file_name": "y.jpg", "labels": []}])
    ds = load_dataset("folder", r, "train")
    assert [(x.id, x.labels, x.mask_path is not None) for x in ds.records] == [("x", (1,), True), ("y", (), False)]
    with pytest.raises(DatasetError, match="its one split is 'train'"):
        load_dataset("folder", r, "val")


def test_photos_without_a_row_are_counted_and_refused_unless_allowed(root):
    _photo(root / "train" / "extra" / "new1.jpg")
    _photo(root / "train" / "new2.jpg")
    with pytest.raises(DatasetError, match=r"train/metadata.jsonl: 2 photo\(s\) in .* have no row \(extra/new1.jpg, new2.jpg\).*--allow-unlabelled"):
        load_dataset("folder", root, "train")
    ds = DataSpec("folder", root, "train", allow_unlabelled=True).load()
    assert [r.id for r in ds.records] == ["b", "cats/a", "dogs/a"]
    with pytest.raises(ConfigError, match="--allow-unlabelled.*--dataset folder"):
        DataSpec("voc", root, "train", allow_unlabelled=True).load()


BAD_ROWS = [
    ("a row's photo is missing", "metadata.jsonl", '{"file_name": "gone.jpg", "labels": []}\n', r"metadata.jsonl:1: .*gone.jpg: photo not found"),
    ("a JSONL line that is not JSON", "metadata.jsonl", '{"file_name": "b.png", "labels": []}\n{"file_name": "x.jpg", labels: []}\n', r"metadata.jsonl:2: not JSON"),
    ("a duplicate file_name", "metadata.jsonl", '{"file_name": "b.png", "labels": []}\n{"file_name": "./b.png", "labels": ["dog"]}\n', r"metadata.jsonl:2: 'b.png' is listed twice \(lines 1 and 2\)"),
    ("two files of one id", "metadata.jsonl", '{"file_name": "b.png", "labels": []}\n{"file_name": "b.jpg", "labels": []}\n', r"metadata.jsonl:2: .*share the id 'b'"),
    ("a row without labels", "metadata.jsonl", '{"file_name": "b.png"}\n', r"metadata.jsonl:1: no \"labels\""),
    ("labels as a number", "metadata.jsonl", '{"file_name": "b.png", "labels": 3}\n', r"metadata.jsonl:1: labels must be a list of class names"),
    ("background listed as a label", "metadata.jsonl", '{"file_name": "b.png", "labels": ["background"]}\n', r"metadata.jsonl:1: 'background' is not a class"),
    ("a path leaving the folder", "metadata.jsonl", '{"file_name": "../b.png", "labels": []}\n', r"metadata.jsonl:1: file_name '../b.png' leaves"),
    ("a CSV without file_name", "metadata.csv", "path,labels\nb.png,\n", r"metadata.csv:1: no 'file_name' column \(columns: path, labels\)"),
    ("a CSV row of three cells", "metadata.csv", "file_name,labels\nb.png,dog,cat\n", r"metadata.csv:2: 3 cells"),
]


@pytest.mark.parametrize("name,file,text,error", BAD_ROWS, ids=[r[0] for r in BAD_ROWS])
def test_each_bad_metadata_row_names_file_and_line(tmp_path, name, file, text, error):
    r = tmp_path / "p"
    _photo(r / "train" / "b.png")
    (r / "classes.txt").write_text("dog\ncat\n")
    (r / "train" / file).write_text(text)
    with pytest.raises(DatasetError, match=error):
        load_dataset("folder", r, "train", allow_unlabelled=True)


def test_both_metadata_files_and_no_metadata_are_refused(root, tmp_path):
    (root / "train" / "metadata.csv").write_text("file_name,labels\n")
    with pytest.raises(DatasetError, match="both metadata.jsonl and metadata.csv"):
        load_dataset("folder", root, "train")
    _photo(tmp_path / "bare" / "x.jpg")
    with pytest.raises(DatasetError, match="no metadata.jsonl or metadata.csv"):
        load_dataset("folder", tmp_path / "bare", "train")


def test_a_mask_of_another_size_is_named_with_both_sizes(root):
    _mask(root / "masks" / "train" / "b.png", size=(10, 8))
    with pytest.raises(DatasetError, match=r"masks/train/b.png: mask is 10x8 but its photo .*b.png is 24x16"):
        load_dataset("folder", root, "train")


def test_evaluate_may_lack_the_photo_not_both(root):
    (root / "val" / "c.jpg").unlink()
    assert load_dataset("folder", root, "val", require_images=False).records[0].mask_path is not None
    (root / "masks" / "val" / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"val/metadata.jsonl:1: .*c.jpg: photo not found, nor a mask"):
        load_dataset("folder", root, "val", require_images=False)


def test_split_file_picks_rows(root, tmp_path):
    (tmp_path / "few.txt").write_text("dogs/a\n")
    assert [r.id for r in load_dataset("folder", root, "train", split_file=tmp_path / "few.txt").records] == ["dogs/a"]
    (tmp_path / "few.txt").write_text("dogs/zzz\n")
    with pytest.raises(DatasetError, match=r"few.txt: 1 id\(s\) without a row .*dogs/zzz"):
        load_dataset("folder", root, "train", split_file=tmp_path / "few.txt")


def test_images_is_every_photo_below_a_folder(root, tmp_path):
    _photo(root / "train" / "preds" / "b.png")  # predictions written inside the folder, unfinished: its marker says so
    (root / "train" / "preds" / PNG_MARKERS["predict-seg"]).write_text("{}")
    ds = load_dataset("images", root / "train", "images")
    assert [r.id for r in ds.records] == ["b", "cats/a", "dogs/a"] and all(r.labels == () for r in ds.records)
    assert ds.meta.class_names == ()
    _photo(root / "train" / "b.jpg")
    with pytest.raises(DatasetError, match="share the id 'b'"):
        load_dataset("images", root / "train", "images")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no photos in it"):
        load_dataset("images", tmp_path / "empty", "images")


def test_a_subfolder_id_is_one_label_png(tmp_path):
    """Label-PNG folders stay flat: ``a/b`` is ``a%2Fb.png`` (as the seed store names its group)."""
    path = label_path(tmp_path, "cats/a%b")
    assert path == tmp_path / "cats%2Fa%25b.png" and png_id(path) == "cats/a%b"
    path.write_bytes(b"")
    assert label_ids(tmp_path) == {"cats/a%b"}
