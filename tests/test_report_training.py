"""The report's Training and Per-image change sections, ``usage report --format`` and ``--order
changed``, and ``--tensorboard``: the training runs behind a page are found and drawn from their
``log.jsonl`` (a resumed run as one line), a run without logs still renders, the per-image table's
figures on a hand-made example, and the event files of a resumed run."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from usage_cli.artifacts.labels import read_label_png, write_label_png
from usage_cli.artifacts.manifest import build_manifest, write_manifest
from usage_cli.artifacts.seeds import SeedWriter
from usage_cli.cli import app
from usage_cli.data import load_dataset
from usage_cli.data.synth import generate
from usage_cli.engine.loop import LoopConfig, fit
from usage_cli.report.changes import change_table, records
from usage_cli.report.inputs import load_entries
from usage_cli.report.training import load_run, read_log
from usage_cli.stages.evaluate import EvaluateConfig
from usage_cli.stages.evaluate import run as evaluate
from usage_cli.stages.report import ReportConfig, write_html

pytest.importorskip("matplotlib")
runner = CliRunner()


# ---------------------------------------------------------------- a toy training run through the one loop


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, batch):
        loss = ((self.lin(batch["x"]) - batch["y"]) ** 2).mean()
        return {"loss": loss, "pixel_acc": loss.detach() * 0}  # pixel_acc: a segmentation run's key


class _Pairs(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _train(out: Path, epochs: int, resume: bool = False, tensorboard: bool = False) -> None:
    cfg = LoopConfig(epochs=epochs, batch_size=4, lr=0.05, optimizer="sgd", quiet=True, tensorboard=tensorboard)
    fit(_Toy(), _Pairs(), cfg, out, resume=resume)


def test_a_resumed_run_draws_one_continuous_curve(tmp_path):
    run = tmp_path / "seg"
    _train(run, 2)
    _train(run, 4, resume=True)  # stopped after 2 epochs, continued to 4
    write_manifest(run, build_manifest("train-seg", {"backbone": "toy", "epochs": 4}))
    r = load_run(run)
    assert r.stage == "train-seg" and [e["epoch"] for e in r.epochs] == [0, 1, 2, 3] and r.planned == 4
    from usage_cli.report.figures import training_figure

    fig = training_figure([replace(r, name="seg")], ["loss", "lr"], "t")
    (line,) = fig.axes[0].get_lines()  # one line, not one per invocation
    assert list(line.get_xdata()) == [1, 2, 3, 4]
    assert np.allclose(line.get_ydata(), [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()])
    # a log that holds an epoch twice (e.g. written by another tool before a resume): the last line wins
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([*lines[:3], json.dumps({**json.loads(lines[2]), "loss": 9.0}), lines[3], "not json"]) + "\n")
    epochs, skipped = read_log(run / "log.jsonl")
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3] and epochs[2]["loss"] == 9.0 and skipped == 1


def test_tensorboard_events_of_a_resumed_run_continue(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "cls"
    _train(run, 2, tensorboard=True)
    _train(run, 3, resume=True, tensorboard=True)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("loss")]
    assert steps == [1, 2, 3]
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([x["loss"] for x in log], rel=1e-5)
    assert {"lr", "pixel_acc", "images_per_s"} <= set(acc.Tags()["scalars"])


def test_tensorboard_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    generate(tmp_path / "data", n_train=2, n_val=0, size=32, seed=0)
    res = runner.invoke(app, ["train-seg", "--masks", str(tmp_path / "m"), "--root", str(tmp_path / "data"), "--split", "train",
                              "--out", str(tmp_path / "seg"), "--tensorboard", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 2 and "pip install 'usage-wsss[tensorboard]'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "seg").exists()


# ---------------------------------------------------------------- per-image change: a hand-made example


def test_change_figures_on_a_hand_made_image(tmp_path):
    """Seeds: class 1 on columns 0-4 of a 10 x 10 image (cut at 0.5); masks: class 1 on columns 0-2,
    ignore on column 3; predictions: class 2 on columns 0-2."""
    from usage_cli.report.inputs import Entry

    cam = np.zeros((1, 10, 10), np.float32)
    cam[0, :, :5] = 1.0
    big = np.zeros((1, 400, 300), np.float32)  # counted on every 3rd pixel (400 / 160, rounded up)
    big[0, :, :150] = 1.0
    with SeedWriter(tmp_path / "seeds" / "seeds.h5", {"class_names": ["a", "b"]}) as w:
        w.write("img", [1], cam, (10, 10))
        w.write("big", [2], big, (400, 300))
        w.commit({"bg_threshold": 0.5, "bg_threshold_rule": "test"})
    masks, preds = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    masks[:, :3], masks[:, 3], preds[:, :3] = 1, 255, 2
    write_label_png(tmp_path / "masks" / "img.png", masks)
    write_label_png(tmp_path / "preds" / "img.png", preds)

    def entry(name, kind, artifact):
        return Entry(name=name, kind=kind, split="val", metrics=None, metrics_path=None, recorded=None, artifact=artifact, manifest=None, dataset=None)

    t = change_table("val", [entry("s", "seeds", tmp_path / "seeds" / "seeds.h5"), entry("m", "masks", tmp_path / "masks"),
                             entry("p", "preds", tmp_path / "preds")])  # fmt: skip
    r, other = t.rows  # "img" changed more than "big", which the masks and predictions do not have
    assert other.id == "big" and other.area["seeds"] == pytest.approx(100 * 50 / 100) and other.kept == {"masks": None, "preds": None}
    assert t.chain == {"seeds": "s", "masks": "m", "preds": "p"} and t.seed_threshold == 0.5
    assert r.area == pytest.approx({"seeds": 50.0, "masks": 100 * 30 / 90, "preds": 30.0})
    # masks keep 30 (class 1) + 50 (background) of the 90 pixels not ignored; predictions keep 60 of 90
    assert r.kept == pytest.approx({"masks": 100 * 80 / 90, "preds": 100 * 60 / 90})
    assert r.change == pytest.approx(100 * 30 / 90) and r.changed_by == "preds"
    rec, _ = records([t])
    assert rec["masks_kept"] == 88.89 and rec["preds_fg"] == 30.0 and rec["seeds"] == "s" and rec["seeds_miou"] is None


# ---------------------------------------------------------------- a run folder with training logs


def _log(folder: Path, stage: str, config: dict, lines: list[dict], manifest: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "last.pt").write_bytes(b"")
    (folder / "checkpoint.pt").write_bytes(b"")
    if manifest:
        write_manifest(folder, build_manifest(stage, config))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """``base/run`` as `make demo` leaves it, in small: classifiers (USAGE and the CAM baseline), the
    USAGE seeds, pseudo masks with their AffinityNet run, a segmentation run and its predictions, val only."""
    base = tmp_path_factory.mktemp("training")
    run = base / "run"
    generate(run / "data", n_train=2, n_val=6, size=48, seed=3)
    ds = load_dataset("voc", run / "data", "val")
    rng = np.random.default_rng(0)
    cfg = {"dataset": "voc", "root": "run/data", "split": "val"}
    cls_lines = [{"epoch": e, "loss": 0.7 - 0.1 * e, "loss_cls": 0.6 - 0.1 * e, "loss_reg": 0.1, "lr": 0.01 * (3 - e), "val_mAP": 20.0 + 10 * e,
                  "aa_agree": 0.5 + 0.1 * e, "cm_ess": 0.9 - 0.1 * e, "teacher_drop_path": 0.05} for e in range(3)]  # fmt: skip
    _log(run / "cls", "train-cls", {"backbone": "deit_t", "mapping": "cm", "reg": "aa", "epochs": 3}, cls_lines)
    _log(run / "cls-cam", "train-cls", {"backbone": "deit_t", "mapping": "cam", "reg": "none", "epochs": 3},
         [{k: v for k, v in x.items() if not k.startswith(("aa_", "cm_", "loss_reg"))} for x in cls_lines])  # fmt: skip
    with SeedWriter(run / "seeds-val" / "seeds.h5", {"class_names": list(ds.meta.class_names)}) as w:
        for r in ds.records:
            gt = read_label_png(r.mask_path)
            maps = [np.clip(0.6 * np.roll(gt == k, 4, axis=1) + 0.4 * rng.random(gt.shape), 0, 1) for k in r.labels]
            w.write(r.id, r.labels, np.stack(maps).astype(np.float32) if maps else np.zeros((0, *gt.shape), np.float32), gt.shape)
        w.commit({"bg_threshold": 0.5, "bg_threshold_rule": "test"})
    write_manifest(run / "seeds-val", build_manifest("gen-seeds", {**cfg, "ckpt": "run/cls/checkpoint.pt"}, inputs={"checkpoint": run / "cls" / "checkpoint.pt"}))
    for i, r in enumerate(ds.records):  # masks: the ground truth, cut more in later images; predictions: the masks shifted
        gt = read_label_png(r.mask_path)
        gt[:, : i * gt.shape[1] // 8] = 0
        write_label_png(run / "masks-val" / f"{r.id}.png", gt)
        write_label_png(run / "preds-val" / f"{r.id}.png", np.roll(gt, 2, axis=0))
    _log(run / "masks-val" / "affinity-train", "train-aff", {"epochs": 2},
         [{"epoch": e, "loss": 2.0 - e, "bg_loss": 1.0, "fg_loss": 1.0 - e, "neg_loss": 0.1, "lr": 0.1} for e in range(2)])  # fmt: skip
    write_manifest(run / "masks-val", build_manifest("refine-psa", {**cfg, "seeds": "run/seeds-val/seeds.h5"}))
    _log(base / "elsewhere" / "seg", "train-seg", {"backbone": "toy", "epochs": 4},
         [{"epoch": e, "loss": 1.0 / (e + 1), "pixel_acc": 0.5 + 0.1 * e, "lr": 0.01} for e in range(4)])  # fmt: skip
    write_manifest(run / "preds-val", build_manifest("predict-seg", {**cfg, "ckpt": "elsewhere/seg/checkpoint.pt"},
                                                     inputs={"checkpoint": base / "elsewhere" / "seg" / "checkpoint.pt"}))  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        for name, pred in (("seeds-usage-val", "run/seeds-val/seeds.h5"), ("masks-val", "run/masks-val"), ("preds-val", "run/preds-val")):
            evaluate(EvaluateConfig(dataset="voc", root=Path("run/data"), split="val", pred=Path(pred), workers=1, quiet=True,
                                    out=Path(f"run/metrics/{name}.json")))  # fmt: skip
    return run


def test_training_and_change_sections_appear(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(run_dir.parent)
    res = write_html(load_entries((run_dir,)), [], ReportConfig(metrics=(run_dir,), html=tmp_path / "rep", gallery=2))
    names = {(r.stage, r.name) for r in res.training}  # the segmentation run is outside the RUN_DIR: found through the predictions
    assert names == {("train-cls", "run/cls"), ("train-cls", "run/cls-cam"), ("train-aff", "run/masks-val/affinity-train"), ("train-seg", "elsewhere/seg")}
    html = (tmp_path / "rep" / "index.html").read_text()
    for text in ('id="training"', 'id="changes"', "training-train-cls.png", "training-train-aff.png", "training-train-seg.png",
                 "run/cls (cm + aa)", "run/cls-cam (cam: the CAM baseline)", "per-image.csv", "refine-psa</b>"):  # fmt: skip
        assert text in html, text
    fig = res.figures["training-train-cls"]
    titles = [ax.get_title().split(":")[0] for ax in fig.axes if ax.get_visible()]
    assert titles[:4] == ["loss", "loss_cls", "loss_reg", "lr"] or titles[:3] == ["loss", "loss_cls", "lr"]
    assert {"val_mAP", "aa_agree", "cm_ess"} <= set(titles) and "teacher_drop_path" not in titles  # constant: not drawn
    mAP = next(ax for ax in fig.axes if ax.get_title().startswith("val_mAP"))
    assert sorted(ln.get_label() for ln in mAP.get_lines()) == ["run/cls (cm + aa)", "run/cls-cam (cam: the CAM baseline)"]
    (t,) = res.changes
    assert t.chain == {"seeds": "seeds-usage-val", "masks": "masks-val", "preds": "preds-val"} and len(t.rows) == 6
    changes = [r.change for r in t.rows]
    assert changes == sorted(changes, reverse=True)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "per-image.csv").read_text())))
    assert [r["id"] for r in rows] == [r.id for r in t.rows] and all(r["masks_miou"] for r in rows)


def test_two_runs_overlay_and_gallery_by_change(run_dir, tmp_path, monkeypatch):
    other = tmp_path / "run2"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("metrics"))
    monkeypatch.chdir(run_dir.parent)
    res = write_html(load_entries((run_dir, other)), [], ReportConfig(metrics=(run_dir, other), html=tmp_path / "rep", gallery=4, order="changed"))
    loss = res.figures["training-train-cls"].axes[0]
    assert len(loss.get_lines()) == 4  # two classifiers of each run, overlaid
    (g,) = [g for g in res.galleries if g.split == "val"][:1]
    assert g.order == "changed" and [r.change for r in g.rows] == sorted((r.change for r in g.rows), reverse=True)
    assert "most changed first" in (tmp_path / "rep" / "index.html").read_text()


def test_a_run_without_logs_still_renders(run_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir.parent, tmp_path, dirs_exist_ok=True)
    for m in tmp_path.rglob("manifest.json"):  # the inputs recorded in the copy, not the original
        m.write_text(m.read_text().replace(str(run_dir.parent), str(tmp_path)))
    for log in tmp_path.rglob("log.jsonl"):
        log.unlink()
    (run / "cls-cam" / "manifest.json").unlink()  # and a classifier whose run stopped before its manifest
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["report", "run", "--html", "rep", "--gallery", "0"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "no log.jsonl" in html and "Nothing to draw" in html and not list((tmp_path / "rep").glob("training-*.png"))
    for folder in (run / "cls", run / "masks-val" / "affinity-train", tmp_path / "elsewhere" / "seg"):
        shutil.rmtree(folder)
    res = runner.invoke(app, ["report", "run", "--html", "rep2", "--gallery", "0"])
    assert res.exit_code == 0 and 'id="training"' not in (tmp_path / "rep2" / "index.html").read_text()


def test_format_csv_and_json_write_the_per_image_table(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir.parent)
    res = runner.invoke(app, ["report", "run", "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 6 and {"split", "id", "change", "seeds_fg", "masks_kept", "preds_kept", "masks_miou"} <= set(rows[0])
    assert [float(r["change"]) for r in rows] == sorted((float(r["change"]) for r in rows), reverse=True)
    res = runner.invoke(app, ["report", "run", "--format", "json"])
    assert [r["id"] for r in json.loads(res.stdout)] == [r["id"] for r in rows]
    res = runner.invoke(app, ["report", "run", "--format", "xml"])
    assert res.exit_code == 2 and "--format must be one of table, csv, json" in res.output
