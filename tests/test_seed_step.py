"""bench/seed_step.py: a cell of the study's grid is what `usage gen-seeds` + `usage evaluate` give for
the same options (so the study measures the shipped seed step, not a copy of it)."""

from __future__ import annotations

import json

import pytest
import torch
from bench_module import load_bench

from usage_cli.artifacts.checkpoint import save_checkpoint
from usage_cli.models.classifier import build_classifier
from usage_cli.stages.evaluate import EvaluateConfig
from usage_cli.stages.evaluate import run as evaluate
from usage_cli.stages.gen_seeds import GenSeedsConfig
from usage_cli.stages.gen_seeds import run as gen_seeds

ss = load_bench("seed_step")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(1)
    net = build_classifier({"backbone": "deit_t", "num_classes": 6, "mapping": "cm", "img_size": 32})
    with torch.no_grad():  # a head that makes some maps positive and others negative
        net.head.weight.mul_(20)
    path = tmp_path_factory.mktemp("cls") / "checkpoint.pt"
    save_checkpoint(path, {"format": "usage-cls-checkpoint", "version": "1.0.0", "model": net.state_dict(), "model_config": net.model_config, "seed_network": "student"})
    return path


@pytest.mark.parametrize("step", [ss.Step("patch-affinity", "minmax", "1.0,0.5"), ss.Step("none", "max", "1.0"), ss.Step("none", "raw-minmax", "0.5,1.0")])
def test_a_grid_cell_equals_gen_seeds_and_evaluate(step, ckpt, synth_root, tmp_path):
    grid = ss.grid_counts(ckpt, "voc", str(synth_root), "val", [step], "cpu")
    best = ss.metrics_at(grid["counts"][step])
    scales = tuple(float(x) for x in step.scales.split(","))
    store = gen_seeds(GenSeedsConfig(
        ckpt=ckpt, dataset="voc", root=synth_root, split="val", out=tmp_path / "s", scales=scales, refine=step.refine,
        normalise=step.normalise, bg_threshold="otsu", overlays=0, workers=0, device="cpu", quiet=True,
    ))  # fmt: skip
    m = evaluate(EvaluateConfig(root=synth_root, pred=store, dataset="voc", split="val", workers=1, quiet=True))
    assert m["miou"] == pytest.approx(best["miou"], abs=1e-3) and m["threshold"] == pytest.approx(best["threshold"])
    assert m["fpr"] == pytest.approx(best["fpr"], abs=1e-3) and m["fnr"] == pytest.approx(best["fnr"], abs=1e-3)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert [manifest["empty_seeds"], manifest["present_pairs"]] == grid["empty"][step][:2].tolist()
    # the store's own (no ground truth) threshold is the study's Otsu cut, and evaluate scores it the same way
    at = ss.metrics_at(grid["counts"][step], ss.rule_index(grid["hist"][step], "otsu"))
    assert manifest["bg_threshold"] == pytest.approx(at["threshold"]) and m["pipeline"]["threshold"] == pytest.approx(at["threshold"])
    assert m["pipeline"]["miou"] == pytest.approx(at["miou"], abs=1e-3)
    assert "otsu" in m["pipeline"]["rule"]
