"""The whole chain through the real CLI on 2 tiny images, 1-2 epochs: train-cls -> gen-seeds ->
refine-psa -> train-seg -> predict-seg -> evaluate, with every manifest linked to its inputs' hashes,
and an interrupted stage that reruns cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from usage_cli.artifacts.manifest import input_digest, sha256_file
from usage_cli.cli import app
from usage_cli.data.synth import generate

pytest.importorskip("pydensecrf")
runner = CliRunner()


def _usage(*args) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"usage {args[0]} failed:\n{res.output}"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    w = tmp_path_factory.mktemp("chain")
    root = w / "data"
    generate(root, n_train=2, n_val=2, size=64, seed=1)
    data = ["--root", root, "--split", "train", "--quiet"]
    _usage("train-cls", *data, "--out", w / "cls", "--backbone", "deit_t", "--no-pretrained", "--epochs", 2, "--batch-size", 2,
           "--img-size", 32, "--aug", "light", "--lr", 1e-3, "--val-split", "")  # fmt: skip
    _usage("gen-seeds", *data, "--ckpt", w / "cls" / "checkpoint.pt", "--out", w / "seeds", "--scales", "1.0,0.5",
           "--workers", 0, "--overlays", 1)  # fmt: skip
    _usage("refine-psa", *data, "--seeds", w / "seeds" / "seeds.h5", "--out", w / "masks", "--backbone", "efficientnet_lite0",
           "--no-pretrained", "--epochs", 1, "--batch-size", 2, "--crop", 64, "--workers", 1, "--device", "cpu")  # fmt: skip
    _usage("train-seg", *data, "--masks", w / "masks", "--out", w / "seg", "--backbone", "efficientnet_lite0", "--no-pretrained", "--epochs", 2,
           "--batch-size", 2, "--crop", 64, "--aspp-channels", 16, "--workers", 0, "--device", "cpu")  # fmt: skip
    _usage("predict-seg", *data, "--ckpt", w / "seg" / "checkpoint.pt", "--out", w / "preds", "--scales", "1.0",
           "--workers", 1, "--device", "cpu")  # fmt: skip
    for name, pred in (("seeds", w / "seeds" / "seeds.h5"), ("masks", w / "masks"), ("preds", w / "preds")):
        _usage("evaluate", "--root", root, "--split", "train", "--pred", pred, "--out", w / "metrics" / f"{name}.json", "--quiet", "--workers", 1)
    return w


def test_every_artifact_exists_and_manifests_link_to_input_hashes(chain):
    w = chain
    assert _manifest(w / "cls")["stage"] == "train-cls"
    seeds = _manifest(w / "seeds")
    assert seeds["stage"] == "gen-seeds"
    assert seeds["inputs"]["checkpoint"]["sha256"] == sha256_file(w / "cls" / "checkpoint.pt")
    masks = _manifest(w / "masks")
    assert masks["stage"] == "refine-psa"
    assert sha256_file(w / "seeds" / "seeds.h5") in {i["sha256"] for i in masks["inputs"].values()}
    seg = _manifest(w / "seg")
    assert input_digest(w / "masks") in {i["sha256"] for i in seg["inputs"].values()}
    preds = _manifest(w / "preds")
    assert sha256_file(w / "seg" / "checkpoint.pt") in {i["sha256"] for i in preds["inputs"].values()}
    for name in ("seeds", "masks", "preds"):
        m = json.loads((w / "metrics" / f"{name}.json").read_text())
        assert m["num_images"] == 2 and m["miou"] + m["fpr"] + m["fnr"] == pytest.approx(100.0, abs=1e-3)


def test_report_gathers_the_chain(chain):
    res = runner.invoke(app, ["report", *[str(p) for p in sorted((chain / "metrics").glob("*.json"))]])
    assert res.exit_code == 0 and "masks" in res.output and "preds" in res.output and "seeds" in res.output


def test_an_interrupted_stage_reruns_cleanly(chain, monkeypatch):
    """gen-seeds killed mid-way leaves no seeds.h5; the rerun resumes and gives the same store."""
    import h5py
    import numpy as np

    import usage_cli.stages.gen_seeds as gs

    w = chain
    out = w / "seeds-again"
    real = gs.views_to_maps
    calls = {"n": 0}

    def die_after_one(*a):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(gs, "views_to_maps", die_after_one)
    args = ["gen-seeds", "--root", w / "data", "--split", "train", "--quiet", "--ckpt", w / "cls" / "checkpoint.pt",
            "--out", out, "--scales", "1.0,0.5", "--workers", 0, "--overlays", 0, "--batch-size", 1]  # fmt: skip
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 130 and not (out / "seeds.h5").exists() and not (out / "manifest.json").exists()
    monkeypatch.setattr(gs, "views_to_maps", real)
    _usage(*args)
    with h5py.File(out / "seeds.h5", "r") as a, h5py.File(w / "seeds" / "seeds.h5", "r") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for k in a.keys():
            np.testing.assert_allclose(a[k]["cam"][()].astype(np.float32), b[k]["cam"][()].astype(np.float32), atol=2e-3)
