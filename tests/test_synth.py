"""The built-in synthetic dataset: deterministic, readable by the voc loader, a fair WSSS miniature."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import numpy as np
from typer.testing import CliRunner

from usage_cli.cli import app
from usage_cli.data import load_dataset
from usage_cli.data.io import read_image, read_mask
from usage_cli.data.synth import CLASSES, PREFERRED, generate, sample_image


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate(tmp_path / "a", 4, 2, 64, seed=3)
    generate(tmp_path / "b", 4, 2, 64, seed=3)
    generate(tmp_path / "c", 4, 2, 64, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_labels_and_xml_agree_with_masks(synth_root):
    ds = load_dataset("voc", synth_root, "train")
    assert len(ds) == 12 and ds.meta.class_names == CLASSES
    assert len(load_dataset("voc", synth_root, "val")) == 6
    assert len(load_dataset("voc", synth_root, "train_aug")) == 12
    for r in ds.records:
        img, mask = read_image(r.image_path), read_mask(r.mask_path, ds.meta.num_classes)
        assert img.shape == (64, 64, 3) and mask.shape == img.shape[:2]
        assert r.labels == tuple(sorted(set(np.unique(mask).tolist()) - {0, 255}))
        xml = ET.parse(synth_root / "VOCdevkit/VOC2012/Annotations" / f"{r.id}.xml")
        names = {o.findtext("name") for o in xml.getroot().iter("object")}
        assert names == {CLASSES[c - 1] for c in r.labels}


def test_it_is_a_wsss_problem_not_a_trivial_one():
    rng = np.random.default_rng(0)
    head_frac, context, n_with_pref, objects_per_image, ignore_px, sizes = [], 0, 0, [], 0, []
    for _ in range(300):
        img, mask, objects, bg = sample_image(96, rng)
        objects_per_image.append(len(objects))
        ignore_px += int((mask == 255).sum())
        for o in objects:
            head_frac.append(o.head.sum() / o.body.sum())
            sizes.append(o.body.sum())
        if objects and PREFERRED[CLASSES[objects[0].cls - 1]] is not None:
            n_with_pref += 1
            context += bg == PREFERRED[CLASSES[objects[0].cls - 1]]
    # the discriminative head is a small part of the object's extent: CAMs under-activate
    assert 0.03 < np.mean(head_frac) and np.max(head_frac) < 0.25
    # context co-occurs with its class far above chance (1/5): activation leaks into background
    assert context / n_with_pref > 0.7
    # several objects per image, some images without any, varied sizes, VOC-like ignore borders
    assert max(objects_per_image) == 3 and 0 in objects_per_image
    assert np.percentile(sizes, 90) > 3 * np.percentile(sizes, 10)
    assert ignore_px > 0


def test_cli_writes_manifest_and_refuses_bad_arguments(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "d"), "--train", "3", "--val", "1", "--size", "48"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "d" / "manifest.json").exists()
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "d"), "--train", "4", "--val", "1", "--size", "48"])
    assert res.exit_code == 2 and "pass --force" in res.output
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "e"), "--size", "8"])
    assert res.exit_code == 2 and "--size must be in 32..2048" in res.output


def test_twenty_classes_lower_each_class_frequency(tmp_path):
    """--classes 20: VOC's regime (each class in 5-10 % of the images), the six default classes kept."""
    from usage_cli.data.synth import class_table

    names, heads, _ = class_table(20)
    assert names[:6] == CLASSES and len(set(names)) == 20
    assert len({heads[n] for n in names}) == 20  # every class has its own head (colour, pattern)
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "t"), "--train", "60", "--val", "2", "--size", "48", "--classes", "20"])
    assert res.exit_code == 0, res.output
    ds = load_dataset("voc", tmp_path / "t", "train")
    assert ds.meta.class_names == names
    freq = np.stack([r.multi_hot(20) for r in ds.records]).mean(0)
    assert freq.max() < 0.25 and freq.mean() < 0.12
    for r in ds.records[:10]:
        mask = read_mask(r.mask_path, 20)
        assert r.labels == tuple(sorted(set(np.unique(mask).tolist()) - {0, 255}))
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "u"), "--classes", "21"])
    assert res.exit_code == 2 and "--classes must be in 2..20" in res.output


def test_train_aug_adds_images_to_the_classifier_split_only(tmp_path):
    """--train-aug K: train_aug = train + K more images (as VOC's train_aug = train + SBD); train and val
    are the images they were without it, byte for byte."""
    generate(tmp_path / "a", 4, 2, 48, seed=5)
    generate(tmp_path / "b", 4, 2, 48, seed=5, n_aug=3)
    lists = tmp_path / "b" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    assert (lists / "train_aug.txt").read_text().split() == [f"train_{i:05d}" for i in range(4)] + [f"aug_{i:05d}" for i in range(3)]
    assert (lists / "train.txt").read_text().split() == [f"train_{i:05d}" for i in range(4)]
    jpg = "VOCdevkit/VOC2012/JPEGImages"
    for i in ("train_00003", "val_00001"):
        assert (tmp_path / "a" / jpg / f"{i}.jpg").read_bytes() == (tmp_path / "b" / jpg / f"{i}.jpg").read_bytes()
    assert len(load_dataset("voc", tmp_path / "b", "train_aug")) == 7 and len(load_dataset("voc", tmp_path / "b", "train")) == 4
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "c"), "--train-aug", "-1"])
    assert res.exit_code == 2 and "--train-aug in 0.." in res.output
