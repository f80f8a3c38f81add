"""``--dataset coco`` from the official JSON: labels from the annotations, masks rendered by
coco2voc's rule into usage's cache (docs/datasets.md), on a 3-image set made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from own_photos import coco_set

from usage_cli.artifacts import mask_cache
from usage_cli.data import load_dataset
from usage_cli.data.coco_json import render_mask
from usage_cli.data.io import read_mask
from usage_cli.errors import ArtifactError, DatasetError


@pytest.fixture
def coco(tmp_path, monkeypatch):
    monkeypatch.setenv(mask_cache.CACHE_ENV, str(tmp_path / "cache"))
    return coco_set(tmp_path / "coco")


def test_labels_from_annotations_masks_by_coco2voc_rule(coco, tmp_path):
    ds = load_dataset("coco", coco, "train")  # train: the 2014 file if present, else 2017
    assert ds.meta.class_names == ("person", "dog")  # the categories by id: 1 -> 1, 18 -> 2
    assert [(r.id, r.labels) for r in ds.records] == [("000000000001", (1, 2)), ("000000000002", (1, 2)), ("000000000003", ())]
    m1, m2, m3 = (read_mask(r.mask_path) for r in ds.records)
    # overlap: the smaller dog (400) wins over the person (1200) where both are
    assert m1[30, 40] == 2 and m1[12, 15] == 1 and (m1 == 2).sum() == 400 and (m1 == 1).sum() == 1200 - 20 * 18
    # the crowd region is painted as its class; the uncompressed RLE dog too; no ignore value anywhere
    assert (m2 == 1).sum() == 16 * 24 and (m2 == 2).sum() == 14 * 20 and 255 not in m2
    assert not m3.any()  # an image without annotations: all background
    assert all(str(r.mask_path).startswith(str(tmp_path / "cache" / "coco-masks")) for r in ds.records)
    assert not list(coco.rglob("*.png"))  # nothing written beside the user's files


def test_render_mask_is_the_smallest_first_rule():
    big = {"id": 1, "category_id": 5, "area": 100, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}
    small = {"id": 2, "category_id": 7, "area": 16, "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]}
    a = render_mask([big, small], 12, 12, {5: 1, 7: 2})
    b = render_mask([small, big], 12, 12, {5: 1, 7: 2})  # the order in the file does not matter
    assert np.array_equal(a, b) and (a == 2).sum() == 16 and (a == 1).sum() == 100 - 16


def test_the_cache_is_rendered_once_with_a_manifest_and_reused(coco, monkeypatch):
    ds = load_dataset("coco", coco, "train2017")
    folder = ds.records[0].mask_path.parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "coco-masks" and manifest["images"] == 3 and len(manifest["files"]) == 3
    assert manifest["inputs"]["annotations"]["sha256"] and not (folder / mask_cache.MARKER).exists()
    monkeypatch.setattr(mask_cache, "write_label_png", lambda *a: pytest.fail("rendered twice"))
    assert load_dataset("coco", coco, "train2017").records == ds.records


def test_an_interrupted_render_resumes_and_foreign_files_are_refused(coco, monkeypatch):
    ds = load_dataset("coco", coco, "train")
    folder = ds.records[0].mask_path.parent
    (folder / "manifest.json").unlink()
    (folder / mask_cache.MARKER).write_text("rendering\n")
    ds.records[0].mask_path.unlink()  # killed after two of three masks
    written = []
    real = mask_cache.write_label_png
    monkeypatch.setattr(mask_cache, "write_label_png", lambda p, m: (written.append(p), real(p, m)))
    load_dataset("coco", coco, "train")
    assert written == [ds.records[0].mask_path]
    (folder / "manifest.json").unlink()
    assert not (folder / mask_cache.MARKER).exists()  # now: files, no manifest, no marker -> not usage's
    with pytest.raises(ArtifactError, match="holds files usage did not write"):
        load_dataset("coco", coco, "train")


def test_bad_json_inputs_name_the_file(coco):
    path = coco / "annotations" / "instances_train2017.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["category_id"] = 91
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"instances_train2017.json: annotation 11 .* category_id 91, not in 'categories' \(ids 1, 18\)"):
        load_dataset("coco", coco, "train")
    doc["annotations"][0]["category_id"] = 1
    path.write_text(json.dumps(doc))
    (coco / "train2017" / "000000000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"instances_train2017.json: image 2 '000000000002.jpg' not found at .*train2017/000000000002.jpg"):
        load_dataset("coco", coco, "train")
    assert len(load_dataset("coco", coco, "train", require_images=False)) == 3  # evaluate reads masks only


def test_classes_file_orders_the_values_and_the_png_layout_wins_when_present(coco, tmp_path):
    (tmp_path / "names.txt").write_text("dog\nperson\n")
    ds = load_dataset("coco", coco, "train", classes_file=tmp_path / "names.txt")
    assert ds.records[0].labels == (1, 2) and read_mask(ds.records[0].mask_path)[30, 40] == 1  # dog is 1 now
    (tmp_path / "names.txt").write_text("dgo\nperson\n")
    with pytest.raises(DatasetError, match="category 18 'dog' is not in .*did you mean 'dgo'"):
        load_dataset("coco", coco, "train", classes_file=tmp_path / "names.txt")
    # a split list and a PNG mask folder: the PNG layout, as before
    (coco / "SegmentationClass" / "train2017").mkdir(parents=True)
    np.save(coco / "cls_labels.npy", {"000000000001": np.eye(80, dtype=np.float32)[3]}, allow_pickle=True)
    (coco / "train2017.txt").write_text("000000000001\n")
    png = load_dataset("coco", coco, "train2017")
    assert png.records[0].labels == (4,) and png.records[0].mask_path is None and png.meta.num_classes == 80


def test_a_cache_folder_that_cannot_be_written_is_one_line(coco, monkeypatch):
    monkeypatch.setenv(mask_cache.CACHE_ENV, "/proc/usage-test-unwritable")
    with pytest.raises(ArtifactError, match=r"the mask cache \(\$USAGE_CACHE_DIR.*cannot be written: /proc/usage-test-unwritable"):
        load_dataset("coco", coco, "train")
