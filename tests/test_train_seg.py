"""train-seg / predict-seg: loss, dataset checks, the CLI chain to evaluate, resume, error paths."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import torchrun
from typer.testing import CliRunner

from usage_cli.artifacts.labels import read_label_png, write_label_png
from usage_cli.artifacts.manifest import build_manifest, sha256_file, write_manifest
from usage_cli.cli import app
from usage_cli.errors import ArtifactError, ConfigError

runner = CliRunner()
TINY = {"backbone": "resnet18", "pretrained": False, "epochs": 2, "batch_size": 4, "crop": 32, "workers": 0, "device": "cpu", "quiet": True, "aspp_channels": 16}


def _voc(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


@pytest.fixture(scope="module")
def fake_masks(synth_root, tmp_path_factory) -> Path:
    """The train split's ground-truth masks posing as a refine-psa output (with its manifest)."""
    out = tmp_path_factory.mktemp("masks")
    for p in sorted((_voc(synth_root) / "SegmentationClass").glob("train_*.png")):
        shutil.copy(p, out / p.name)
    write_manifest(out, build_manifest("refine-psa", {"note": "ground truth posing as pseudo masks"}))
    return out


def _train_cfg(fake_masks, synth_root, out, **kw):
    from usage_cli.stages.train_seg import TrainSegConfig

    return TrainSegConfig(masks=fake_masks, root=synth_root, out=out, split="train", **{**TINY, **kw})


# ---------------------------------------------------------------- loss and task


def test_seg_loss_golden_and_all_ignored():
    from usage_cli.tasks.segmentation import seg_loss

    # two pixels: logits (0, ln 3) with label 1 -> p = 3/4; the second pixel is ignored
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0]]).T.reshape(1, 2, 1, 2)
    label = torch.tensor([[[1, 255]]])
    torch.testing.assert_close(seg_loss(logits, label), torch.tensor(math.log(4 / 3)))
    z = logits.clone().requires_grad_(True)
    loss = seg_loss(z, torch.full((1, 1, 2), 255))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(z.grad.abs().sum()) == 0.0


def test_head_trains_at_ten_times_the_backbone_rate():
    from usage_cli.models.segnet import build_segnet
    from usage_cli.tasks.segmentation import SegmentationTask

    task = SegmentationTask(build_segnet({"backbone": "resnet18", "num_classes": 3, "aspp_channels": 8}))
    groups = task.param_groups(0.01)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    assert {id(p) for p in groups[0]["params"]}.isdisjoint({id(p) for p in groups[1]["params"]})
    assert id(task.net.classifier.weight) in {id(p) for p in groups[1]["params"]}


def test_dataset_checks_masks(synth_root, fake_masks, tmp_path):
    from usage_cli.data import load_dataset
    from usage_cli.tasks.segmentation import PseudoMaskDataset

    ds = load_dataset("voc", synth_root, "train")
    item = PseudoMaskDataset(ds.records, fake_masks, ds.meta.num_classes, crop=40)[0]
    assert tuple(item["image"].shape) == (3, 40, 40) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) <= set(range(ds.meta.num_classes + 1)) | {255}
    bad = tmp_path / "bad"
    shutil.copytree(fake_masks, bad)
    (bad / f"{ds.records[3].id}.png").unlink()
    with pytest.raises(ArtifactError, match=ds.records[3].id):
        PseudoMaskDataset(ds.records, bad, ds.meta.num_classes, crop=40)
    write_label_png(bad / f"{ds.records[3].id}.png", np.full((10, 10), 1, np.uint8))
    write_label_png(bad / f"{ds.records[0].id}.png", np.full((64, 64), 9, np.uint8))
    d = PseudoMaskDataset(ds.records, bad, ds.meta.num_classes, crop=40)
    with pytest.raises(ArtifactError, match="label value 9"):
        d[0]
    with pytest.raises(ArtifactError, match="differs from image"):
        d[3]


# ---------------------------------------------------------------- the chain through the CLI


def test_cli_train_predict_evaluate_chain(synth_root, fake_masks, tmp_path):
    seg, pred = tmp_path / "seg", tmp_path / "pred"
    args = ["train-seg", "--masks", fake_masks, "--root", synth_root, "--split", "train", "--out", seg,
            "--backbone", "resnet18", "--no-pretrained", "--aspp-channels", "16", "--epochs", "2", "--batch-size", "4",
            "--crop", "48", "--workers", "0", "--device", "cpu", "--quiet"]  # fmt: skip
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    ckpt = torch.load(seg / "checkpoint.pt", weights_only=True)
    assert ckpt["format"] == "usage-seg-checkpoint" and ckpt["version"] == "1.0.0"
    assert ckpt["model_config"]["num_classes"] == 7 and len(ckpt["class_names"]) == 6
    man = json.loads((seg / "manifest.json").read_text())
    assert man["stage"] == "train-seg"
    assert man["inputs"]["masks"]["sha256"] == sha256_file(fake_masks / "manifest.json")
    assert man["artifact_sha256"] == sha256_file(seg / "checkpoint.pt")
    log = [json.loads(ln) for ln in (seg / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1] and log[1]["loss"] < log[0]["loss"]

    r = runner.invoke(app, ["predict-seg", "--ckpt", str(seg / "checkpoint.pt"), "--root", str(synth_root),
                            "--split", "val", "--out", str(pred), "--scales", "0.75,1", "--device", "cpu", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    pman = json.loads((pred / "manifest.json").read_text())
    assert pman["stage"] == "predict-seg" and pman["inputs"]["checkpoint"]["sha256"] == sha256_file(seg / "checkpoint.pt")
    pngs = sorted(pred.glob("*.png"))
    assert len(pngs) == 6 and not (pred / ".predict-seg.partial.json").exists()
    for p in pngs:
        lab = read_label_png(p)
        assert lab.shape == (64, 64) and lab.max() <= 6

    r = runner.invoke(app, ["evaluate", "--pred", str(pred), "--root", str(synth_root), "--split", "val",
                            "--out", str(tmp_path / "metrics.json"), "--workers", "1", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 100.0 and metrics["num_images"] == 6 and metrics["num_missing"] == 0
    gt = [read_label_png(_voc(synth_root) / "SegmentationClass" / p.name) for p in pngs]
    assert np.asarray(metrics["confusion"]).sum() == sum(int((g != 255).sum()) for g in gt)


# ---------------------------------------------------------------- resume


class _Interrupt(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_weights(synth_root, fake_masks, tmp_path, monkeypatch):
    from usage_cli.stages.train_seg import run
    from usage_cli.tasks.segmentation import PseudoMaskDataset

    full = torch.load(run(_train_cfg(fake_masks, synth_root, tmp_path / "a")), weights_only=True)["model"]
    # interrupt during the second epoch (12 images per epoch)
    calls = {"n": 0}
    original = PseudoMaskDataset.__getitem__

    def flaky(self, i):
        calls["n"] += 1
        if calls["n"] > 14:
            raise _Interrupt
        return original(self, i)

    monkeypatch.setattr(PseudoMaskDataset, "__getitem__", flaky)
    with pytest.raises(_Interrupt):
        run(_train_cfg(fake_masks, synth_root, tmp_path / "b"))
    assert (tmp_path / "b" / "last.pt").exists() and not (tmp_path / "b" / "checkpoint.pt").exists()
    monkeypatch.setattr(PseudoMaskDataset, "__getitem__", original)
    resumed = torch.load(run(_train_cfg(fake_masks, synth_root, tmp_path / "b", resume=True)), weights_only=True)["model"]
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], msg=k)
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == 2
    # a resume with other settings is refused
    with pytest.raises(ConfigError):
        run(_train_cfg(fake_masks, synth_root, tmp_path / "b", resume=True, lr=0.5))


def test_interrupted_prediction_resumes(synth_root, fake_masks, tmp_path, monkeypatch):
    import usage_cli.artifacts.labels as labels
    from usage_cli.stages.predict_seg import PredictSegConfig
    from usage_cli.stages.predict_seg import run as predict
    from usage_cli.stages.train_seg import run

    ckpt = run(_train_cfg(fake_masks, synth_root, tmp_path / "seg", epochs=1))
    cfg = PredictSegConfig(ckpt=ckpt, root=synth_root, out=tmp_path / "p", split="val", device="cpu", quiet=True)
    reference = predict(PredictSegConfig(**{**cfg.__dict__, "out": tmp_path / "ref"}))
    assert reference["skipped"] == 0
    original, calls = labels.write_label_png, {"n": 0}

    def flaky(path, label):
        calls["n"] += 1
        if calls["n"] > 2:
            raise _Interrupt
        original(path, label)

    monkeypatch.setattr(labels, "write_label_png", flaky)
    with pytest.raises(_Interrupt):
        predict(cfg)
    assert not (tmp_path / "p" / "manifest.json").exists()
    monkeypatch.setattr(labels, "write_label_png", original)
    assert predict(cfg)["skipped"] == 2
    for p in sorted((tmp_path / "ref").glob("*.png")):
        np.testing.assert_array_equal(read_label_png(tmp_path / "p" / p.name), read_label_png(p))
    # other settings: everything is redone
    # other settings over the finished run: refused without --force (issue 11), then everything is redone
    with pytest.raises(ConfigError, match="another config"):
        predict(PredictSegConfig(**{**cfg.__dict__, "flip": False}))
    assert predict(PredictSegConfig(**{**cfg.__dict__, "flip": False, "force": True}))["skipped"] == 0


def test_two_ranks_train_with_ddp_and_only_rank_0_publishes(synth_root, fake_masks, tmp_path):
    from usage_cli.models.segnet import load_segnet

    out = tmp_path / "seg"
    torchrun(
        "-m", "usage_cli", "train-seg", "--masks", str(fake_masks), "--root", str(synth_root), "--split", "train",
        "--out", str(out), "--backbone", "resnet18", "--no-pretrained", "--epochs", "2", "--batch-size", "2", "--crop", "32",
        "--aspp-channels", "16", "--workers", "0", "--device", "cpu", "--quiet", timeout=300,
    )  # fmt: skip
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # one line an epoch, not one a rank
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact_sha256"] == sha256_file(out / "checkpoint.pt")
    net, ckpt = load_segnet(out / "checkpoint.pt")
    assert ckpt["model_config"]["backbone"] == "resnet18"


def test_two_ranks_predict_every_id_once_like_one_process(synth_root, fake_masks, tmp_path):
    from usage_cli.stages.predict_seg import PredictSegConfig
    from usage_cli.stages.predict_seg import run as predict
    from usage_cli.stages.train_seg import run

    ckpt = run(_train_cfg(fake_masks, synth_root, tmp_path / "seg", epochs=1))
    predict(PredictSegConfig(ckpt=ckpt, root=synth_root, out=tmp_path / "one", split="val", device="cpu", quiet=True))
    torchrun(
        "-m", "usage_cli", "predict-seg", "--ckpt", str(ckpt), "--root", str(synth_root), "--split", "val", "--out",
        str(tmp_path / "two"), "--device", "cpu", "--quiet", timeout=300,
    )  # fmt: skip
    one = sorted((tmp_path / "one").glob("*.png"))
    assert [p.name for p in one] == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    for p in one:
        np.testing.assert_array_equal(read_label_png(tmp_path / "two" / p.name), read_label_png(p))
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["images"] == len(one)
    assert not (tmp_path / "two" / ".predict-seg.partial.json").exists()


# ---------------------------------------------------------------- error paths


def _cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def test_cli_errors(synth_root, fake_masks, tmp_path):
    base = ["--root", synth_root, "--split", "train", "--out", tmp_path / "o", "--no-pretrained", "--device", "cpu", "--quiet"]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("train-seg", "--masks", empty, *base)
    assert r.exit_code == 2 and "usage refine-psa" in r.output
    r = _cli("train-seg", "--masks", fake_masks, "--backbone", "nonet", *base)
    assert r.exit_code == 2 and "unknown backbone" in r.output
    r = _cli("train-seg", "--masks", fake_masks, "--output-stride", "32", *base)
    assert r.exit_code == 2 and "8 or 16" in r.output
    r = _cli("train-seg", "--masks", fake_masks, "--weights", tmp_path / "nope.pt", *base)
    assert r.exit_code == 2 and "nope.pt" in r.output
    torch.save({"format": "usage-cls-checkpoint"}, tmp_path / "cls.pt")
    pbase = ["--root", synth_root, "--out", tmp_path / "p", "--device", "cpu", "--quiet"]
    r = _cli("predict-seg", "--ckpt", tmp_path / "cls.pt", *pbase)
    assert r.exit_code == 2 and "usage train-seg" in r.output
    r = _cli("predict-seg", "--ckpt", tmp_path / "missing.pt", *pbase)
    assert r.exit_code == 2 and "missing.pt" in r.output
    r = _cli("predict-seg", "--ckpt", tmp_path / "cls.pt", "--scales", "0,1", *pbase)
    assert r.exit_code == 2 and "--scales" in r.output
