"""`usage gen-seeds`: fusion properties, round trip from a checkpoint, resume, refusal of bad inputs,
empty seeds counted, warned about and carried to `usage evaluate`."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import torchrun
from typer.testing import CliRunner

from usage_cli.algorithms.fuse import fuse_views, scaled_size, seed_maps
from usage_cli.artifacts.checkpoint import save_checkpoint
from usage_cli.artifacts.seeds import SeedReader, partial_path
from usage_cli.cli import app
from usage_cli.data import load_dataset
from usage_cli.errors import ArtifactError, ConfigError
from usage_cli.models.classifier import build_classifier
from usage_cli.stages.gen_seeds import GenSeedsConfig, run


def test_fusion_is_flip_invariant_for_a_symmetric_input():
    z = torch.rand(3, 4, 5)
    z = z + z.flip(-1)  # flip-symmetric map
    both = fuse_views([z, z.flip(-1)], [False, True], (8, 10))
    single = fuse_views([z], [False], (8, 10))
    torch.testing.assert_close(both, 2 * single)
    # an asymmetric view seen flipped is un-flipped before summing
    a = torch.rand(1, 4, 5)
    torch.testing.assert_close(fuse_views([a.flip(-1)], [True], (4, 5)), fuse_views([a], [False], (4, 5)))


def test_relu_per_view_keeps_an_object_that_another_views_negative_tail_cancels():
    obj = torch.zeros(1, 4, 4)
    obj[0, :, :2] = 2.0  # one view: the object on the left half
    neg = torch.full((1, 2, 2), -5.0)  # another scale, seen flipped: strongly negative everywhere
    views, flips = [obj, neg], [False, True]
    relu_sum = seed_maps(fuse_views(views, flips, (4, 4)), [1])  # ReLU each view, then sum
    assert relu_sum[0, :, :2].min() > 0.99 and relu_sum[0, :, 2:].max() == 0
    sum_relu = seed_maps(sum(torch.nn.functional.interpolate(v[None], size=(4, 4))[0] for v in views), [1])
    assert sum_relu.max() == 0  # summed raw (the order before): 2 - 5 < 0, the object is cancelled


def test_seed_maps_keep_present_classes_normalised():
    fused = torch.tensor([[[1.0, 2.0]], [[-1.0, 4.0]], [[3.0, 0.5]]])
    m = seed_maps(fused, [1, 3])
    assert m.shape == (2, 1, 2)
    torch.testing.assert_close(m, torch.tensor([[[0.5, 1.0]], [[1.0, 1 / 6]]]), atol=1e-4, rtol=0)
    assert seed_maps(torch.full((2, 2, 2), -1.0), [2]).max() == 0  # no activation stays 0


def test_normalisations_golden():
    fused = torch.tensor([[[1.0, 2.0, 3.0]], [[-4.0, -2.0, -1.0]]])
    # minmax: [min, max] -> [0, 1] per class
    torch.testing.assert_close(seed_maps(fused, [1], "minmax"), torch.tensor([[[0.0, 0.5, 1.0]]]), atol=1e-4, rtol=0)
    # max on an all-negative class: an empty seed; raw-minmax keeps its relatively strongest place
    assert seed_maps(fused, [2], "max").max() == 0
    torch.testing.assert_close(seed_maps(fused, [2], "raw-minmax"), torch.tensor([[[0.0, 2 / 3, 1.0]]]), atol=1e-4, rtol=0)
    assert seed_maps(torch.ones(1, 2, 2), [1], "minmax").max() == 0  # a constant map: nothing stands out
    with pytest.raises(ValueError, match="unknown normalisation"):
        seed_maps(fused, [1], "softmax")
    # raw-minmax fuses the views as they are (no ReLU): a negative view lowers the sum
    views = [torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[-3.0, 0.0]]])]
    assert fuse_views(views, [False, False], (1, 2), relu=False)[0, 0, 0] == -2.0
    assert fuse_views(views, [False, False], (1, 2))[0, 0, 0] == 1.0


def test_scaled_sizes_are_multiples_of_the_patch():
    assert scaled_size(375, 500, 0.5, 16) == (192, 256) and scaled_size(10, 10, 0.1, 16) == (16, 16)


@pytest.fixture(scope="module")
def ckpt(synth_root, tmp_path_factory):
    torch.manual_seed(0)
    mc = {"backbone": "deit_t", "num_classes": 6, "mapping": "cm", "img_size": 32}
    net = build_classifier(mc)
    path = tmp_path_factory.mktemp("cls") / "checkpoint.pt"
    save_checkpoint(path, {"format": "usage-cls-checkpoint", "version": "1.0.0", "model": net.state_dict(), "model_config": net.model_config, "seed_network": "student"})
    return path


def _cfg(ckpt, root, out, **kw):
    return GenSeedsConfig(ckpt=ckpt, dataset="voc", root=root, split="val", out=out, scales=(1.0, 0.5), workers=0, overlays=2, device="cpu", quiet=True, **kw)


def test_round_trip_keys_shapes_manifest_overlays(ckpt, synth_root, tmp_path):
    path = run(_cfg(ckpt, synth_root, tmp_path / "s"))
    ds = load_dataset("voc", synth_root, "val")
    with SeedReader(path) as r:
        assert r.ids() == [x.id for x in ds.records]
        assert r.attrs["config"]["refine"] == "none"  # auto: a transformer from scratch (no train_config says otherwise)
        assert r.attrs["config"]["normalise"] == "max"
        zero_peaks = 0
        for rec in ds.records:
            e = r.read(rec.id)
            assert tuple(e.keys) == rec.labels and e.cam.shape == (len(rec.labels), 64, 64)
            if len(e.keys):  # peak max / (max + 1e-5): below 1 for the tiny activations of a random head
                peaks = e.cam.reshape(len(e.keys), -1).max(1).astype(np.float32)
                assert e.cam.min() >= 0 and all(abs(p - 1) < 1e-2 or p == 0 for p in peaks)  # 0: never activated
                zero_peaks += int((peaks == 0).sum())
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["stage"] == "gen-seeds" and m["inputs"]["checkpoint"]["sha256"]
    pairs = sum(len(rec.labels) for rec in ds.records)
    assert (m["empty_seeds"], m["present_pairs"]) == (zero_peaks, pairs)  # empty seeds: maps that are all zero
    assert len(list((tmp_path / "s" / "overlays").glob("*.png"))) == 2


def test_resume_skips_done_ids_and_killed_run_is_not_complete(ckpt, synth_root, tmp_path, monkeypatch):
    import usage_cli.stages.gen_seeds as gs

    calls = {"n": 0}
    real = gs.views_to_maps

    def counting(net, images, *a):
        calls["n"] += images.shape[0]
        if calls["n"] > 3:
            raise KeyboardInterrupt  # killed after 3 images
        return real(net, images, *a)

    monkeypatch.setattr(gs, "views_to_maps", counting)
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(ckpt, synth_root, out, batch_size=1))
    assert not (out / "seeds.h5").exists() and partial_path(out / "seeds.h5").exists()
    with pytest.raises(ArtifactError):
        SeedReader(out / "seeds.h5")
    with pytest.raises(ArtifactError, match="another config"):  # a partial store of other settings is not resumed
        run(_cfg(ckpt, synth_root, out, batch_size=1, flip=False))
    calls["n"] = -100
    run(_cfg(ckpt, synth_root, out, batch_size=1))
    assert calls["n"] == -100 + 3  # 6 val images, 3 were done
    with SeedReader(out / "seeds.h5") as r:
        assert len(r.ids()) == 6


def test_config_mismatch_and_force(ckpt, synth_root, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    with h5py.File(partial_path(out / "seeds.h5"), "w") as f:
        f.attrs["config_hash"] = "something else"
    with pytest.raises(ArtifactError, match="another config"):
        run(_cfg(ckpt, synth_root, out))
    run(_cfg(ckpt, synth_root, out, force=True))
    assert (out / "seeds.h5").exists()


def test_bad_checkpoints_are_refused(ckpt, synth_root, tmp_path):
    torch.save({"format": "something", "model": {}}, tmp_path / "other.pt")
    res = CliRunner().invoke(app, ["gen-seeds", "--ckpt", str(tmp_path / "other.pt"), "--root", str(synth_root), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a usage classifier checkpoint" in res.output
    bad = torch.load(ckpt, weights_only=True)
    bad["model_config"] = {**bad["model_config"], "backbone": "efficientnet_lite0"}
    torch.save(bad, tmp_path / "mismatch.pt")
    with pytest.raises(ArtifactError, match="does not match its architecture 'efficientnet_lite0'"):
        run(_cfg(tmp_path / "mismatch.pt", synth_root, tmp_path / "o"))
    with pytest.raises(ConfigError, match="needs a classifier whose attention can be read"):
        cnn = build_classifier({"backbone": "resnet50", "num_classes": 6, "img_size": 32})
        save_checkpoint(tmp_path / "cnn.pt", {"format": "usage-cls-checkpoint", "version": "1.0.0", "model": cnn.state_dict(), "model_config": cnn.model_config})
        run(_cfg(tmp_path / "cnn.pt", synth_root, tmp_path / "o", refine="patch-affinity"))


def test_two_ranks_merge_equals_single_process(ckpt, synth_root, tmp_path):
    single = run(_cfg(ckpt, synth_root, tmp_path / "one", batch_size=1))
    torchrun(
        "-m", "usage_cli", "gen-seeds", "--ckpt", str(ckpt), "--root", str(synth_root), "--split", "val", "--out",
        str(tmp_path / "two"), "--scales", "1.0, 0.5", "--workers", "0", "--batch-size", "1", "--overlays", "0",
        "--quiet", timeout=300,
    )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["manifest.json", "seeds.h5"]  # rank parts merged away
    with SeedReader(single) as a, SeedReader(tmp_path / "two" / "seeds.h5") as b:
        assert a.ids() == b.ids()
        for i in a.ids():
            ea, eb = a.read(i), b.read(i)
            assert (ea.keys == eb.keys).all()
            np.testing.assert_allclose(ea.cam.astype(np.float32), eb.cam.astype(np.float32), atol=2e-3)
    counts = [{k: json.loads((tmp_path / d / "manifest.json").read_text())[k] for k in ("empty_seeds", "present_pairs")} for d in ("one", "two")]
    assert counts[0] == counts[1] and counts[1]["present_pairs"] > 0  # the merged store is counted whole


def test_source_attn_needs_an_mct_checkpoint(ckpt, synth_root, tmp_path):
    with pytest.raises(ConfigError, match="--source attn needs an mct checkpoint"):
        run(_cfg(ckpt, synth_root, tmp_path / "s", source="attn"))


def test_auto_refine_and_source_follow_what_the_classifier_supports():
    from usage_cli.algorithms.cam_infer import resolve_options

    vit = build_classifier({"backbone": "deit_t", "num_classes": 3, "img_size": 32})
    mct = build_classifier({"backbone": "deit_t", "num_classes": 3, "mapping": "mct", "img_size": 32})
    cnn = build_classifier({"backbone": "efficientnet_lite0", "num_classes": 3, "img_size": 32})
    # patch affinity only for a transformer trained from ImageNet weights (the seed-step study: from
    # scratch its attention flattens the maps)
    assert resolve_options(vit) == ("none", "cam") and resolve_options(vit, pretrained=True) == ("patch-affinity", "cam")
    assert resolve_options(cnn) == ("none", "cam") and resolve_options(cnn, pretrained=True) == ("none", "cam")
    assert resolve_options(mct, pretrained=True) == ("patch-affinity", "attn") and resolve_options(mct, "none", "cam") == ("none", "cam")
    assert resolve_options(mct) == ("none", "attn")
    for net, refine, source, layers, message in [
        (vit, "auto", "attn", 12, "--source attn needs an mct checkpoint"),
        (vit, "patch-affinity", "auto", 13, "--affinity-layers 13: deit_t has only 12 layers"),
        (cnn, "patch-affinity", "auto", 1, "--refine patch-affinity needs a classifier whose attention can be read"),
        (vit, "crf", "auto", 1, "unknown --refine 'crf'"),
        (vit, "auto", "grad", 1, "unknown --source 'grad'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_options(net, refine, source, layers)


def _constant_ckpt(path, sign: float):
    """A classifier whose every activation has the sign of ``sign``: features all 1 (final norm:
    weight 0, bias 1), head weights all ``sign``."""
    torch.manual_seed(0)
    net = build_classifier({"backbone": "deit_t", "num_classes": 6, "mapping": "cm", "img_size": 32})
    with torch.no_grad():
        net.backbone.model.norm.weight.zero_()
        net.backbone.model.norm.bias.fill_(1.0)
        net.head.weight.fill_(sign)
    save_checkpoint(path, {"format": "usage-cls-checkpoint", "version": "1.0.0", "model": net.state_dict(), "model_config": net.model_config})
    return path


@pytest.mark.parametrize("sign", [-1.0, 1.0], ids=["all-negative", "all-positive"])
def test_empty_seeds_are_counted_across_a_resume_warned_and_shown_by_evaluate(sign, synth_root, tmp_path, capsys, monkeypatch):
    import usage_cli.stages.gen_seeds as gs

    ckpt = _constant_ckpt(tmp_path / "checkpoint.pt", sign)
    real, calls = gs.views_to_maps, {"n": 0}

    def die_after_3(net, images, *a):
        calls["n"] += images.shape[0]
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(net, images, *a)

    out = tmp_path / "s"
    monkeypatch.setattr(gs, "views_to_maps", die_after_3)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(ckpt, synth_root, out, batch_size=1))
    monkeypatch.setattr(gs, "views_to_maps", real)
    run(_cfg(ckpt, synth_root, out, batch_size=1))  # resumed (and quiet, yet a warning shows)
    records = load_dataset("voc", synth_root, "val").records
    pairs, images = sum(len(r.labels) for r in records), sum(bool(r.labels) for r in records)
    empty = (pairs, images) if sign < 0 else (0, 0)
    assert pairs > 0
    m = json.loads((out / "manifest.json").read_text())
    assert (m["empty_seeds"], m["present_pairs"], m["images_with_empty_seeds"]) == (empty[0], pairs, empty[1])
    err = " ".join(capsys.readouterr().err.split())
    warning = f"gen-seeds: {pairs} of {pairs} present-class seed maps are empty (all zero) in {images} images"
    assert (warning in err) == (sign < 0) and ("empty" in err) == (sign < 0)
    res = CliRunner().invoke(app, ["evaluate", "--root", str(synth_root), "--split", "val", "--pred", str(out / "seeds.h5"), "--out", str(tmp_path / "m.json"), "--workers", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "m.json").read_text())["empty_seeds"] == {"maps": empty[0], "pairs": pairs, "images": empty[1]}
    assert (f"empty seeds: {pairs} of {pairs} present-class seed maps are all zero" in res.output) == (sign < 0)


@pytest.mark.parametrize("pretrained, refine, normalise", [(False, "none", "max"), (True, "patch-affinity", "minmax")])
def test_auto_seed_step_is_said_and_recorded(pretrained, refine, normalise, synth_root, tmp_path, capsys):
    """--refine / --normalise auto follow how the classifier was trained (its checkpoint's train_config),
    and the choice and its reason are printed and recorded in the manifest and the store's config."""
    torch.manual_seed(0)
    net = build_classifier({"backbone": "deit_t", "num_classes": 6, "mapping": "cm", "img_size": 32})
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "usage-cls-checkpoint", "version": "1.0.0", "model": net.state_dict(), "model_config": net.model_config,
                           "seed_network": "student", "train_config": {"pretrained": pretrained, "weights": None}})  # fmt: skip
    cfg = GenSeedsConfig(ckpt=path, dataset="voc", root=synth_root, split="val", out=tmp_path / "s", scales=(1.0,), workers=0, overlays=0, device="cpu")
    store = run(cfg)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert (m["seed_step"]["refine"], m["seed_step"]["normalise"]) == (refine, normalise)
    rule = m["seed_step"]["refine_rule"]
    assert ("ImageNet weights" in rule) == pretrained and ("from scratch" in rule) == (not pretrained)
    with SeedReader(store) as r:
        assert (r.attrs["config"]["refine"], r.attrs["config"]["normalise"]) == (refine, normalise)
    assert f"--refine {refine} (" in capsys.readouterr().err
