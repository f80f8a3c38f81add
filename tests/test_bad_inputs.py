"""Every bad input of every command: exit code 2, one line that names the offending path or option,
no traceback, and no artifact published (issue 11's table, so the list cannot regress).

One tiny finished chain (synth data -> cls -> seeds -> masks -> seg -> preds) is built once; each row
builds its own bad input from it and runs one command through the real CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from usage_cli.cli import app
from usage_cli.data.synth import generate

pytest.importorskip("pydensecrf")
runner = CliRunner()

UNWRITABLE = Path("/proc/usage-test-unwritable")  # mkdir fails there even for root


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _ok(*args) -> None:
    res = _run(*args)
    assert res.exit_code == 0, f"usage {args[0]} failed:\n{res.output}"


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("bad")
    generate(w / "data", n_train=3, n_val=2, size=64, seed=2)
    d = ["--root", w / "data", "--split", "train", "--quiet"]
    _ok("train-cls", *d, "--out", w / "cls", "--backbone", "deit_t", "--no-pretrained", "--epochs", 1, "--batch-size", 2,
        "--img-size", 32, "--aug", "light", "--lr", 1e-3, "--val-split", "")  # fmt: skip
    _ok("gen-seeds", *d, "--ckpt", w / "cls" / "checkpoint.pt", "--out", w / "seeds", "--scales", "1.0", "--workers", 0, "--overlays", 2)
    _ok("refine-psa", *d, "--seeds", w / "seeds" / "seeds.h5", "--out", w / "masks", "--backbone", "efficientnet_lite0",
        "--epochs", 1, "--batch-size", 2, "--crop", 64, "--workers", 1, "--device", "cpu")  # fmt: skip
    _ok("train-seg", *d, "--masks", w / "masks", "--out", w / "seg", "--backbone", "efficientnet_lite0", "--epochs", 1,
        "--batch-size", 2, "--crop", 64, "--aspp-channels", 16, "--workers", 0, "--device", "cpu")  # fmt: skip
    _ok("predict-seg", *d, "--ckpt", w / "seg" / "checkpoint.pt", "--out", w / "preds", "--scales", "1.0", "--workers", 1, "--device", "cpu")
    (w / "a-file").write_text("not a folder\n")
    (w / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (w / "text.pt").write_text("hello, I am not a checkpoint\n")
    return w


# ---------------------------------------------------------------- the commands, with a bad piece swapped in
def _data(w: Path, root: Path | None = None) -> list:
    return ["--root", root or w / "data", "--split", "train", "--quiet"]


def train_cls(w, out=None, root=None, *extra):
    return ["train-cls", *_data(w, root), "--out", out or w / "new-cls", "--backbone", "deit_t", "--no-pretrained",
            "--epochs", 1, "--batch-size", 2, "--img-size", 32, "--aug", "light", "--val-split", "", *extra]  # fmt: skip


def gen_seeds(w, out=None, root=None, *extra):
    return ["gen-seeds", *_data(w, root), "--ckpt", w / "cls" / "checkpoint.pt", "--out", out or w / "new-seeds",
            "--scales", "1.0", "--workers", 0, "--overlays", 0, *extra]  # fmt: skip


def refine_psa(w, out=None, root=None, *extra):
    return ["refine-psa", *_data(w, root), "--seeds", w / "seeds" / "seeds.h5", "--out", out or w / "new-masks",
            "--backbone", "efficientnet_lite0", "--epochs", 1, "--batch-size", 2, "--crop", 64, "--workers", 1,
            "--device", "cpu", *extra]  # fmt: skip


def psa_labels(w, out=None, root=None, *extra):
    return ["psa-labels", *_data(w, root), "--seeds", w / "seeds" / "seeds.h5", "--out", out or w / "new-confident", "--workers", 1, *extra]


def train_aff(w, out=None, root=None, *extra):
    return ["train-aff", *_data(w, root), "--labels", w / "masks" / "confident", "--out", out or w / "new-aff",
            "--backbone", "efficientnet_lite0", "--epochs", 1, "--batch-size", 2, "--crop", 64, "--device", "cpu", *extra]  # fmt: skip


def psa_walk(w, out=None, root=None, *extra):
    return ["psa-walk", *_data(w, root), "--seeds", w / "seeds" / "seeds.h5", "--affinity", w / "masks" / "affinity.pt",
            "--out", out or w / "new-walk", "--device", "cpu", *extra]  # fmt: skip


def train_seg(w, out=None, root=None, *extra):
    return ["train-seg", *_data(w, root), "--masks", w / "masks", "--out", out or w / "new-seg", "--backbone",
            "efficientnet_lite0", "--epochs", 1, "--batch-size", 2, "--crop", 64, "--aspp-channels", 16, "--device", "cpu", *extra]  # fmt: skip


def predict_seg(w, out=None, root=None, *extra):
    return ["predict-seg", *_data(w, root), "--ckpt", w / "seg" / "checkpoint.pt", "--out", out or w / "new-preds",
            "--scales", "1.0", "--workers", 1, "--device", "cpu", *extra]  # fmt: skip


def evaluate(w, out=None, root=None, *extra):
    return ["evaluate", "--root", root or w / "data", "--split", "train", "--pred", w / "seeds" / "seeds.h5",
            "--out", out or w / "new-metrics.json", "--workers", 1, "--quiet", *extra]  # fmt: skip


def synth(w, out=None, root=None, *extra):
    return ["synth", "--out", out or w / "new-synth", "--train", 2, "--val", 1, "--size", 32, *extra]


def report(w, out=None, root=None, *extra):
    (w / "m.json").write_text(json.dumps({"miou": 1.0, "fpr": 2.0, "fnr": 97.0}))
    return ["report", w / "m.json", "--out", out or w / "rows.json", *extra]


STAGES = {"train-cls": train_cls, "gen-seeds": gen_seeds, "refine-psa": refine_psa, "psa-labels": psa_labels, "train-aff": train_aff,
          "psa-walk": psa_walk, "train-seg": train_seg, "predict-seg": predict_seg, "evaluate": evaluate, "synth": synth, "report": report}  # fmt: skip
DATA_STAGES = ("train-cls", "gen-seeds", "refine-psa", "psa-labels", "train-aff", "psa-walk", "train-seg", "predict-seg", "evaluate")


def _bad_labels_root(w: Path) -> Path:
    """A copy of the dataset whose cls_labels.npy has one entry of the wrong length."""
    root = w / "data-badlabels"
    if not root.exists():
        shutil.copytree(w / "data", root)
        table = np.load(root / "cls_labels.npy", allow_pickle=True).item()
        first = sorted(table)[0]
        table[first] = np.asarray(table[first])[:-1]
        np.save(root / "cls_labels.npy", table)
    return root


def _renamed_root(w: Path) -> Path:
    """The same images with one class renamed (same count): a checkpoint / seed store of other classes."""
    root = w / "data-renamed"
    if not root.exists():
        shutil.copytree(w / "data", root)
        lines = (root / "classes.txt").read_text().splitlines()
        lines[-1] = lines[-1] + "-renamed"
        (root / "classes.txt").write_text("\n".join(lines) + "\n")
    return root


# (name, args(w) -> list, words the one line must contain)
ROWS: list[tuple[str, object, tuple[str, ...]]] = []
for _name in DATA_STAGES:
    ROWS.append((f"{_name}: cls_labels entry of the wrong length", lambda w, f=STAGES[_name]: f(w, None, _bad_labels_root(w)), ("cls_labels.npy",)))
for _name, _f in STAGES.items():
    if _name == "evaluate":
        ROWS.append(("evaluate: --out is a folder", lambda w: evaluate(w, w / "seeds"), ("--out", "folder")))
        ROWS.append(("evaluate: --out cannot be written", lambda w: evaluate(w, UNWRITABLE / "m.json"), (str(UNWRITABLE),)))
    elif _name == "report":
        ROWS.append(("report: --out is a folder", lambda w: report(w, w / "seeds"), ("--out", "folder")))
    else:
        ROWS.append((f"{_name}: --out is an existing file", lambda w, f=_f: f(w, w / "a-file"), ("a-file", "not a folder")))
        ROWS.append((f"{_name}: --out cannot be written", lambda w, f=_f: f(w, UNWRITABLE / "x"), (str(UNWRITABLE),)))
ROWS += [
    ("train-cls --batch-size 0", lambda w: train_cls(w, None, None, "--batch-size", 0), ("--batch-size",)),
    ("train-cls --lr -1", lambda w: train_cls(w, None, None, "--lr", -1), ("--lr",)),
    ("train-cls --img-size -64", lambda w: train_cls(w, None, None, "--img-size", -64), ("--img-size",)),
    ("train-cls --student-drop-path abc", lambda w: train_cls(w, None, None, "--student-drop-path", "abc"), ("--student-drop-path",)),
    ("train-cls --epochs 0", lambda w: train_cls(w, None, None, "--epochs", 0), ("--epochs",)),
    ("train-cls --epochs -1", lambda w: train_cls(w, None, None, "--epochs", -1), ("--epochs",)),
    ("train-cls --weights random bytes", lambda w: train_cls(w, None, None, "--weights", w / "random.bin"), ("random.bin",)),
    ("train-cls --weights is a usage checkpoint", lambda w: train_cls(w, None, None, "--weights", w / "cls" / "checkpoint.pt"), ("usage", "--ckpt")),
    ("train-seg --lr -1", lambda w: train_seg(w, None, None, "--lr", -1), ("--lr",)),
    ("train-seg --masks nowhere", lambda w: ["train-seg", *_data(w), "--masks", w / "nowhere", "--out", w / "new-seg"], (str(Path("nowhere")),)),
    ("train-seg --weights text", lambda w: train_seg(w, None, None, "--weights", w / "text.pt"), ("text.pt",)),
    ("gen-seeds --workers -1", lambda w: gen_seeds(w, None, None, "--workers", -1), ("--workers",)),
    ("gen-seeds --scales ''", lambda w: gen_seeds(w, None, None, "--scales", ""), ("--scales",)),
    ("gen-seeds --scales 0", lambda w: gen_seeds(w, None, None, "--scales", "0"), ("--scales",)),
    ("gen-seeds --scales -1", lambda w: gen_seeds(w, None, None, "--scales", "-1"), ("--scales",)),
    ("gen-seeds --affinity-layers 99", lambda w: gen_seeds(w, None, None, "--affinity-layers", 99), ("--affinity-layers",)),
    ("gen-seeds --overlay-threshold 5", lambda w: gen_seeds(w, None, None, "--overlay-threshold", 5), ("--overlay-threshold",)),
    ("gen-seeds --ckpt random bytes", lambda w: ["gen-seeds", *_data(w), "--ckpt", w / "random.bin", "--out", w / "new-seeds"], ("random.bin",)),
    ("gen-seeds --ckpt text", lambda w: ["gen-seeds", *_data(w), "--ckpt", w / "text.pt", "--out", w / "new-seeds"], ("text.pt",)),
    ("gen-seeds: a class renamed", lambda w: gen_seeds(w, None, _renamed_root(w)), ("class",)),
    ("evaluate: seeds of a renamed class", lambda w: evaluate(w, None, _renamed_root(w)), ("class",)),
    ("predict-seg: a class renamed", lambda w: predict_seg(w, None, _renamed_root(w)), ("class",)),
    ("train-seg: masks of a renamed class", lambda w: train_seg(w, None, _renamed_root(w)), ("class",)),
    ("refine-psa --crop 0", lambda w: refine_psa(w, None, None, "--crop", 0), ("--crop",)),
    ("refine-psa --crop 60 (not a stride multiple)", lambda w: refine_psa(w, None, None, "--crop", 60), ("--crop",)),
    ("refine-psa --backbone bogus", lambda w: refine_psa(w, None, None, "--backbone", "bogus_net"), ("bogus_net",)),
    ("refine-psa --weights random bytes", lambda w: refine_psa(w, None, None, "--weights", w / "random.bin"), ("random.bin",)),
    ("refine-psa --affinity random bytes", lambda w: refine_psa(w, None, None, "--affinity", w / "random.bin"), ("random.bin",)),
    ("refine-psa: seeds of renamed classes", lambda w: refine_psa(w, None, _renamed_root(w)), ("class",)),
    ("predict-seg --ckpt random bytes", lambda w: ["predict-seg", *_data(w), "--ckpt", w / "random.bin", "--out", w / "new-preds"], ("random.bin",)),
    ("predict-seg: checkpoint with another backbone field", lambda w: predict_seg_changed(w), ("backbone",)),
    ("evaluate --bg-thresholds 0:1:0", lambda w: evaluate(w, None, None, "--bg-thresholds", "0:1:0"), ("--bg-thresholds",)),
    ("evaluate --bg-thresholds reversed", lambda w: evaluate(w, None, None, "--bg-thresholds", "0.9:0.1:0.1"), ("--bg-thresholds", "start")),
    ("evaluate: wrong-size ground truth", lambda w: evaluate_wrong_gt(w), ("SegmentationClass",)),
    ("report: a binary file", lambda w: ["report", w / "random.bin"], ("random.bin",)),
    ("psa-labels --crf-la above --crf-ha", lambda w: psa_labels(w, None, None, "--crf-la", 40), ("--crf-la",)),
    ("psa-labels: seeds of renamed classes", lambda w: psa_labels(w, None, _renamed_root(w)), ("class",)),
    ("train-aff --labels of another stage", lambda w: train_aff(w, None, None, "--labels", w / "preds"), ("predict-seg", "psa-labels")),
    ("train-aff --labels a folder without a manifest", lambda w: train_aff(w, None, None, "--labels", w / "seeds" / "overlays"), ("manifest", "psa-labels")),
    ("train-aff --crop 60 (not a stride multiple)", lambda w: train_aff(w, None, None, "--crop", 60), ("--crop",)),
    ("train-aff: labels of renamed classes", lambda w: train_aff(w, None, _renamed_root(w)), ("class",)),
    ("psa-walk --affinity random bytes", lambda w: psa_walk(w, None, None, "--affinity", w / "random.bin"), ("random.bin",)),
    ("psa-walk --affinity a classifier checkpoint", lambda w: psa_walk(w, None, None, "--affinity", w / "cls" / "checkpoint.pt"), ("checkpoint.pt", "--ckpt")),
    ("psa-walk --logt 20", lambda w: psa_walk(w, None, None, "--logt", 20), ("--logt",)),
]


def predict_seg_changed(w: Path) -> list:
    import torch

    ckpt = torch.load(w / "seg" / "checkpoint.pt", weights_only=True)
    ckpt["model_config"]["backbone"] = "resnet50"
    torch.save(ckpt, w / "seg-changed.pt")
    return ["predict-seg", *_data(w), "--ckpt", w / "seg-changed.pt", "--out", w / "new-preds", "--device", "cpu"]


def evaluate_wrong_gt(w: Path) -> list:
    from PIL import Image

    root = w / "data-wronggt"
    if not root.exists():
        shutil.copytree(w / "data", root)
        gt = sorted(root.rglob("SegmentationClass/*.png"))[0]
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(gt)
    return evaluate(w, None, root)


@pytest.mark.parametrize("name,args,words", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_exit_2(w, name, args, words):
    res = _run(*args(w))
    out = res.output
    assert res.exit_code == 2, f"{name}: exit {res.exit_code}\n{out}\n{res.exception!r}"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), f"{name}: not one error line:\n{out}"
    for word in words:
        assert word in out, f"{name}: the line does not mention {word!r}:\n{out}"
    assert "weights_only=False" not in out  # never advise unpickling untrusted files
    for folder in ("new-cls", "new-seeds", "new-masks", "new-seg", "new-preds", "new-synth"):
        assert not (w / folder / "manifest.json").exists(), f"{name}: published {folder}"
    assert not (w / "new-metrics.json").exists()


# ---------------------------------------------------------------- a folder never mixes two runs
def test_gen_seeds_refuses_a_finished_store_of_other_options_and_force_replaces_it(w):
    out = w / "seeds-rerun"
    shutil.copytree(w / "seeds", out)
    assert (out / "overlays").is_dir()
    res = _run(*gen_seeds(w, out, None, "--no-flip"))
    assert res.exit_code == 2 and "another config (flip" in res.output and "--force" in res.output, res.output
    assert (out / "manifest.json").exists() and (out / "overlays").is_dir()  # untouched
    _ok(*gen_seeds(w, out, None, "--no-flip", "--force"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["flip"] is False
    assert not (out / "overlays").exists()  # the old run's overlays went with it (this run writes none)


def test_train_cls_refuses_another_config_over_a_finished_run(w):
    out = w / "cls-rerun"
    shutil.copytree(w / "cls", out)
    res = _run(*train_cls(w, out, None, "--lr", 0.5))
    assert res.exit_code == 2 and "another config (lr differ" in res.output, res.output
    assert (out / "checkpoint.pt").exists() and (out / "manifest.json").exists()


def test_an_unfinished_run_is_never_deleted_silently_and_resume_may_extend_it(w):
    out = w / "cls-extend"
    _ok(*train_cls(w, out, None, "--epochs", 1))
    # pretend the run was meant to be longer and stopped: last.pt says 1 of 3 epochs
    import torch

    last = torch.load(out / "last.pt", weights_only=True)
    last["epochs"] = 3
    torch.save(last, out / "last.pt")
    (out / "manifest.json").unlink()
    (out / "checkpoint.pt").unlink()
    res = _run(*train_cls(w, out, None, "--epochs", 3))
    assert res.exit_code == 2 and "--resume" in res.output and "epoch 1 of 3" in res.output, res.output
    assert (out / "last.pt").exists()
    _ok(*train_cls(w, out, None, "--epochs", 3, "--resume"))
    log = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1, 2]
    # a finished run extended by one more epoch with --resume (only --epochs changed)
    _ok(*train_cls(w, out, None, "--epochs", 4, "--resume"))
    assert len((out / "log.jsonl").read_text().splitlines()) == 4
    assert json.loads((out / "manifest.json").read_text())["config"]["epochs"] == 4
    res = _run(*train_cls(w, out, None, "--epochs", 2, "--resume"))
    assert res.exit_code == 2 and "4 epochs are already done" in res.output, res.output


def test_refine_psa_refuses_seeds_for_classes_the_labels_do_not_list(w):
    root = w / "data-nolabels"
    shutil.copytree(w / "data", root)
    table = np.load(root / "cls_labels.npy", allow_pickle=True).item()
    np.save(root / "cls_labels.npy", {k: np.zeros_like(np.asarray(v)) for k, v in table.items()})
    res = _run(*refine_psa(w, None, root))
    assert res.exit_code == 2 and "labels do not list" in res.output, res.output
    assert not (w / "new-masks" / "manifest.json").exists()


def test_mask_folders_do_not_mix_runs(w):
    """predict-seg into a folder holding someone else's PNGs is refused; --force clears them."""
    out = w / "foreign-pngs"
    out.mkdir()
    (out / "mine.png").write_bytes(b"\x89PNG not really")
    res = _run(*predict_seg(w, out))
    assert res.exit_code == 2 and "PNG files" in res.output, res.output
    _ok(*predict_seg(w, out, None, "--force"))
    assert not (out / "mine.png").exists() and (out / "manifest.json").exists()
