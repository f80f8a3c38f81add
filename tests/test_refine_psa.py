"""`usage refine-psa` end to end on the synth fixture, its presets, model, dataset and error paths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import torchrun
from gt_seeds import write_ground_truth_seeds
from PIL import Image
from typer.testing import CliRunner

from usage_cli.algorithms.thresholds import power_for_cut
from usage_cli.artifacts.labels import read_label_png, write_label_png
from usage_cli.chains.refine_psa import PRESETS, RefinePsaConfig, resolve, run
from usage_cli.data import load_dataset
from usage_cli.errors import ArtifactError, ConfigError
from usage_cli.tasks.affinity import read_confident_png, sample_at_stride

pytest.importorskip("pydensecrf")

TINY = {"backbone": "efficientnet_lite0", "pretrained": True, "epochs": 1, "batch_size": 4, "crop": 64, "workers": 1, "device": "cpu", "quiet": True}


@pytest.fixture(scope="module")
def seeds(synth_root, tmp_path_factory) -> Path:
    train, val = (load_dataset("voc", synth_root, s) for s in ("train", "val"))
    return write_ground_truth_seeds(tmp_path_factory.mktemp("seeds") / "seeds.h5", train.records + val.records, train.meta.num_classes)


@pytest.fixture(scope="module")
def refined(synth_root, seeds, tmp_path_factory) -> tuple[RefinePsaConfig, dict]:
    out = tmp_path_factory.mktemp("masks")
    cfg = RefinePsaConfig(seeds=seeds, dataset="voc", root=synth_root, split="train", out=out, **TINY)
    return cfg, run(cfg)


def test_end_to_end_writes_masks_of_present_classes_and_a_manifest(synth_root, seeds, refined):
    cfg, res = refined
    out = Path(cfg.out)
    ds = load_dataset("voc", synth_root, "train")
    assert res["images"] == len(ds) and res["trained"]
    for rec in ds.records:
        mask = read_label_png(out / f"{rec.id}.png")
        gt = read_label_png(rec.mask_path)
        assert mask.shape == gt.shape
        assert set(np.unique(mask)) <= {0, *rec.labels}  # the walk never invents a class
        conf = read_confident_png(out / "confident" / f"{rec.id}.png", ds.meta.num_classes)
        assert set(np.unique(conf)) <= {0, 255, *rec.labels}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "refine-psa" and manifest["images"] == len(ds)
    # the default preset, auto: the confident-label cuts and the walk's background from the seeds' own threshold
    auto = manifest["auto_constants"]
    assert "computed now" in auto["seed_threshold_rule"]  # a hand-made store records none: the auto rule over its maps
    assert manifest["config"]["preset"] == "auto" and manifest["config"]["bg_mode"] == "const"
    assert manifest["config"]["bg_const"] == pytest.approx(auto["seed_threshold"])
    assert manifest["config"]["crf_la"] == pytest.approx(power_for_cut(auto["fg_cut"]), abs=5e-3)
    assert manifest["config"]["crf_la"] < manifest["config"]["crf_ha"]
    from usage_cli.artifacts.manifest import sha256_file

    assert manifest["inputs"]["seeds"]["sha256"] == sha256_file(seeds)
    ckpt = torch.load(out / "affinity.pt", weights_only=True)
    assert ckpt["format"] == "usage-aff-checkpoint" and ckpt["model_config"]["backbone"] == "efficientnet_lite0"
    assert (out / "affinity-train" / "log.jsonl").exists()
    assert not (out / ".refine-psa.partial").exists()


def test_masks_agree_with_ground_truth(synth_root, refined):
    from usage_cli.stages.evaluate import EvaluateConfig
    from usage_cli.stages.evaluate import run as evaluate

    cfg, _ = refined
    res = evaluate(EvaluateConfig(dataset="voc", root=synth_root, split="train", pred=Path(cfg.out), quiet=True, workers=1))
    # seeds are blurred ground truth; even an untrained walk keeps most of it (a broken
    # label mapping or a flipped/shifted upsampling would fall far below)
    assert res["miou"] > 50


def test_rerun_reuses_the_affinity_net_and_is_deterministic(refined):
    """A rerun of the same options keeps the steps whose manifests match (no CRF, no training) and
    walks to the same masks (formerly: another --out reusing --aff-out through a private key)."""
    cfg, _ = refined
    out = Path(cfg.out)
    before = {p.name: read_label_png(p) for p in out.glob("*.png")}
    confident = {p.name: p.stat().st_mtime_ns for p in (out / "confident").glob("*.png")}
    affinity = (out / "affinity.pt").stat().st_mtime_ns
    res = run(cfg)
    assert res["trained"] is False and (out / "affinity.pt").stat().st_mtime_ns == affinity
    assert {p.name: p.stat().st_mtime_ns for p in (out / "confident").glob("*.png")} == confident  # not remade
    assert sorted(before) == sorted(p.name for p in out.glob("*.png"))
    for name, mask in before.items():
        np.testing.assert_array_equal(read_label_png(out / name), mask)


def test_cli_psa_preset_dense_walk_on_another_split(synth_root, seeds, refined, tmp_path):
    from usage_cli.cli import app

    cfg, _ = refined
    out = tmp_path / "val-masks"
    args = ["refine-psa", "--seeds", seeds, "--root", synth_root, "--split", "train", "--infer-split", "val",
            "--out", out, "--preset", "psa", "--walk", "dense", "--aff-out", Path(cfg.out) / "affinity.pt",
            "--backbone", "efficientnet_lite0", "--pretrained", "--epochs", "1", "--batch-size", "4", "--crop", "64",
            "--workers", "1", "--device", "cpu", "--quiet", "--crf-la", "2"]  # fmt: skip
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    val = load_dataset("voc", synth_root, "val")
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(r.id for r in val.records)
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert (config["crf_la"], config["crf_ha"], config["logt"], config["bg_mode"], config["bg_power"]) == (2.0, 32.0, 8, "power", 16.0)


def test_presets_fill_only_unset_values(tmp_path):
    base = RefinePsaConfig(seeds=tmp_path, dataset="voc", root=tmp_path, split="train", out=tmp_path)
    psa = resolve(replace(base, preset="psa", logt=3))
    assert (psa.crf_la, psa.crf_ha, psa.beta, psa.logt, psa.bg_mode) == (4.0, 32.0, 8.0, 3, "power")
    mct = resolve(replace(base, preset="mctformer"))
    assert (mct.crf_la, mct.crf_ha, mct.logt, mct.bg_mode, mct.bg_const) == (1.0, 12.0, 6, "const", 0.39)
    assert set(PRESETS) == {"auto", "psa", "mctformer"}
    auto = resolve(base)  # the default; no seed store here: the values that come from it stay unset
    assert auto.preset == "auto" and (auto.crf_la, auto.crf_ha, auto.bg_const, auto.bg_mode) == (None, None, None, "const")
    with pytest.raises(ConfigError, match="--preset"):
        resolve(replace(base, preset="irn"))
    with pytest.raises(ConfigError, match="--crf-la"):
        resolve(replace(base, preset="mctformer", crf_la=20.0))
    with pytest.raises(ConfigError, match="--bg-mode"):
        resolve(replace(base, bg_mode="zero"))


def test_seeds_not_covering_the_split_are_refused(synth_root, tmp_path):
    train = load_dataset("voc", synth_root, "train")
    only_train = write_ground_truth_seeds(tmp_path / "seeds.h5", train.records, train.meta.num_classes)
    cfg = RefinePsaConfig(seeds=only_train, dataset="voc", root=synth_root, split="val", out=tmp_path / "m", **TINY)
    with pytest.raises(ArtifactError, match=r"no seeds for 6 of 6 ids of split 'val'.*gen-seeds --split val"):
        run(cfg)
    wrong_k = write_ground_truth_seeds(tmp_path / "k.h5", train.records[:2], train.meta.num_classes + 1)
    with pytest.raises(ArtifactError, match="classes"):
        run(replace(cfg, seeds=wrong_k, split="train"))


def test_cli_error_is_one_red_line_with_exit_2(synth_root, tmp_path):
    from usage_cli.cli import app

    r = CliRunner().invoke(app, ["refine-psa", "--seeds", str(tmp_path / "none.h5"), "--root", str(synth_root),
                                 "--split", "train", "--out", str(tmp_path / "m"), "--no-pretrained"])  # fmt: skip
    assert r.exit_code == 2
    assert "gen-seeds" in r.output and "Traceback" not in r.output


def test_confident_png_with_a_wrong_palette_is_refused(tmp_path):
    label = np.array([[0, 1], [255, 2]], np.uint8)
    good = tmp_path / "good.png"
    write_label_png(good, label)
    np.testing.assert_array_equal(read_confident_png(good, 3), label)
    short = tmp_path / "short.png"
    img = Image.fromarray(label, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])  # 3 colours
    img.save(short)
    with pytest.raises(ArtifactError, match="3-colour palette"):
        read_confident_png(short, 3)
    grey = tmp_path / "grey.png"
    Image.fromarray(label, mode="L").save(grey)
    with pytest.raises(ArtifactError, match="no palette"):
        read_confident_png(grey, 3)
    with pytest.raises(ArtifactError, match="outside 0..1"):
        read_confident_png(good, 1)


def test_sample_at_stride_takes_block_centres():
    label = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert sample_at_stride(label, 4).tolist() == [[18, 22], [50, 54]]


@pytest.mark.parametrize("backbone,stride", [("efficientnet_lite0", 8), ("deit_t", 16)])
def test_affinitynet_grid_and_padding(backbone, stride):
    from usage_cli.models.affinitynet import build_affinitynet, pad_to_multiple

    net = build_affinitynet({"backbone": backbone, "img_size": 64}).eval()
    x = pad_to_multiple(torch.randn(1, 3, 50, 70), net.pad_multiple)
    assert x.shape[-2] % net.pad_multiple == 0 and x.shape[-1] % net.pad_multiple == 0
    with torch.no_grad():
        feat = net(x)
    assert net.stride == stride and feat.shape == (1, 448, x.shape[-2] // stride, x.shape[-1] // stride)
    assert (feat >= -1).all()  # ELU output


def test_affinity_training_lowers_the_loss_on_one_batch():
    from usage_cli.algorithms.affinity import search_offsets
    from usage_cli.models.affinitynet import build_affinitynet, load_backbone_weights
    from usage_cli.tasks.affinity import AffinityTask

    torch.manual_seed(0)
    net = build_affinitynet({"backbone": "efficientnet_lite0"})
    load_backbone_weights(net, pretrained=True)
    task = AffinityTask(net, search_offsets(3))
    image = torch.randn(2, 3, 64, 64)
    image[:, :, :, 32:] += 2.0  # two regions, labelled 0 and 1
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[:, :, 4:] = 1
    label[1, 0, 0] = 255
    opt = torch.optim.SGD([{"params": g["params"], "lr": g["lr"]} for g in task.param_groups(0.01)], momentum=0.9)
    losses = []
    for _ in range(10):
        out = task({"image": image, "label": label})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.75 * losses[0]


def test_trained_affinity_walks_another_split_without_training(synth_root, seeds, refined, tmp_path):
    cfg, _ = refined
    out = tmp_path / "val"
    res = run(replace(cfg, split="val", out=out, affinity=Path(cfg.out) / "affinity.pt", epochs=99))
    assert res["trained"] is False and not (out / "confident").exists() and not (out / "affinity-train").exists()
    val = load_dataset("voc", synth_root, "val")
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(r.id for r in val.records)
    manifest = json.loads((out / "manifest.json").read_text())
    from usage_cli.artifacts.manifest import sha256_file

    assert manifest["inputs"]["affinity"]["sha256"] == sha256_file(Path(cfg.out) / "affinity.pt")


def test_affinity_of_another_kind_or_missing_is_refused(synth_root, seeds, refined, tmp_path):
    cfg, _ = refined
    other = tmp_path / "other.pt"
    torch.save({"format": "usage-cls-checkpoint", "version": "1.0.0"}, other)
    with pytest.raises(ArtifactError, match="not a usage-aff-checkpoint"):
        run(replace(cfg, split="val", out=tmp_path / "a", affinity=other))
    with pytest.raises(ConfigError, match="--affinity file not found"):
        run(replace(cfg, split="val", out=tmp_path / "b", affinity=tmp_path / "nope.pt"))


def test_two_ranks_write_every_mask_once_like_one_process(synth_root, seeds, tmp_path):
    two = tmp_path / "two"
    torchrun(
        "-m", "usage_cli", "refine-psa", "--seeds", str(seeds), "--root", str(synth_root), "--split", "train",
        "--out", str(two), "--backbone", "efficientnet_lite0", "--pretrained", "--epochs", "1", "--batch-size", "2",
        "--crop", "64", "--workers", "0", "--device", "cpu", "--quiet", timeout=600,
    )  # fmt: skip
    train = load_dataset("voc", synth_root, "train")
    ids = sorted(r.id for r in train.records)
    assert sorted(p.stem for p in two.glob("*.png")) == ids
    assert sorted(p.stem for p in (two / "confident").glob("*.png")) == ids
    assert json.loads((two / "manifest.json").read_text())["images"] == len(ids)
    assert not (two / ".refine-psa.partial").exists()
    # the shards together equal one process walking with the same AffinityNet
    one = tmp_path / "one"
    run(RefinePsaConfig(seeds=seeds, dataset="voc", root=synth_root, split="train", out=one, affinity=two / "affinity.pt", **TINY))
    for i in ids:
        np.testing.assert_array_equal(read_label_png(one / f"{i}.png"), read_label_png(two / f"{i}.png"))


# ---------------------------------------------------------------- the three steps as stages of their own


def _step_configs(synth_root, seeds, tmp_path):
    from usage_cli.stages.psa_labels import PsaLabelsConfig
    from usage_cli.stages.psa_walk import PsaWalkConfig
    from usage_cli.stages.train_aff import TrainAffConfig

    data = {"dataset": "voc", "root": synth_root, "split": "train"}
    labels = PsaLabelsConfig(seeds=seeds, out=tmp_path / "confident", workers=1, quiet=True, **data)
    aff = TrainAffConfig(labels=labels.out, out=tmp_path / "aff", backbone="efficientnet_lite0", epochs=1, batch_size=4, crop=64,
                         workers=1, device="cpu", quiet=True, **data)  # fmt: skip  (as TINY: the same data-loading draws)
    walk = PsaWalkConfig(seeds=seeds, affinity=tmp_path / "aff" / "affinity.pt", out=tmp_path / "walk", device="cpu", quiet=True, **data)
    return labels, aff, walk


def test_each_step_runs_alone_and_together_they_equal_refine_psa(synth_root, seeds, tmp_path):
    from usage_cli.stages import psa_labels, psa_walk, train_aff

    cfg = RefinePsaConfig(seeds=seeds, dataset="voc", root=synth_root, split="train", out=tmp_path / "chain", **TINY)
    run(cfg)
    labels, aff, walk = _step_configs(synth_root, seeds, tmp_path)
    assert psa_labels.run(labels)["images"] == 12 and not psa_labels.is_done(replace(labels, crf_la=2.0)) and psa_labels.is_done(labels)
    for p in Path(cfg.out, "confident").glob("*.png"):  # the same labels as refine-psa's first step
        np.testing.assert_array_equal(read_label_png(p), read_label_png(labels.out / p.name))
    assert train_aff.run(aff) == aff.out / "affinity.pt" and train_aff.is_done(aff)
    manifest = json.loads((aff.out / "manifest.json").read_text())
    assert manifest["stage"] == "train-aff" and manifest["inputs"]["labels"]["sha256"]  # pinned by the labels' manifest
    assert psa_walk.run(walk)["images"] == 12
    walked = json.loads((walk.out / "manifest.json").read_text())
    assert walked["stage"] == "psa-walk" and walked["inputs"]["affinity"]["sha256"] == manifest["artifact_sha256"]
    # the same AffinityNet as refine-psa's (same options, same seed), so the same masks
    ours, theirs = (torch.load(p, weights_only=True)["model"] for p in (aff.out / "affinity.pt", Path(cfg.out) / "affinity.pt"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for p in Path(cfg.out).glob("*.png"):
        np.testing.assert_array_equal(read_label_png(p), read_label_png(walk.out / p.name))
    # train-seg takes psa-walk's masks
    from usage_cli.artifacts.labels import read_label_folder
    from usage_cli.stages.train_seg import MASK_STAGES

    assert read_label_folder(walk.out, MASK_STAGES)["images"] == 12


def test_retraining_affinitynet_does_not_redo_the_crf(synth_root, seeds, tmp_path):
    from usage_cli.stages import psa_labels, train_aff

    labels, aff, _ = _step_configs(synth_root, seeds, tmp_path)
    psa_labels.run(labels)
    stamps = {p.name: p.stat().st_mtime_ns for p in labels.out.iterdir()}
    train_aff.run(aff)
    first = (aff.out / "affinity.pt").read_bytes()
    train_aff.run(replace(aff, lr=0.02, force=True))  # other settings: a new network, the labels untouched
    assert {p.name: p.stat().st_mtime_ns for p in labels.out.iterdir()} == stamps
    assert (aff.out / "affinity.pt").read_bytes() != first
    assert json.loads((aff.out / "manifest.json").read_text())["config"]["lr"] == 0.02
    with pytest.raises(ConfigError, match="another config"):
        train_aff.run(replace(aff, lr=0.03))  # a finished run of other options needs --force
    train_aff.run(replace(aff, lr=0.02, epochs=2, resume=True))  # --resume extends it, still no CRF
    assert {p.name: p.stat().st_mtime_ns for p in labels.out.iterdir()} == stamps
    assert len((aff.out / "log.jsonl").read_text().splitlines()) == 2


def test_walk_with_a_borrowed_affinity_net_on_another_split(synth_root, seeds, refined, tmp_path):
    from usage_cli.stages import psa_walk

    cfg, _ = refined
    borrowed = tmp_path / "elsewhere" / "net.pt"
    borrowed.parent.mkdir()
    borrowed.write_bytes((Path(cfg.out) / "affinity.pt").read_bytes())
    out = tmp_path / "val"
    walk = psa_walk.PsaWalkConfig(seeds=seeds, affinity=borrowed, root=synth_root, split="val", out=out, preset="psa", device="cpu", quiet=True)
    assert psa_walk.run(walk)["images"] == 6
    val = load_dataset("voc", synth_root, "val")
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(r.id for r in val.records)
    assert not (out / "confident").exists() and not (out / ".psa-walk.partial.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["logt"] == 8 and manifest["affinity"] == str(borrowed)  # the psa preset's walk
    with pytest.raises(ConfigError, match="--affinity file not found"):
        psa_walk.run(replace(walk, affinity=tmp_path / "none.pt", force=True))


def test_train_aff_refuses_labels_that_are_not_a_finished_psa_labels_folder(synth_root, seeds, tmp_path):
    from usage_cli.stages import psa_labels, train_aff

    labels, aff, _ = _step_configs(synth_root, seeds, tmp_path)
    with pytest.raises(ArtifactError, match="run `usage psa-labels` first"):
        train_aff.run(aff)
    psa_labels.run(replace(labels, split="val"))  # labels of another split
    with pytest.raises(ArtifactError, match="no confident label for 12 of 12 ids of split 'train'"):
        train_aff.run(aff)


def test_cli_of_the_three_steps(synth_root, seeds, tmp_path):
    from usage_cli.cli import app

    common = ["--root", synth_root, "--split", "train", "--quiet"]
    steps = [
        ["psa-labels", "--seeds", seeds, "--out", tmp_path / "c", "--workers", "1"],
        ["train-aff", "--labels", tmp_path / "c", "--out", tmp_path / "a", "--backbone", "efficientnet_lite0", "--epochs", "1",
         "--batch-size", "4", "--crop", "64", "--device", "cpu"],
        ["psa-walk", "--seeds", seeds, "--affinity", tmp_path / "a" / "affinity.pt", "--out", tmp_path / "w", "--device", "cpu"],
    ]  # fmt: skip
    for args in steps:
        r = CliRunner().invoke(app, [str(a) for a in args + common])
        assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "w").glob("*.png"))) == 12
    _report_shows_each_steps_folder(app, synth_root, tmp_path)
    r = CliRunner().invoke(app, ["train-aff", "--labels", str(tmp_path / "c"), "--root", str(synth_root), "--out", str(tmp_path / "b"), "--crop", "60",
                                 "--backbone", "efficientnet_lite0", "--split", "train"])  # fmt: skip
    assert r.exit_code == 2 and "--crop must be a multiple of 32" in r.output


def test_the_auto_preset_is_resolved_once_and_handed_to_every_step(synth_root, seeds, tmp_path, monkeypatch):
    """refine-psa reads the seeds' threshold once, in its own resolve; its steps get the values and do
    not resolve them again; its manifest records them."""
    from usage_cli.algorithms.thresholds import auto_constants
    from usage_cli.chains import refine_psa as chain
    from usage_cli.presets import AUTO_CUTS
    from usage_cli.stages import psa_labels, psa_walk

    cfg = chain.resolve(RefinePsaConfig(seeds=seeds, root=synth_root, split="train", out=tmp_path / "o", preset="auto"))
    auto = auto_constants(seeds, AUTO_CUTS)
    assert (cfg.crf_la, cfg.crf_ha, cfg.bg_const) == (auto["crf_la"], auto["crf_ha"], auto["bg_const"])

    def never(*a, **k):
        raise AssertionError("a step resolved the auto preset again")

    monkeypatch.setattr(psa_labels, "auto_constants", never)
    monkeypatch.setattr(psa_walk, "auto_constants", never)
    labels, _, walk = chain.steps(cfg)
    assert psa_labels.resolve(labels) == labels and psa_walk.resolve(walk) == walk
    assert (labels.crf_la, labels.crf_ha, walk.bg_const) == (cfg.crf_la, cfg.crf_ha, cfg.bg_const)


def _report_shows_each_steps_folder(app, synth_root, run_dir):
    """`usage report RUN_DIR` on the three steps run by hand: psa-walk's masks labelled as masks, found
    unscored and scored, psa-labels' folder as confident labels (each by the kind the registry gives the
    stage its manifest names); train-aff's folder holds no labels and is not shown."""
    from usage_cli.report.inputs import load_entries

    assert {e.name: e.kind for e in load_entries((run_dir,))} == {"c": "confident", "w": "masks"}
    args = ["evaluate", "--pred", run_dir / "w", "--root", synth_root, "--split", "train", "--out", run_dir / "metrics" / "walk.json", "--quiet"]
    assert CliRunner().invoke(app, [str(a) for a in args]).exit_code == 0
    assert {e.name: e.kind for e in load_entries((run_dir,))} == {"c": "confident", "walk": "masks"}
    r = CliRunner().invoke(app, ["report", str(run_dir), "--html", str(run_dir / "page"), "--gallery", "2"])
    assert r.exit_code == 0, r.output
    page = (run_dir / "page" / "index.html").read_text()
    assert 'alt="pseudo mask' in page and 'alt="confident labels' in page and "psa-walk" in page


def test_affinity_checkpoint_records_the_statistics_of_its_weights(refined):
    """efficientnet_lite0's weights expect mean = std = 0.5: AffinityNet trains with them, records
    them, and the walk reads them back from the checkpoint."""
    from usage_cli.models.affinitynet import load_affinitynet

    cfg, _ = refined
    ckpt = torch.load(Path(cfg.out) / "affinity.pt", weights_only=True)
    assert (ckpt["model_config"]["mean"], ckpt["model_config"]["std"]) == ([0.5] * 3, [0.5] * 3)
    assert load_affinitynet(Path(cfg.out) / "affinity.pt")[0].input_norm() == ((0.5,) * 3, (0.5,) * 3)


def test_auto_constants_read_a_store_once_until_it_changes(synth_root, tmp_path, monkeypatch):
    """A store that records no threshold is scanned in full for the auto constants; the stages of one
    run (each resolving its config, then writing its manifest) share one scan per file version."""
    import os

    from usage_cli.algorithms import thresholds
    from usage_cli.algorithms.thresholds import auto_constants
    from usage_cli.presets import AUTO_CUTS

    ds = load_dataset("voc", synth_root, "train")
    path = write_ground_truth_seeds(tmp_path / "seeds.h5", ds.records, ds.meta.num_classes)
    calls = []
    real = thresholds.auto_psa_constants
    monkeypatch.setattr(thresholds, "auto_psa_constants", lambda reader, cuts: calls.append(1) or real(reader, cuts))
    first = auto_constants(path, AUTO_CUTS)
    assert auto_constants(Path(os.path.relpath(path)), AUTO_CUTS) == first and len(calls) == 1  # same file, spelled otherwise
    first["bg_const"] = -1.0  # a caller's copy: the remembered value is not changed through it
    assert auto_constants(path, AUTO_CUTS)["bg_const"] != -1.0 and len(calls) == 1
    assert auto_constants(path, {"fg": 0.5, "bg": 0.2}) != auto_constants(path, AUTO_CUTS) and len(calls) == 2
    write_ground_truth_seeds(path, ds.records[:2], ds.meta.num_classes)  # rewritten: read again
    os.utime(path, ns=(1, 1))
    auto_constants(path, AUTO_CUTS)
    assert len(calls) == 3


def test_a_run_opens_its_seed_store_once_a_stage_and_hashes_it_once(synth_root, seeds, tmp_path, monkeypatch):
    """refine-psa: psa-labels and psa-walk each open the store once (and the auto preset's scan at most
    once more), and the store is hashed once for the whole chain; a rerun in a new process (digests
    forgotten) trusts the hash its steps' manifests recorded for the store's size and time: none."""
    from usage_cli.artifacts import manifest
    from usage_cli.artifacts.seeds import SeedReader

    opened, hashed = [], []
    init, read = SeedReader.__init__, manifest._read_digest
    monkeypatch.setattr(SeedReader, "__init__", lambda self, path, *a, **k: opened.append(Path(path).resolve()) or init(self, path, *a, **k))
    monkeypatch.setattr(manifest, "_read_digest", lambda p, chunk: hashed.append(p.resolve()) or read(p, chunk))
    monkeypatch.setattr(manifest, "_DIGESTS", {})
    cfg = RefinePsaConfig(seeds=seeds, dataset="voc", root=synth_root, split="train", out=tmp_path / "m", **TINY)
    run(cfg)
    assert hashed.count(seeds.resolve()) == 1 and 2 <= opened.count(seeds.resolve()) <= 3
    monkeypatch.setattr(manifest, "_DIGESTS", {})  # a new process
    hashed.clear()
    run(cfg)  # psa-labels and train-aff kept; the walk redone
    assert hashed.count(seeds.resolve()) == 0
    inputs = json.loads((Path(cfg.out) / "confident" / "manifest.json").read_text())["inputs"]["seeds"]
    assert (inputs["size"], inputs["mtime_ns"]) == (seeds.stat().st_size, seeds.stat().st_mtime_ns)


def test_walk_grid_reproduces_psa_walk_and_scores_like_evaluate(synth_root, seeds, refined, tmp_path):
    """bench/walk_grid.py's cell for the preset's own settings is the masks refine-psa wrote (same
    function, features shared across the grid), scored by the evaluator."""
    from bench_module import load_bench

    from usage_cli.metrics.confusion import ConfusionMatrix, metrics_from_confusion
    from usage_cli.presets import REFINE_PSA

    grid = load_bench("walk_grid")
    cfg, _ = refined
    ds = load_dataset("voc", synth_root, "train")
    logt = REFINE_PSA["auto"]["logt"]
    res = grid.walk_grid(ds, seeds, Path(cfg.out) / "affinity.pt", [1, logt], ["none", "max"])
    cm = ConfusionMatrix(ds.meta.num_classes + 1)
    for rec in ds.records:
        cm.update(read_label_png(Path(cfg.out) / f"{rec.id}.png"), read_label_png(rec.mask_path))
    assert res[grid.variant(logt, "none")]["miou"] == pytest.approx(100 * metrics_from_confusion(cm.mat)["miou"], abs=1e-6)
    assert set(res) == {grid.SEEDS} | {grid.variant(L, m) for L in (1, logt) for m in ("none", "max")}
    # the confident labels' precision against the ground truth: ground-truth seeds give right labels
    prec = grid.confident_precision(ds, Path(cfg.out) / "confident")
    assert prec["bg_precision"] > 90 and 0 < prec["fg_share"] < 100
    assert grid.main(["--root", str(synth_root), "--runs", str(tmp_path), "--seeds", "0"]) == 2  # no chain run there: one line, exit 2
