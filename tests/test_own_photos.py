"""A user's own photos through the real CLI (issue 28): a ``--dataset folder`` set (subfolders, masks
under ROOT/masks/) through the whole chain, new photos segmented with ``predict-seg --images`` and
shown by ``usage report``, and a COCO JSON (no PNG mask on disk) that trains, seeds and scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from own_photos import bare_photos, coco_set, folder_from_synth
from PIL import Image
from typer.testing import CliRunner

from usage_cli.artifacts import mask_cache
from usage_cli.artifacts.labels import label_path, read_label_png
from usage_cli.cli import app
from usage_cli.data.synth import generate

pytest.importorskip("pydensecrf")
runner = CliRunner()


def _usage(*args) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"usage {args[0]} failed:\n{res.output}"
    return res.output


CLS = ("--backbone", "deit_t", "--no-pretrained", "--epochs", 1, "--batch-size", 2, "--img-size", 32, "--aug", "light", "--lr", 1e-3)
SEG = ("--backbone", "efficientnet_lite0", "--no-pretrained", "--epochs", 1, "--batch-size", 2, "--crop", 64, "--aspp-channels", 16,
       "--workers", 0, "--device", "cpu")  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    w = tmp_path_factory.mktemp("own")
    generate(w / "voc", n_train=4, n_val=3, size=64, seed=3)
    root = folder_from_synth(w / "voc", w / "photos")
    bare_photos(w / "voc", w / "new")
    d = ["--dataset", "folder", "--root", root, "--split", "train", "--quiet"]
    _usage("train-cls", *d, "--out", w / "run" / "cls", *CLS, "--val-split", "val")
    _usage("gen-seeds", *d, "--ckpt", w / "run" / "cls" / "checkpoint.pt", "--out", w / "run" / "seeds", "--scales", "1.0", "--overlays", 2)
    _usage("refine-psa", *d, "--seeds", w / "run" / "seeds" / "seeds.h5", "--out", w / "run" / "masks", "--backbone", "efficientnet_lite0",
           "--no-pretrained", "--epochs", 1, "--batch-size", 2, "--crop", 64, "--workers", 1, "--device", "cpu")  # fmt: skip
    _usage("train-seg", *d, "--masks", w / "run" / "masks", "--out", w / "run" / "seg", *SEG)
    _usage("predict-seg", *d[:-3], "--split", "val", "--quiet", "--ckpt", w / "run" / "seg" / "checkpoint.pt", "--out", w / "run" / "preds-val", "--device", "cpu")
    for name, split, pred in (("seeds", "train", "seeds/seeds.h5"), ("masks", "train", "masks"), ("preds", "val", "preds-val")):
        _usage("evaluate", "--dataset", "folder", "--root", root, "--split", split, "--pred", w / "run" / pred,
               "--out", w / "run" / "metrics" / f"{name}-{split}.json", "--quiet", "--workers", 1)  # fmt: skip
    _usage("predict-seg", "--ckpt", w / "run" / "seg" / "checkpoint.pt", "--images", w / "new", "--out", w / "preds-new", "--device", "cpu", "--quiet")
    return w


def test_the_folder_set_runs_every_stage_and_scores(chain):
    w = chain
    ids = {"train_00000", "more/train_00001", "train_00002", "more/train_00003"}
    assert set(json.loads((w / "run" / "metrics" / "seeds-train.json").read_text())["per_image"]) == ids
    for name in ("seeds-train", "masks-train", "preds-val"):
        m = json.loads((w / "run" / "metrics" / f"{name}.json").read_text())
        assert m["dataset"] == "folder" and m["miou"] + m["fpr"] + m["fnr"] == pytest.approx(100.0, abs=1e-3)
    # a photo in a subfolder is one flat PNG in every label folder
    assert label_path(w / "run" / "masks", "more/train_00001").name == "more%2Ftrain_00001.png"
    assert {p.name for p in (w / "run" / "masks").glob("*.png")} == {label_path(w, i).name for i in ids}


def test_new_photos_get_one_mask_and_one_overlay_each(chain):
    w = chain
    photos = sorted(p for p in (w / "new").rglob("*.jpg"))
    assert len(photos) == 3
    pngs, overlays = sorted((w / "preds-new").glob("*.png")), sorted((w / "preds-new" / "overlays").glob("*.jpg"))
    assert [p.stem for p in pngs] == [p.stem for p in overlays] == ["new1", "new2", "sub%2Fnew0"]
    for photo, png, overlay in zip(sorted(photos, key=lambda p: p.stem), pngs, overlays, strict=True):
        size = Image.open(photo).size
        assert read_label_png(png).shape == size[::-1]
        assert Image.open(overlay).width == 2 * size[0] + 4  # the photo | its prediction, the legend below
    names = (w / "preds-new" / "classes.txt").read_text().splitlines()
    assert names[0] == "background" and names[1:] == (w / "photos" / "classes.txt").read_text().splitlines()
    manifest = json.loads((w / "preds-new" / "manifest.json").read_text())
    assert manifest["config"]["dataset"] == "images" and set(manifest["files"]) >= {"classes.txt", "overlays/new1.jpg"}


def test_images_wins_over_a_config_files_dataset(chain, tmp_path):
    (tmp_path / "c.yaml").write_text(f"dataset: folder\nroot: {chain / 'photos'}\nsplit: val\n")
    out = _usage("predict-seg", "--ckpt", chain / "run" / "seg" / "checkpoint.pt", "--images", chain / "new", "--out", tmp_path / "p",
                 "--config", tmp_path / "c.yaml", "--print-config")  # fmt: skip
    assert "dataset: images" in out and f"root: {chain / 'new'}" in out and "split: images" in out


def test_report_shows_new_photos_as_a_gallery_and_the_run(chain):
    w = chain
    _usage("report", w / "preds-new", "--html", w / "report-new")
    html = (w / "report-new" / "index.html").read_text()
    assert all(i in html for i in ("sub/new0", "new1", "new2")) and "prediction" in html
    assert "no scores to sort by" in html and "worst first" not in html  # nothing scored, nothing ranked
    out = _usage("report", w / "run", "--html", w / "report-run")
    assert "seeds-train" in out and "preds-val" in out and "more/train_00001" in (w / "report-run" / "index.html").read_text()


def test_a_coco_json_trains_seeds_and_scores_without_png_masks(tmp_path, monkeypatch):
    monkeypatch.setenv(mask_cache.CACHE_ENV, str(tmp_path / "cache"))
    root = coco_set(tmp_path / "coco")
    assert not list(root.rglob("*.png"))
    d = ["--dataset", "coco", "--root", root, "--split", "train2017", "--quiet"]
    _usage("train-cls", *d, "--out", tmp_path / "cls", *CLS, "--val-split", "")
    _usage("gen-seeds", *d, "--ckpt", tmp_path / "cls" / "checkpoint.pt", "--out", tmp_path / "seeds", "--scales", "1.0", "--overlays", 0)
    _usage("evaluate", *d, "--pred", tmp_path / "seeds" / "seeds.h5", "--out", tmp_path / "m.json", "--workers", 1)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["num_images"] == 3 and m["num_missing"] == 0 and set(m["per_class"]) >= {"person", "dog"}
    assert not list(root.rglob("*.png")) and len(list((tmp_path / "cache" / "coco-masks").rglob("*.png"))) == 3


def test_makefile_targets_take_a_folder_set():
    """`make eval DATASET=folder ROOT=...`: every data command of the Makefile passes --dataset and DATA_ARGS."""
    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    lines = [ln for ln in text.splitlines() if "$(USAGE)" in ln and "--root $(ROOT)" in ln]
    assert lines and all("--dataset $(DATASET)" in ln and "$(DATA_ARGS)" in ln for ln in lines)
