"""`usage train-cls` end to end on the tiny synth set: artifacts, determinism, exact resume, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from usage_cli.artifacts.checkpoint import load_checkpoint
from usage_cli.cli import app
from usage_cli.errors import ConfigError, DatasetError
from usage_cli.models.classifier import build_classifier
from usage_cli.stages.train_cls import TrainClsConfig, run

TINY = dict(backbone="deit_t", pretrained=False, device="cpu", epochs=1, batch_size=4, img_size=32, aug="light", lr=1e-3, val_split=None, quiet=True)


def _cfg(root, out, **kw):
    return TrainClsConfig(dataset="voc", root=root, out=out, split="train", **{**TINY, **kw})


def _weights(path):
    return load_checkpoint(path)["model"]


def test_cli_writes_checkpoint_manifest_and_log(synth_root, tmp_path):
    res = CliRunner().invoke(app, [
        "train-cls", "--root", str(synth_root), "--split", "train", "--out", str(tmp_path / "cls"), "--backbone", "deit_t",
        "--no-pretrained", "--epochs", "2", "--batch-size", "4", "--img-size", "32", "--aug", "light", "--lr", "1e-3", "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tmp_path / "cls" / "checkpoint.pt")
    assert ckpt["format"] == "usage-cls-checkpoint" and ckpt["seed_network"] == "teacher"
    assert ckpt["model_config"]["mapping"] == "cm" and ckpt["model_config"]["tau1"] == 1.0  # paper preset, transformer
    assert ckpt["train_config"]["tau2"] == 0.1 and ckpt["train_config"]["lam"] == 0.25
    net = build_classifier(ckpt["model_config"])
    net.load_state_dict(ckpt["model"])  # the checkpoint rebuilds its network
    log = [json.loads(x) for x in (tmp_path / "cls" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1]
    for key in ("loss_cls", "loss_reg", "lr", "images_per_s", "learning_status", "student_drop_path", "val_mAP", "val_F1"):
        assert key in log[-1]
    assert 0.05 <= log[-1]["student_drop_path"] <= 0.15
    manifest = json.loads((tmp_path / "cls" / "manifest.json").read_text())
    assert manifest["stage"] == "train-cls" and "cls_labels" in manifest["inputs"]


def test_cnn_preset_uses_tau1_50(synth_root, tmp_path):
    run(_cfg(synth_root, tmp_path / "c", backbone="efficientnet_lite0", img_size=32, reg="none", batch_size=6))
    ckpt = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    assert ckpt["model_config"]["tau1"] == 50.0 and ckpt["train_config"]["optimizer"] == "sgd"
    assert ckpt["seed_network"] == "student"


def test_same_seed_same_weights(synth_root, tmp_path):
    run(_cfg(synth_root, tmp_path / "a", seed=3))
    run(_cfg(synth_root, tmp_path / "b", seed=3))
    run(_cfg(synth_root, tmp_path / "c", seed=4))
    a, b, c = (_weights(tmp_path / x / "checkpoint.pt") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_exactly(synth_root, tmp_path):
    run(_cfg(synth_root, tmp_path / "straight", epochs=2))
    # one epoch, then "interrupted": rerun asking for 2 epochs with --resume
    cfg = _cfg(synth_root, tmp_path / "split", epochs=2)
    _run_first_epoch_only(cfg)
    run(replace(cfg, resume=True))
    a, b = _weights(tmp_path / "straight" / "checkpoint.pt"), _weights(tmp_path / "split" / "checkpoint.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the straight run"
    with pytest.raises(ConfigError, match="another config"):
        run(replace(cfg, resume=True, lr=5e-3))


def test_a_path_spelled_another_way_is_the_same_run(synth_root, tmp_path, monkeypatch):
    """Relative or absolute, the same root is the same option: --resume continues an interrupted run and
    a finished run is rerun in place; another folder with the same files is another option."""
    monkeypatch.chdir(synth_root.parent)
    relative = Path(synth_root.name)
    cfg = _cfg(relative, tmp_path / "run", epochs=2)
    _run_first_epoch_only(cfg)
    epochs = lambda: [json.loads(line)["epoch"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]  # noqa: E731
    run(replace(cfg, root=synth_root.resolve(), resume=True))  # the interrupted run, root given absolute: epoch 0 is not redone
    assert epochs() == [1]
    run(replace(cfg, root=synth_root.resolve(), epochs=3, resume=True))  # the finished run extended, absolute again
    assert epochs() == [1, 2]
    copy = tmp_path / "copy"
    shutil.copytree(synth_root, copy)
    with pytest.raises(ConfigError, match=r"another config \(root differ"):
        run(replace(cfg, root=copy, epochs=3, resume=True))


def _run_first_epoch_only(cfg):
    """Train with the 2-epoch config but stop after epoch 0, as a killed run would."""
    from usage_cli.engine import resume

    original = resume._save_last

    def save_then_stop(*args):
        original(*args)
        raise KeyboardInterrupt

    resume._save_last = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    finally:
        resume._save_last = original
    assert not (cfg.out / "checkpoint.pt").exists()  # an interrupted run publishes nothing


def test_bad_inputs(synth_root, tmp_path):
    with pytest.raises(ConfigError, match="not divisible by the patch size 16"):
        run(_cfg(synth_root, tmp_path / "x", img_size=40))
    empty = tmp_path / "empty"
    from usage_cli.data.synth import generate

    generate(empty, 2, 1, 32, seed=0)
    np.save(empty / "cls_labels.npy", np.array({f"train_{i:05d}": np.zeros(6, np.float32) for i in range(2)}, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="no image with a positive class label"):
        run(_cfg(empty, tmp_path / "y"))
    res = CliRunner().invoke(app, ["train-cls", "--root", str(synth_root), "--out", str(tmp_path / "z"), "--backbone", "alexnet9000"])
    assert res.exit_code == 2 and "unknown backbone 'alexnet9000'" in res.output


def test_config_file_fills_the_options_not_given(synth_root, tmp_path):
    from usage_cli.config import merge_config, read_config_file

    (tmp_path / "c.json").write_text(json.dumps({"tau1": 2.5, "epochs": 7, "lr": 9.0}))
    cfg = merge_config(_cfg(synth_root, tmp_path / "o"), read_config_file(tmp_path / "c.json"), given={"lr"})
    assert cfg.tau1 == 2.5 and cfg.epochs == 7 and cfg.lr == 1e-3  # the explicit flag wins
    (tmp_path / "bad.json").write_text(json.dumps({"tau3": 1}))
    with pytest.raises(ConfigError, match="unknown option"):
        merge_config(_cfg(synth_root, tmp_path / "o"), read_config_file(tmp_path / "bad.json"))
