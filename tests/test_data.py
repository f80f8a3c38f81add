"""Dataset loaders on hand-made layouts and on the real data in ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from usage_cli.data import dataset_names, load_dataset
from usage_cli.data.io import read_image, read_mask
from usage_cli.errors import DatasetError


def _voc(tmp_path, ids=("a", "b"), classes=None, cls_labels=None, xml=True, mask_values=None):
    v = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (v / d).mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(ids):
        Image.new("RGB", (6, 4), (k * 40, 0, 0)).save(v / "JPEGImages" / f"{i}.jpg")
        m = np.zeros((4, 6), np.uint8)
        m[1:3, 1:3] = (mask_values or {}).get(i, 1)
        Image.fromarray(m, "L").save(v / "SegmentationClass" / f"{i}.png")
        if xml:
            (v / "Annotations" / f"{i}.xml").write_text(
                "<annotation><object><name>bicycle</name></object><object><name>dog</name></object></annotation>"
            )
    (v / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    if classes:
        (tmp_path / "classes.txt").write_text("\n".join(classes))
    if cls_labels is not None:
        np.save(tmp_path / "cls_labels.npy", np.array(cls_labels, dtype=object), allow_pickle=True)
    return tmp_path


def test_registry_lists_and_rejects_unknown(tmp_path):
    assert {"voc", "coco", "folder", "images"} <= set(dataset_names())
    with pytest.raises(DatasetError, match="unknown dataset 'cityscapes'; known: coco, folder, images, voc"):
        load_dataset("cityscapes", tmp_path, "train")


def test_voc_label_precedence_cls_labels_then_xml_then_masks(tmp_path):
    root = _voc(tmp_path, cls_labels={"a": np.eye(20, dtype=np.float32)[4]})
    ds = load_dataset("voc", root, "train")
    assert [r.id for r in ds.records] == ["a", "b"]
    assert ds.records[0].labels == (5,)  # from cls_labels.npy (bottle)
    assert ds.records[1].labels == (2, 12)  # from XML: bicycle, dog
    for x in (root / "VOCdevkit/VOC2012/Annotations").iterdir():
        x.unlink()
    (root / "cls_labels.npy").unlink()
    assert load_dataset("voc", root, "train").records[1].labels == (1,)  # from the mask
    assert ds.records[0].multi_hot(20)[4] == 1.0


def test_voc_psa_pair_split_file_and_classes_txt(tmp_path):
    root = _voc(tmp_path, classes=["background", "cat", "dog"], xml=False, mask_values={"a": 2})
    lst = tmp_path / "list.txt"
    lst.write_text("/JPEGImages/b.jpg /SegmentationClassAug/b.png\n/JPEGImages/a.jpg /SegmentationClassAug/a.png\n")
    ds = load_dataset("voc", root, "whatever", split_file=lst)
    assert ds.meta.class_names == ("cat", "dog") and ds.meta.num_classes == 2
    assert [(r.id, r.labels) for r in ds.records] == [("a", (2,)), ("b", (1,))]


def test_voc_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="dataset root not found"):
        load_dataset("voc", tmp_path / "nope", "train")
    root = _voc(tmp_path)
    with pytest.raises(DatasetError, match=r"val\.txt: split file not found \(splits here: train"):
        load_dataset("voc", root, "val")
    (root / "VOCdevkit/VOC2012/JPEGImages/b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"b\.jpg: image not found"):
        load_dataset("voc", root, "train")
    assert len(load_dataset("voc", root, "train", require_images=False)) == 2
    np.save(root / "cls_labels.npy", np.array({"a": np.ones(5, np.float32)}, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="5 entries but the dataset has 20 classes"):
        load_dataset("voc", root, "train", require_images=False)


def test_io_errors_corrupt_image_wrong_size_mask_out_of_range(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match=r"bad\.jpg: unreadable or corrupt image"):
        read_image(bad)
    m = tmp_path / "m.png"
    Image.fromarray(np.full((4, 5), 7, np.uint8), "L").save(m)
    with pytest.raises(DatasetError, match="label value 7 outside 0..3"):
        read_mask(m, num_classes=3)


def test_real_voc_layout(shared_voc):
    ds = load_dataset("voc", shared_voc, "train", require_images=False)
    assert len(ds) == 1464 and ds.meta.num_classes == 20
    assert len(load_dataset("voc", shared_voc, "train_aug", require_images=False)) == 10582
    assert all(r.mask_path is not None and r.mask_path.parent.name == "SegmentationClassAug" for r in ds.records)
    with pytest.raises(DatasetError, match=r"JPEGImages/2007_000032\.jpg: image not found"):
        load_dataset("voc", shared_voc, "train")


def test_real_voc_three_images_load(shared_voc, tmp_path):
    ids = ["2011_000003", "2011_000006", "2011_000025"]
    (tmp_path / "three.txt").write_text("\n".join(ids))
    ds = load_dataset("voc", shared_voc, "three", split_file=tmp_path / "three.txt")
    for r in ds.records:
        img, mask = read_image(r.image_path), read_mask(r.mask_path, 20)
        assert img.ndim == 3 and mask.shape == img.shape[:2]


def test_real_msrc_objects():
    from conftest import shared_path

    root = shared_path("msrc-objects")
    tr, va = load_dataset("voc", root, "train"), load_dataset("voc", root, "val")
    assert (len(tr), len(va)) == (326, 98) and tr.meta.num_classes == 15
    assert tr.meta.class_names[0] == "cow"
    assert sum(not r.labels for r in tr.records + va.records) == 69


def test_real_coco128():
    from conftest import shared_path

    root = shared_path("coco128")
    ds = load_dataset("coco", root, "train")
    assert len(ds) == 128 and ds.meta.num_classes == 80 and len(ds.meta.all_names) == 81
    for r in ds.records[:20]:
        mask = read_mask(r.mask_path, 80)
        assert set(r.labels) == set(np.unique(mask).tolist()) - {0, 255}


def test_coco_toco_layout(tmp_path):
    for sub in ("JPEGImages/val", "SegmentationClass/val"):
        (tmp_path / sub).mkdir(parents=True)
    i = "COCO_val2014_000000000042"
    Image.new("RGB", (4, 4)).save(tmp_path / "JPEGImages/val" / f"{i}.jpg")
    m = np.zeros((4, 4), np.uint8)
    m[0, 0] = 80
    Image.fromarray(m, "L").save(tmp_path / "SegmentationClass/val" / f"{i}.png")
    (tmp_path / "val.txt").write_text(i + "\n")
    ds = load_dataset("coco", tmp_path, "val")
    assert ds.records[0].labels == (80,) and ds.records[0].image_path.parent.name == "val"


@pytest.fixture
def shared_voc():
    from conftest import shared_path

    return shared_path("voc2012")
