"""`usage evaluate` through the CLI on label-PNG folders and seed stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from usage_cli.artifacts.labels import write_label_png
from usage_cli.artifacts.seeds import SeedWriter
from usage_cli.cli import app
from usage_cli.stages.evaluate import EvaluateConfig, run

runner = CliRunner()
GT = {
    "a": np.array([[0, 0, 1], [0, 1, 1]], np.uint8),
    "b": np.array([[2, 2, 0], [255, 0, 0]], np.uint8),
}


@pytest.fixture
def root(tmp_path):
    v = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    (v / "SegmentationClass").mkdir(parents=True)
    (v / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i, m in GT.items():
        Image.fromarray(m, "L").save(v / "SegmentationClass" / f"{i}.png")
    (v / "ImageSets/Segmentation/val.txt").write_text("a\nb\n")
    (tmp_path / "data" / "classes.txt").write_text("cat\ndog\n")
    return tmp_path / "data"


def _cli(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def test_png_folder_golden_and_metrics_json(root, tmp_path):
    pred = tmp_path / "pred"
    write_label_png(pred / "a.png", np.array([[0, 1, 1], [0, 1, 1]], np.uint8))  # one bg pixel -> cat
    write_label_png(pred / "b.png", GT["b"])
    res = _cli("--root", root, "--pred", pred, "--out", tmp_path / "m.json", "--workers", 1)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m.json").read_text())
    # background: TP 5, FN 1 -> IoU 5/6, FNR 1/6; cat: TP 3, FP 1 -> IoU 3/4, FPR 1/4; dog perfect
    assert m["per_class"]["background"]["iou"] == pytest.approx(100 * 5 / 6, abs=1e-3)
    assert m["per_class"]["cat"]["fpr"] == pytest.approx(25.0)
    assert m["miou"] == pytest.approx(100 * (5 / 6 + 3 / 4 + 1) / 3, abs=1e-3)
    assert m["miou"] + m["fpr"] + m["fnr"] == pytest.approx(100.0, abs=1e-3)
    assert m["num_images"] == 2 and m["threshold"] is None and m["confusion"][0] == [5, 1, 0]
    assert "empty_seeds" not in m  # label maps: not a seed store
    assert "mIoU 86.1" in res.output


def test_seed_store_sweep_fixed_and_power(root, tmp_path):
    path = tmp_path / "seeds" / "seeds.h5"
    with SeedWriter(path, {}) as w:
        w.write("a", [1], np.array([[[0.1, 0.2, 0.9], [0.1, 0.8, 0.7]]]), (2, 3))
        w.write("b", [2], np.array([[[0.6, 0.6, 0.2], [0.0, 0.1, 0.25]]]), (2, 3))
        w.commit()
    res = _cli("--root", root, "--pred", path, "--out", tmp_path / "s.json", "--workers", 2)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "s.json").read_text())
    # any threshold in [0.25, 0.6) separates perfectly (a tie at 0.25 goes to background);
    # the first of them is reported
    assert m["miou"] == pytest.approx(100.0) and m["threshold"] == pytest.approx(0.25)
    assert m["curve"]["0.24"] < 100
    assert m["threshold_mode"] == "sweep-best" and len(m["curve"]) == 96 and m["curve"]["0.61"] < 100
    assert m["empty_seeds"] == {"maps": 0, "pairs": 2, "images": 0} and "empty seeds" not in res.output
    res = _cli("--root", root, "--pred", path, "--out", tmp_path / "f.json", "--bg-threshold", 0.65)
    f = json.loads((tmp_path / "f.json").read_text())
    assert f["threshold_mode"] == "fixed" and f["threshold"] == pytest.approx(0.65) and f["miou"] < 100
    res = _cli("--root", root, "--pred", path, "--out", tmp_path / "p.json", "--bg-power", 1)
    p = json.loads((tmp_path / "p.json").read_text())
    assert p["threshold_mode"] == "power" and p["miou"] == pytest.approx(100.0)


def test_empty_seed_maps_are_counted_shown_and_reported(root, tmp_path):
    path = tmp_path / "seeds" / "seeds.h5"
    with SeedWriter(path, {}) as w:
        w.write("a", [1], np.array([[[0.1, 0.2, 0.9], [0.1, 0.8, 0.7]]]), (2, 3))
        w.write("b", [1, 2], np.stack([np.zeros((2, 3)), [[0.6, 0.6, 0.2], [0.0, 0.1, 0.25]]]), (2, 3))  # cat: no activation
        w.commit()
    for quiet in ([], ["--quiet"]):  # a warning, not detail: shown with --quiet too
        res = _cli("--root", root, "--pred", path, "--out", tmp_path / "e.json", "--workers", 2, *quiet)
        assert res.exit_code == 0, res.output
        assert "empty seeds: 1 of 3 present-class seed maps are all zero (in 1 images)" in res.output
    m = json.loads((tmp_path / "e.json").read_text())
    assert m["empty_seeds"] == {"maps": 1, "pairs": 3, "images": 1}
    res = runner.invoke(app, ["report", str(tmp_path / "e.json"), "--out", str(tmp_path / "rows.json")])
    assert res.exit_code == 0, res.output
    assert "empty" in res.output and "1/3" in res.output  # the column (its header wraps at 80 columns)
    assert json.loads((tmp_path / "rows.json").read_text())[0]["empty_seeds"]["maps"] == 1


def test_missing_predictions_error_or_count_as_background(root, tmp_path):
    pred = tmp_path / "pred"
    write_label_png(pred / "a.png", GT["a"])
    res = _cli("--root", root, "--pred", pred)
    assert res.exit_code == 2
    assert "no prediction for 1 of 2 ids of 'val' (first: b)" in res.output
    out = run(EvaluateConfig(dataset="voc", root=root, split="val", pred=pred, allow_missing=True, workers=1))
    assert out["num_missing"] == 1 and out["per_class"]["dog"]["fnr"] == pytest.approx(100.0)


def test_wrong_size_prediction_and_bad_options(root, tmp_path):
    pred = tmp_path / "pred"
    write_label_png(pred / "a.png", np.zeros((3, 3), np.uint8))
    write_label_png(pred / "b.png", GT["b"])
    res = _cli("--root", root, "--pred", pred, "--workers", 1)
    assert res.exit_code == 2 and "a.png: prediction is (3, 3) but the mask is (3, 2)" in res.output
    res = _cli("--root", root, "--pred", pred, "--metric", "dice")
    assert res.exit_code == 2 and "unknown metric(s) dice" in res.output
    res = _cli("--root", root, "--pred", tmp_path / "nothing")
    assert res.exit_code == 2 and "no such folder" in res.output


def test_real_voc_train_masks_against_themselves():
    from conftest import shared_path

    voc = shared_path("voc2012")
    masks = voc / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    out = run(EvaluateConfig(dataset="voc", root=voc, split="train", pred=masks, workers=2))
    assert out["num_images"] == 1464
    assert out["miou"] == 100.0 and out["fpr"] == 0.0 and out["fnr"] == 0.0
