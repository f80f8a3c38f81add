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
from usage_cli.errors import UsageError

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


def _edited_root(w: Path, name: str, edit) -> Path:
    """A copy of the dataset, made once, with ``edit(root)`` applied."""
    root = w / name
    if not root.exists():
        shutil.copytree(w / "data", root)
        edit(root)
    return root


def _split_list(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt"


def _repeat_an_id(root: Path) -> None:
    """train.txt lists its first id twice (issue 21: counted twice by evaluate and gen-seeds)."""
    lines = _split_list(root).read_text().splitlines()
    _split_list(root).write_text("\n".join([*lines, lines[0]]) + "\n")


def _label_value(value: float):
    def edit(root: Path) -> None:
        table = np.load(root / "cls_labels.npy", allow_pickle=True).item()
        first = sorted(table)[0]
        vec = np.asarray(table[first], np.float32).copy()
        vec[0] = value
        table[first] = vec
        np.save(root / "cls_labels.npy", table)

    return edit


def _sixteen_bit_image(root: Path) -> None:
    """train_00000.jpg replaced by a 16-bit PNG (still named .jpg): RGB conversion would clip it white."""
    from PIL import Image

    path = root / "VOCdevkit" / "VOC2012" / "JPEGImages" / "train_00000.jpg"
    grey = np.asarray(Image.open(path).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(path, format="PNG")
    assert Image.open(path).mode.startswith("I;16")


def _ghost_id(root: Path) -> None:
    """train.txt lists an id with no image, no mask and no label."""
    with open(_split_list(root), "a") as f:
        f.write("ghost\n")


def _other_data(w: Path) -> Path:
    """Another synth set: the same ids, image sizes and class names, other images and labels."""
    root = w / "data-other"
    if not root.exists():
        generate(root, n_train=3, n_val=2, size=64, seed=5)
    return root


def _bad_config(w: Path) -> Path:
    path = w / "bad-scales.yaml"
    path.write_text("scales: [abc]\n")  # the flag --scales overrides the key; its bad value is still an error
    return path


def _user_folder(w: Path, name: str, files: dict[str, str]) -> Path:
    """A folder holding a user's files (not written by usage)."""
    out = w / name
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    return out


def _user_file(w: Path, name: str) -> Path:
    (w / name).write_text('{"mine": "not a usage file"}\n')
    return w / name


# (name, args(w) -> list, words the one line must contain)
ROWS: list[tuple[str, object, tuple[str, ...]]] = []
for _name in DATA_STAGES:
    ROWS.append((f"{_name}: cls_labels entry of the wrong length", lambda w, f=STAGES[_name]: f(w, None, _bad_labels_root(w)), ("cls_labels.npy",)))
    ROWS.append((f"{_name}: a split lists an id twice", lambda w, f=STAGES[_name]: f(w, None, _edited_root(w, "data-dup", _repeat_an_id)), ("train.txt", "listed twice", "train_00000")))
    ROWS.append((f"{_name}: cls_labels entry of 2", lambda w, f=STAGES[_name]: f(w, None, _edited_root(w, "data-label2", _label_value(2))), ("cls_labels.npy", "train_00000", "0 (absent) or 1")))
    if _name != "evaluate":  # evaluate reads no image
        ROWS.append((f"{_name}: a 16-bit image named .jpg", lambda w, f=STAGES[_name]: f(w, None, _edited_root(w, "data-16bit", _sixteen_bit_image)), ("train_00000.jpg", "16-bit")))
ROWS += [
    ("evaluate: cls_labels entry of -1", lambda w: evaluate(w, None, _edited_root(w, "data-label-1", _label_value(-1))), ("cls_labels.npy", "train_00000", "-1")),
    ("gen-seeds: cls_labels entry of NaN", lambda w: gen_seeds(w, None, _edited_root(w, "data-labelnan", _label_value(np.nan))), ("cls_labels.npy", "train_00000", "nan")),
    ("evaluate: seeds made from another data set (same ids and sizes)", lambda w: evaluate(w, None, _other_data(w)), ("seeds.h5", "made from", "data-other", "--force")),
    ("evaluate: masks made from another data set", lambda w: evaluate(w, None, _other_data(w), "--pred", w / "masks"), ("masks", "made from", "data-other", "--force")),
    ("refine-psa: seeds made from another data set", lambda w: refine_psa(w, None, _other_data(w)), ("seeds.h5", "made from", "data-other", "--force")),
    ("train-seg: masks made from another data set", lambda w: train_seg(w, None, _other_data(w)), ("masks", "made from", "data-other", "--force")),
    ("evaluate: a split id with no image nor mask", lambda w: evaluate(w, None, _edited_root(w, "data-ghost", _ghost_id)), ("ghost.jpg", "image not found", "nor a mask")),
    ("gen-seeds: a bad --config value a flag overrides", lambda w: gen_seeds(w, None, None, "--config", _bad_config(w)), ("bad-scales.yaml", "scales")),
    ("train-cls: --out holds a user's log.jsonl", lambda w: train_cls(w, _user_folder(w, "user-log", {"log.jsonl": "my notes\n"})), ("log.jsonl", "no usage run wrote")),
    ("gen-seeds: --out holds a user's overlays/notes.txt", lambda w: gen_seeds(w, _user_folder(w, "user-overlays", {"overlays/notes.txt": "mine\n"})), ("overlays/notes.txt",)),
    ("predict-seg --force: --out holds a user's manifest.json", lambda w: predict_seg(w, _user_folder(w, "user-manifest", {"manifest.json": "{}\n"}), None, "--force"), ("manifest.json", "not a usage manifest")),
    ("evaluate: --out is a user's file", lambda w: evaluate(w, _user_file(w, "thesis.json")), ("thesis.json", "not a usage metrics file")),
    ("report: --out is a user's file", lambda w: report(w, _user_file(w, "table.json")), ("table.json", "not a usage report table")),
    ("report --html: a user's index.html and thesis.tex", lambda w: report(w, None, None, "--html", _user_folder(w, "user-html", {"index.html": "<p>mine</p>", "thesis.tex": "mine"})),
     ("--html", "index.html", "thesis.tex")),  # fmt: skip
]
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
    ("gen-seeds --refine patch-affinity --affinity-layers 99", lambda w: gen_seeds(w, None, None, "--refine", "patch-affinity", "--affinity-layers", 99), ("--affinity-layers",)),
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
    ("refine-psa --backbone swin (a family the networks cannot read)", lambda w: refine_psa(w, None, None, "--backbone", "swin_tiny_patch4_window7_224"),
     ("swin_tiny_patch4_window7_224", "not supported", "hierarchical transformer")),
    ("train-seg --backbone efficientformer (no dilation)", lambda w: train_seg(w, None, None, "--backbone", "efficientformer_l1"),
     ("efficientformer_l1", "not supported", "output stride")),
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
    ("psa-walk --walk-norm mean", lambda w: psa_walk(w, None, None, "--walk-norm", "mean"), ("--walk-norm", "class-max")),
]


# ---------------------------------------------------------------- your own photos (issue 28): folder and COCO JSON
def _photos(w: Path, name: str, edit) -> Path:
    """The train split of the dataset as a ``--dataset folder`` set (metadata.jsonl, masks/), made once,
    with ``edit(root)`` applied."""
    from own_photos import folder_from_synth

    root = w / name
    if not root.exists():
        folder_from_synth(w / "data", root, splits=("train",))
        edit(root)
    return root


def _meta_lines(edit_lines):
    def edit(root: Path) -> None:
        meta = root / "train" / "metadata.jsonl"
        meta.write_text("\n".join(edit_lines(meta.read_text().splitlines())) + "\n")

    return edit


def _with_label(line: str, name: str) -> str:
    row = json.loads(line)
    return json.dumps({**row, "labels": [*row["labels"], name]})


def _as_csv_without_file_name(root: Path) -> None:
    (root / "train" / "metadata.jsonl").unlink()
    (root / "train" / "metadata.csv").write_text("path,labels\ntrain_00000.jpg,\n")


def _small_mask(root: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "masks" / "train" / "more" / "train_00001.png")


def _coco(w: Path, name: str, edit) -> Path:
    """A 3-image COCO set in the official layout (annotations JSON, no PNG mask), made once, edited."""
    from own_photos import coco_set

    root = w / name
    if not root.exists():
        coco_set(root)
        edit(root)
    return root


def _coco_json_edit(change):
    def edit(root: Path) -> None:
        path = root / "annotations" / "instances_train2017.json"
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return edit


def folder_cmd(w: Path, root: Path, command=None) -> list:
    """train-cls on a folder set (the dataset is read before any work), or ``command``."""
    d = ["--dataset", "folder", "--root", root, "--split", "train", "--quiet"]
    if command == "evaluate":
        return ["evaluate", *d, "--pred", w / "seeds" / "seeds.h5", "--out", w / "new-metrics.json", "--workers", 1, "--force"]
    return train_cls(w, None, None, *d)


def coco_cmd(w: Path, root: Path) -> list:
    return train_cls(w, None, None, "--dataset", "coco", "--root", root, "--split", "train2017", "--quiet")


ROWS += [
    ("folder: a row's photo is missing", lambda w: folder_cmd(w, _photos(w, "ph-missing", _meta_lines(lambda ls: [*ls, '{"file_name": "gone.jpg", "labels": []}']))),
     ("metadata.jsonl:4", "gone.jpg", "photo not found")),
    ("folder: photos without a row", lambda w: folder_cmd(w, _photos(w, "ph-norow", _meta_lines(lambda ls: ls[2:]))),
     ("metadata.jsonl", "2 photo(s)", "have no row", "--allow-unlabelled")),
    ("folder: a label not in classes.txt", lambda w: folder_cmd(w, _photos(w, "ph-label", _meta_lines(lambda ls: [_with_label(ls[0], "plnae"), *ls[1:]]))),
     ("metadata.jsonl:1", "unknown label 'plnae'", "did you mean 'plane'")),
    ("folder: a duplicate file_name", lambda w: folder_cmd(w, _photos(w, "ph-dup", _meta_lines(lambda ls: [*ls, ls[0]]))),
     ("metadata.jsonl:4", "listed twice", "lines 1 and 4")),
    ("folder: a JSONL line that is not JSON", lambda w: folder_cmd(w, _photos(w, "ph-json", _meta_lines(lambda ls: [ls[0], "{file_name: x.jpg}", *ls[1:]]))),
     ("metadata.jsonl:2", "not JSON")),
    ("folder: a CSV without file_name", lambda w: folder_cmd(w, _photos(w, "ph-csv", _as_csv_without_file_name)), ("metadata.csv:1", "'file_name'")),
    ("folder: a mask of another size than its photo", lambda w: folder_cmd(w, _photos(w, "ph-mask", _small_mask), "evaluate"),
     ("more/train_00001.png", "mask is 12x10", "its photo")),
    ("folder: --allow-unlabelled on a voc set", lambda w: train_cls(w, None, None, "--allow-unlabelled"), ("--allow-unlabelled", "--dataset folder")),
    ("coco: an image of the JSON missing on disk", lambda w: coco_cmd(w, _coco(w, "coco-noimg", lambda r: (r / "train2017" / "000000000002.jpg").unlink())),
     ("instances_train2017.json", "image 2", "000000000002.jpg", "not found")),
    ("coco: an unknown category id", lambda w: coco_cmd(w, _coco(w, "coco-cat", _coco_json_edit(lambda d: d["annotations"][1].update(category_id=91)))),
     ("instances_train2017.json", "annotation 12", "category_id 91", "not in 'categories'")),
    ("predict-seg: --images and --root", lambda w: predict_seg(w, None, None, "--images", w / "data"), ("--images", "--root")),
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


# ---------------------------------------------------------------- issue 29: the rows of its cases (scenarios at the end)
def _split_file(w: Path, name: str, text: str) -> Path:
    (w / name).write_text(text)
    return w / name


def _config_folder(w: Path) -> Path:
    (w / "config-folder").mkdir(exist_ok=True)
    return w / "config-folder"


def _seeds_copy(w: Path) -> Path:
    """A copy of the finished seed folder (rows that would write over it on code without the rule)."""
    if not (w / "seeds-copy").exists():
        shutil.copytree(w / "seeds", w / "seeds-copy")
    return w / "seeds-copy" / "seeds.h5"


def _synth_holding_a_users_image(w: Path) -> Path:
    """A data set usage synth wrote (its manifest lists its files), a user's image added to it."""
    out = w / "synth-mine"
    if not out.exists():
        _ok(*synth(w, out))
        (out / "VOCdevkit" / "VOC2012" / "JPEGImages" / "mine.jpg").write_bytes(b"mine")
    return out


def _overlays_linked_to_photos(w: Path) -> Path:
    out = w / "linked-overlays"
    if not out.exists():
        _user_folder(w, "photos", {"holiday.png": "mine"})
        out.mkdir()
        (out / "overlays").symlink_to(w / "photos")
    return out


def _seg_copy(w: Path) -> Path:
    if not (w / "seg-copy").exists():
        shutil.copytree(w / "seg", w / "seg-copy")
    return w / "seg-copy"


def _gt_out(w: Path) -> Path:
    _edited_root(w, "data-gt-out", lambda r: None)
    return w / "data-gt-out" / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"


def _gt_with_manifest(w: Path) -> Path:
    """A copy of the data set whose ground-truth folder holds a usage manifest (predictions put there)."""

    def edit(root: Path) -> None:
        gt = root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
        shutil.copy(w / "preds" / "manifest.json", gt / "manifest.json")

    return _edited_root(w, "data-gt-manifest", edit)


ROWS += [
    *((f"{s} --seed {v}", lambda w, f=STAGES[s], v=v: f(w, None, None, "--seed", v), ("--seed",))
      for s in ("train-cls", "train-seg", "train-aff") for v in ("-1", str(2**64))),  # fmt: skip
    ("train-aff --aff-out a folder", lambda w: train_aff(w, None, None, "--aff-out", w / "seeds"), ("--aff-out", "folder")),
    ("train-aff --aff-out cannot be written", lambda w: train_aff(w, None, None, "--aff-out", UNWRITABLE / "a.pt"), ("--aff-out", str(UNWRITABLE))),
    ("train-aff --aff-out a user's file", lambda w: train_aff(w, None, None, "--aff-out", _user_file(w, "aff-notes.txt")), ("--aff-out", "aff-notes.txt")),
    ("refine-psa --aff-out its own --seeds", lambda w: refine_psa(w, None, None, "--seeds", _seeds_copy(w), "--aff-out", _seeds_copy(w)), ("--aff-out", "seeds.h5", "input")),
    ("synth --out a user's data set (no manifest)", lambda w: synth(w, _user_folder(w, "user-voc", {"cls_labels.npy": "mine", "classes.txt": "cat\n"})),
     ("user-voc", "no usage run wrote")),  # fmt: skip
    ("predict-seg --out where the loader reads ground truth", lambda w: predict_seg(w, _gt_out(w), _edited_root(w, "data-gt-out", lambda r: None)),
     ("--out", "inside the data set", "data-gt-out")),  # fmt: skip
    ("evaluate: a ground-truth folder holding a usage manifest", lambda w: evaluate(w, None, _gt_with_manifest(w)), ("SegmentationClass", "manifest.json", "predict-seg")),
    ("psa-labels --seeds a folder", lambda w: psa_labels(w, None, None, "--seeds", w / "seeds"), ("folder", str(Path("seeds") / "seeds.h5"))),
    ("gen-seeds --split-file line 'val 00000'", lambda w: gen_seeds(w, None, None, "--split-file", _split_file(w, "spaced.txt", "train_00000\nval 00000\n")),
     ("spaced.txt", "line 2", "val 00000")),  # fmt: skip
    ("gen-seeds --config a folder", lambda w: gen_seeds(w, None, None, "--config", _config_folder(w)), ("config-folder", "folder")),
    # further cases of the same kinds (issue 29's "tried as a new user would")
    ("gen-seeds --scales 100000", lambda w: gen_seeds(w, None, None, "--scales", "100000"), ("--scales",)),
    ("predict-seg --scales 1,nan", lambda w: predict_seg(w, None, None, "--scales", "1,nan"), ("--scales", "nan")),
    ("evaluate --bg-thresholds 0:inf:0.1", lambda w: evaluate(w, None, None, "--bg-thresholds", "0:inf:0.1"), ("--bg-thresholds",)),
    ("evaluate --bg-thresholds 0:1:1e-9", lambda w: evaluate(w, None, None, "--bg-thresholds", "0:1:1e-9"), ("--bg-thresholds", "step")),
    ("evaluate --bg-power -1", lambda w: evaluate(w, None, None, "--bg-power", -1), ("--bg-power",)),
    ("train-seg --head-lr-mult 0", lambda w: train_seg(w, None, None, "--head-lr-mult", 0), ("--head-lr-mult",)),
    ("train-aff --scale nan:1", lambda w: train_aff(w, None, None, "--scale", "nan:1"), ("--scale", "nan")),
    ("train-cls --img-size 100000", lambda w: train_cls(w, None, None, "--img-size", 100000), ("--img-size",)),
    ("train-cls --epochs abc (one line, not click's box)", lambda w: train_cls(w, None, None, "--epochs", "abc"), ("--epochs", "--help")),
    ("train-cls --workers 100000", lambda w: train_cls(w, None, None, "--workers", 100000), ("--workers",)),
    ("train-cls --timeout inf", lambda w: train_cls(w, None, None, "--timeout", "inf"), ("--timeout",)),
    ("synth --seed -1", lambda w: synth(w, None, None, "--seed", -1), ("--seed",)),
    ("synth --train 10000000", lambda w: synth(w, None, None, "--train", 10**7), ("--train",)),
    ("report --gallery -1", lambda w: report(w, None, None, "--gallery", -1), ("--gallery",)),
    ("report --out is its own metrics input", lambda w: report(w, w / "m.json"), ("--out", "input")),
    ("evaluate --out its own --pred", lambda w: evaluate(w, _seeds_copy(w), None, "--pred", _seeds_copy(w)), ("--out", "input", "--pred")),
    ("gen-seeds --out its own --root", lambda w: gen_seeds(w, w / "data", None, "--force"), ("--out", "--root", "input")),
    ("psa-walk --out the folder of its --seeds (--force)", lambda w: psa_walk(w, _seeds_copy(w).parent, None, "--seeds", _seeds_copy(w), "--force"), ("--out", "--seeds", "input")),
    ("train-seg --out its own --masks", lambda w: train_seg(w, w / "masks"), ("--out", "--masks", "input")),
    ("evaluate --out inside the data set", lambda w: evaluate(w, w / "data" / "metrics.json"), ("--out", "inside the data set")),
    ("report --html a folder holding its metrics file", lambda w: report(w, None, None, "--html", w), ("--html", "input")),
    ("train-seg --weights <out>/checkpoint.pt --force", lambda w: train_seg(w, _seg_copy(w), None, "--weights", _seg_copy(w) / "checkpoint.pt", "--force"),
     ("--out", "--weights", "input")),  # fmt: skip
    ("synth --force over its own data set holding a user's image", lambda w: synth(w, _synth_holding_a_users_image(w), None, "--seed", 9, "--force"), ("mine.jpg", "no usage run wrote")),
    ("gen-seeds --force: overlays/ a link to a user's folder", lambda w: gen_seeds(w, _overlays_linked_to_photos(w), None, "--force"), ("overlays", "no usage run wrote")),
    ("gen-seeds --split-file a folder", lambda w: gen_seeds(w, None, None, "--split-file", w / "seeds"), ("seeds", "folder")),
    ("gen-seeds --split-file a classification list ('id -1')", lambda w: gen_seeds(w, None, None, "--split-file", _split_file(w, "main-list.txt", "train_00000 -1\ntrain_00001  1\n")),
     ("main-list.txt", "line 1")),  # fmt: skip
]


@pytest.mark.parametrize("name,args,words", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_exit_2(w, name, args, words):
    claimable = ("new-cls", "new-seeds", "new-masks", "new-confident", "new-aff", "new-walk", "new-seg", "new-preds", "new-synth")
    existed = {f for f in claimable if (w / f).exists()}
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
    for folder in set(claimable) - existed:  # issue 29: a refused start leaves no folder claimed and empty
        assert not (w / folder).is_dir() or any((w / folder).iterdir()), f"{name}: left {folder} claimed and empty"
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
    res = _run(*refine_psa(w, None, root))  # other labels: the seeds were made from another data set
    assert res.exit_code == 2 and "made from" in res.output, res.output
    res = _run(*refine_psa(w, None, root, "--force"))  # used anyway: the per-image check still refuses them
    assert res.exit_code == 2 and "labels do not list" in res.output, res.output
    assert not (w / "new-masks" / "manifest.json").exists()


def test_mask_folders_do_not_mix_runs(w):
    """predict-seg into a folder holding someone else's PNGs is refused, with --force too: usage never
    deletes what it did not write (issue 21; --force used to clear them)."""
    out = w / "foreign-pngs"
    out.mkdir()
    (out / "mine.png").write_bytes(b"\x89PNG not really")
    for extra in ((), ("--force",)):
        res = _run(*predict_seg(w, out, None, *extra))
        assert res.exit_code == 2 and "mine.png" in res.output and "no usage run wrote" in res.output, res.output
        assert (out / "mine.png").read_bytes() == b"\x89PNG not really" and not (out / "manifest.json").exists()
    (out / "mine.png").unlink()
    _ok(*predict_seg(w, out, None, "--force"))
    assert (out / "manifest.json").exists()


# ---------------------------------------------------------------- issue 21: never delete what usage did not write
def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_html_never_deletes_a_users_files(w):
    """A folder with the user's own index.html and thesis.tex is not a report folder; a report folder
    with a user's file beside the report's same-named ones is not replaced either; a clean one is."""
    mine = _user_folder(w, "thesis", {"index.html": "<p>my page</p>", "thesis.tex": "\\chapter{mine}"})
    res = _run(*report(w, None, None, "--html", mine))
    assert res.exit_code == 2 and "thesis.tex" in res.output, res.output
    assert _tree(mine) == {"index.html": b"<p>my page</p>", "thesis.tex": b"\\chapter{mine}"}
    page = w / "report-page"
    _ok(*report(w, None, None, "--html", page))
    listed = json.loads((page / "manifest.json").read_text())["files"]
    assert "index.html" in listed and all((page / f).is_file() for f in listed)
    (page / "thesis.tex").write_text("mine")  # a user's file beside the report's own
    (page / "gallery" / "notes.png").parent.mkdir(exist_ok=True)
    (page / "gallery" / "notes.png").write_text("mine")  # and one named like the report's own files
    before = _tree(page)
    res = _run(*report(w, None, None, "--html", page))
    assert res.exit_code == 2 and "thesis.tex" in res.output and "gallery/notes.png" in res.output, res.output
    assert _tree(page) == before
    (page / "thesis.tex").unlink()
    (page / "gallery" / "notes.png").unlink()
    _ok(*report(w, None, None, "--html", page))  # the report's own files only: replaced


@pytest.mark.parametrize("stage", ["predict-seg", "gen-seeds"])
def test_force_replaces_only_the_files_the_manifest_lists(w, stage):
    """A finished run's folder with a user's file beside the stage's same-named ones: --force (another
    config) refuses with one line naming it and deletes nothing; without it the rerun replaces the run."""
    src, mine, other = {"predict-seg": ("preds", "mine.png", "--no-flip"), "gen-seeds": ("seeds", "overlays/mine.png", "--no-flip")}[stage]
    out = w / f"owned-{stage}"
    shutil.copytree(w / src, out)
    (out / mine).write_bytes(b"mine")
    before = _tree(out)
    res = _run(*STAGES[stage](w, out, None, other, "--force"))
    assert res.exit_code == 2 and mine in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert _tree(out) == before
    (out / mine).unlink()
    _ok(*STAGES[stage](w, out, None, other, "--force"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["flip"] is False
    assert manifest["files"] == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")


# ---------------------------------------------------------------- issue 21: one writer per output folder
SLOW_GEN_SEEDS = """
import sys, time
import usage_cli.stages.gen_seeds as gs
real = gs.views_to_maps
def slow(*a, **k):
    print("working", flush=True)
    time.sleep(float(sys.argv[1]))
    return real(*a, **k)
gs.views_to_maps = slow
from usage_cli.cli import app
app(sys.argv[2:], prog_name="usage")
"""


def test_a_second_writer_is_refused_naming_the_holder_and_the_first_finishes(w):
    """Two gen-seeds on one --out (issue 21: both did all the work and left seeds.h5 without a manifest)."""
    import subprocess
    import sys

    lock = w / "two-writers" / ".usage.lock"  # artifacts.lock.LOCK_NAME
    out = lock.parent
    out.mkdir()
    lock.write_text("PID 1 on nowhere, usage gen-seeds\n")  # left by a killed run: it holds no lock
    args = [str(a) for a in gen_seeds(w, out, None, "--batch-size", 1)]
    first = subprocess.Popen([sys.executable, "-c", SLOW_GEN_SEEDS, "2", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert first.stdout.readline().strip() == "working"  # the first has claimed the folder and computes
        res = _run(*args)  # the second process, while the first writes
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
        assert str(out) in res.output and f"PID {first.pid}" in res.output, res.output
    finally:
        output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert (out / "manifest.json").exists() and (out / "seeds.h5").exists() and not lock.exists()


HOLD_LOCK = """
import sys
from pathlib import Path
from usage_cli.artifacts.lock import lock_out
lock_out(Path(sys.argv[1]), "gen-seeds")
print("locked", flush=True)
sys.stdin.read()
"""


def test_torchrun_ranks_share_the_folder_rank_0_holds(w, monkeypatch):
    """Rank 0 takes the lock for its job; the other ranks of a job write the same --out unrefused."""
    import subprocess
    import sys

    from usage_cli.artifacts.claims import claim_out
    from usage_cli.artifacts.lock import holds_out_lock

    out = w / "ranks"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        claim = holds_out_lock(claim_out)
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        assert claim(out, "gen-seeds", {}, ("seeds.h5",), force=False) == out  # another rank of the holder's job
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(UsageError, match=f"PID {holder.pid}"):
            claim(out, "gen-seeds", {}, ("seeds.h5",), force=False)
    finally:
        holder.communicate("", timeout=60)


# ---------------------------------------------------------------- issue 21: the pairing of an artifact and a data set
def test_evaluate_force_scores_another_data_set_and_records_it(w):
    out = w / "forced.json"
    _ok(*evaluate(w, out, _other_data(w), "--force"))
    m = json.loads(out.read_text())
    assert m["pairing"]["forced"] is True  # --force is a run-time option (not in the config): the pairing records it
    assert m["pairing"]["recorded"]["root"] == str((w / "data").resolve()) and m["data"]["root"] == str(_other_data(w).resolve())
    _ok(*evaluate(w, w / "paired.json"))  # the data set the seeds were made from
    assert json.loads((w / "paired.json").read_text())["pairing"] == {"fingerprint": m["pairing"]["recorded"]["fingerprint"], "forced": False}


def test_artifacts_recording_no_data_set_are_still_accepted(w):
    """A seed store written before artifacts recorded their data set is scored as before."""
    import h5py

    legacy = w / "legacy-seeds"
    shutil.copytree(w / "seeds", legacy)
    with h5py.File(legacy / "seeds.h5", "a") as f:
        del f.attrs["data"]
    out = w / "legacy.json"
    _ok(*evaluate(w, out, None, "--pred", legacy / "seeds.h5"))
    assert "pairing" not in json.loads(out.read_text())


def test_report_refuses_a_gallery_over_another_data_set(w):
    """Metrics scored on a data set that was since replaced by another: the gallery would draw the
    artifact over other images. One line naming both; --force draws it with a note."""
    root = w / "data-replaced"
    shutil.copytree(w / "data", root)
    metrics = w / "replaced.json"
    _ok(*evaluate(w, metrics, root))
    shutil.rmtree(root)
    shutil.copytree(_other_data(w), root)
    res = _run("report", metrics, "--html", w / "replaced-page", "--gallery", 2)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "made from" in res.output and "--force" in res.output, res.output
    assert not (w / "replaced-page").exists()
    _ok("report", metrics, "--html", w / "replaced-page", "--gallery", 2, "--force")
    assert "not from the data set shown" in (w / "replaced-page" / "index.html").read_text()


# ---------------------------------------------------------------- issue 21: messages that name the real cause
def test_evaluate_blames_the_missing_image_and_mask_not_the_labels(w):
    res = _run(*evaluate(w, None, _edited_root(w, "data-ghost", _ghost_id)))
    assert res.exit_code == 2 and "ghost" in res.output and "cls_labels" not in res.output, res.output


def test_a_corrupt_partial_seed_store_is_discarded_with_a_warning(w):
    out = w / "corrupt-partial"
    out.mkdir()
    (out / "seeds.h5.partial").write_bytes(b"not an HDF5 file")
    res = _run(*gen_seeds(w, out))
    assert res.exit_code == 0, res.output
    assert "seeds.h5.partial" in res.output and "discarded" in res.output, res.output
    assert (out / "manifest.json").exists()


def _interrupt_second_forward(monkeypatch) -> list[int]:
    """gen-seeds' ``views_to_maps`` interrupted (Ctrl-C) on its second call; the list counts the calls
    (a test that sets it past 2 lets the rest run)."""
    import usage_cli.stages.gen_seeds as gs

    real, calls = gs.views_to_maps, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(gs, "views_to_maps", interrupted)
    return calls


def test_an_interrupted_batch_is_said_and_resumed(w, monkeypatch):
    """--batch-size 8 over 10 images, interrupted in the second batch: the line says what is kept (8 of
    10) and that the batch in flight is not; the rerun says what it resumes and finishes."""
    root = w / "data-ten"
    if not root.exists():
        generate(root, n_train=10, n_val=1, size=32, seed=1)
    calls = _interrupt_second_forward(monkeypatch)
    out = w / "interrupted-seeds"
    args = ["gen-seeds", "--root", root, "--split", "train", "--ckpt", w / "cls" / "checkpoint.pt", "--out", out, "--scales", "1.0",
            "--workers", 0, "--overlays", 0, "--batch-size", 8, "--quiet"]  # fmt: skip
    res = _run(*args)
    assert res.exit_code == 130 and "8 of 10 images are saved" in res.output and "--batch-size 8" in res.output, res.output
    calls[:] = [1, 1]  # no second interrupt
    res = _run(*[a for a in args if a != "--quiet"])
    assert res.exit_code == 0 and "8 of 10 images done, 2 to compute" in res.output, res.output


# ---------------------------------------------------------------- issue 29: each case of the issue, with what must be kept
def _refused(res, *words) -> None:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), f"exit {res.exit_code}:\n{res.output}\n{res.exception!r}"
    for word in words:
        assert word in res.output, f"the line does not mention {word!r}:\n{res.output}"


def test_aff_out_never_replaces_a_users_file_and_is_checked_before_training(w, monkeypatch):
    """train-aff --aff-out user/notes.txt replaced the file with a checkpoint (exit 0); a folder or a
    read-only place failed only after training, leaving last.pt and a log without a manifest."""
    import usage_cli.engine.loop as loop

    monkeypatch.setattr(loop, "_train_epoch", lambda *a, **k: pytest.fail("trained before --aff-out was checked"))
    notes = _user_file(w, "notes.txt")
    before = notes.read_bytes()
    for target, words in ((notes, ("notes.txt", "--aff-out")), (w / "seeds", ("--aff-out", "folder")), (UNWRITABLE / "a.pt", ("--aff-out", str(UNWRITABLE)))):
        out = w / "aff-out-checked"
        _refused(_run(*train_aff(w, out, None, "--aff-out", target)), *words)
        assert not out.exists(), f"{target}: left {sorted(p.name for p in out.iterdir())}"  # nothing claimed, no last.pt
    assert notes.read_bytes() == before


def test_refine_psa_aff_out_over_its_own_seeds_is_refused(w):
    """refine-psa --aff-out <its --seeds store> wrote the AffinityNet over the store it was reading."""
    seeds = w / "seeds-own" / "seeds.h5"
    shutil.copytree(w / "seeds", seeds.parent)
    before = _tree(seeds.parent)
    _refused(_run(*refine_psa(w, w / "own-masks", None, "--seeds", seeds, "--aff-out", seeds)), "--aff-out", str(seeds), "input")
    assert _tree(seeds.parent) == before and not (w / "own-masks").exists()


def test_synth_never_writes_into_a_users_data_set(w):
    """synth --out into a user's own VOC folder (no manifest) replaced cls_labels.npy, classes.txt, the
    split lists and same-named images."""
    mine = w / "user-voc-full"
    shutil.copytree(w / "data", mine)
    (mine / "manifest.json").unlink(missing_ok=True)
    before = _tree(mine)
    for extra in ((), ("--force",)):
        _refused(_run(*synth(w, mine, None, *extra)), str(mine), "no usage run wrote")
        assert _tree(mine) == before


def test_predictions_never_land_where_ground_truth_is_looked_up(w):
    """predict-seg --out <root>/VOCdevkit/VOC2012/SegmentationClassAug, then evaluate: scored against
    themselves, mIoU 100, exit 0."""
    root = w / "data-pred-in-gt"
    shutil.copytree(w / "data", root)
    gt = root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    _refused(_run(*predict_seg(w, gt, root)), "--out", "inside the data set", str(root))
    assert not gt.exists()
    # put there by other means (an older usage, a copy): evaluate refuses the folder as ground truth
    shutil.copytree(w / "preds", gt)
    _refused(_run(*evaluate(w, w / "gt-pred.json", root, "--pred", gt)), "SegmentationClassAug", "manifest.json", "predict-seg")
    assert not (w / "gt-pred.json").exists()


def test_report_marks_scores_of_an_artifact_regenerated_since(w):
    """After gen-seeds --force regenerated a store, report (table and page) showed the old scores beside
    the new maps; the metrics file's recorded sha256 no longer matches."""
    seeds = w / "seeds-regen"
    shutil.copytree(w / "seeds", seeds)
    metrics = w / "regen.json"
    _ok(*evaluate(w, metrics, None, "--pred", seeds / "seeds.h5"))
    res = _run("report", metrics, "--out", w / "regen-rows.json")
    assert res.exit_code == 0 and "stale" not in res.output, res.output
    _ok(*gen_seeds(w, seeds, None, "--no-flip", "--force"))
    res = _run("report", metrics, "--out", w / "regen-rows.json", "--html", w / "regen-page", "--gallery", 0)
    assert res.exit_code == 0, res.output
    assert "stale" in res.output and "seeds.h5" in res.output and "changed since it was scored" in res.output, res.output
    rows = json.loads((w / "regen-rows.json").read_text())
    assert rows[0]["stale"] == ["pred"], rows
    assert "stale" in (w / "regen-page" / "index.html").read_text()


def test_resume_refuses_inputs_changed_since_the_interrupted_run(w):
    """train-seg --resume after the masks were regenerated trained part of its epochs on the old masks
    and its manifest pinned only the new ones."""
    import torch

    masks, out = w / "masks-resume", w / "seg-resume"
    shutil.copytree(w / "masks", masks)
    _ok(*train_seg(w, out, None, "--masks", masks, "--epochs", 1))
    last = torch.load(out / "last.pt", weights_only=True)
    last["epochs"] = 2  # stopped after 1 of 2 epochs
    torch.save(last, out / "last.pt")
    (out / "manifest.json").unlink()
    (out / "checkpoint.pt").unlink()
    _ok(*refine_psa(w, masks, None, "--affinity", w / "masks" / "affinity.pt", "--beta", 4, "--force"))  # the masks regenerated
    before = _tree(out)
    _refused(_run(*train_seg(w, out, None, "--masks", masks, "--epochs", 2, "--resume")), "masks-resume", "changed", "--force")
    assert _tree(out) == before
    _ok(*train_seg(w, out, None, "--masks", masks, "--epochs", 2, "--force"))


def test_refine_psa_refuses_a_seed_store_replaced_while_it_runs(w, monkeypatch):
    """refine-psa opened --seeds twice: a store replaced in between gave masks walked from one store and
    confident labels pinned to another."""
    import h5py

    import usage_cli.stages.psa_labels as psa_labels

    seeds = w / "seeds-swap" / "seeds.h5"
    shutil.copytree(w / "seeds", seeds.parent)
    real = psa_labels.run

    def then_replace(cfg):
        result = real(cfg)
        with h5py.File(seeds, "a") as f:  # another gen-seeds run publishes over it
            f.attrs["bg_threshold"] = 0.123
        return result

    monkeypatch.setattr(psa_labels, "run", then_replace)
    out = w / "masks-swap"
    _refused(_run(*refine_psa(w, out, None, "--seeds", seeds)), str(seeds), "changed")
    assert not (out / "manifest.json").exists()


def test_a_full_disk_is_one_line_naming_the_file_and_what_to_do(w, monkeypatch):
    """A full disk while saving a checkpoint (train-cls, train-aff) or flushing the seed store (gen-seeds)
    gave tracebacks; the partial state stays for a rerun."""
    import shutil as sh

    import h5py
    import torch

    # a disk without room: said before the write, naming the file
    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**12, 10**12, 0))
    for args, name in ((train_cls(w, w / "full-cls"), "last.pt"), (train_aff(w, w / "full-aff"), "last.pt"), (gen_seeds(w, w / "full-seeds"), "seeds.h5")):
        _refused(_run(*args), name, "no space left")
    monkeypatch.undo()

    def torch_full(*a, **k):  # what torch's zip writer raises when the file system refuses a write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 114432 vs 114320")

    monkeypatch.setattr(torch, "save", torch_full)
    _refused(_run(*train_cls(w, w / "full-cls-2")), "last.pt", "--resume")
    monkeypatch.undo()

    def h5_full(self, *a, **k):  # HDF5's error on a full disk, with its C call stack
        raise OSError("Can't synchronously write data (file write failed: time = Sun Dec  6 11:10:47 2026\n, filename = 'x', "
                      "file descriptor = 4, errno = 28, error message = 'No space left on device', buf = 0x5, total write size = 2377)")  # fmt: skip

    monkeypatch.setattr(h5py.Group, "create_dataset", h5_full)
    res = _run(*gen_seeds(w, w / "full-seeds-2"))
    _refused(res, "seeds.h5.partial", "No space left on device", "rerun the same command to resume")
    assert "errno" not in res.output


def test_a_classes_file_with_a_byte_order_mark_is_read_as_its_names(w):
    """classes.txt saved with a UTF-8 BOM was blamed on the length of the label vectors in cls_labels.npy."""

    def bom(root: Path) -> None:
        p = root / "classes.txt"
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())

    _ok(*gen_seeds(w, w / "bom-seeds", _edited_root(w, "data-bom", bom)))


def test_a_seeds_folder_names_the_store_inside_not_hdf5s_stack(w):
    res = _run(*psa_labels(w, None, None, "--seeds", w / "seeds"))
    _refused(res, "folder", str(w / "seeds" / "seeds.h5"))
    assert "errno" not in res.output and "Unable to" not in res.output


def test_psa_walk_names_the_unfinished_refine_psa_run_in_its_out(w):
    """psa-walk called the PNGs a killed refine-psa wrote 'files no usage run wrote'."""
    out = w / "killed-refine"
    shutil.copytree(w / "masks", out)
    (out / "manifest.json").unlink()
    (out / ".refine-psa.partial").write_text("{}\n")  # artifacts.outdir.PNG_MARKERS["refine-psa"]
    res = _run(*psa_walk(w, out))
    _refused(res, "refine-psa", "unfinished")
    assert "no usage run wrote" not in res.output


def test_a_gen_seeds_resume_with_other_options_names_them(w, monkeypatch):
    _interrupt_second_forward(monkeypatch)
    out = w / "resume-other"
    assert _run(*gen_seeds(w, out, None, "--batch-size", 1)).exit_code == 130
    _refused(_run(*gen_seeds(w, out, None, "--batch-size", 1, "--no-flip")), "flip", "--force")


def test_a_truncated_last_pt_says_force(w):
    out = w / "truncated-last"
    shutil.copytree(w / "masks" / "affinity-train", out)
    for name in ("manifest.json", "affinity.pt"):
        (out / name).unlink(missing_ok=True)
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    for extra in ((), ("--resume",)):
        _refused(_run(*train_aff(w, out, None, *extra)), "last.pt", "--force")


def test_a_config_null_is_unset_and_a_flag_fills_it(w):
    """``root: null`` in a config file was refused even when --root was given."""
    cfg = w / "root-null.yaml"
    cfg.write_text("root: null\nscales: [1.0]\n")
    res = _run("gen-seeds", "--root", w / "data", "--ckpt", w / "cls" / "checkpoint.pt", "--out", w / "null-seeds", "--config", cfg, "--print-config")
    assert res.exit_code == 0 and f"root: {w / 'data'}" in res.output, res.output
    res = _run("gen-seeds", "--ckpt", w / "cls" / "checkpoint.pt", "--out", w / "null-seeds", "--config", cfg)
    _refused(res, "--root")


# ---------------------------------------------------------------- issue 29: each rule, walked over every path option of every command
# The options are read from the commands themselves, so a new option (or a new command in STAGES) is
# walked without being listed here: pointed at a user's file, a user's folder, a place inside the data
# set or one of the run's own inputs, it is refused with one line before any work, and nothing changes.
WORK = ("usage_cli.engine.loop._train_epoch", "usage_cli.stages.gen_seeds.views_to_maps", "usage_cli.stages.psa_labels._label_all",
        "usage_cli.algorithms.psa_refine.refine_image", "usage_cli.stages.predict_seg._predict_all", "usage_cli.stages.evaluate._score_all",
        "usage_cli.stages.synth.generate", "usage_cli.stages.report.write_html")  # fmt: skip


@pytest.fixture
def no_work(monkeypatch):
    """Every stage's work fails the test: a refusal must come before it."""
    import importlib

    for target in WORK:
        module, name = target.rsplit(".", 1)
        monkeypatch.setattr(importlib.import_module(module), name, lambda *a, t=target, **k: pytest.fail(f"{t} ran before the paths were checked"))


def _options(command: str) -> dict[str, str]:
    """Flag -> annotation of every option of ``command``, as its click command declares them."""
    import typer

    params = typer.main.get_command(app).commands[command].params
    kind = lambda p: str(getattr(getattr(p, "type_descriptor", None), "annotation", None) or getattr(p, "type", ""))  # noqa: E731
    return {p.opts[0]: kind(p) for p in params if p.opts and p.opts[0].startswith("--")}


def _path_options(command: str) -> list[str]:
    return [flag for flag, kind in _options(command).items() if "Path" in kind]


def _set(args: list, option: str, value) -> list[str]:
    """``args`` with ``option`` given ``value`` (replaced where given, else added)."""
    args = [str(a) for a in args]
    if option in args:
        args[args.index(option) + 1] = str(value)
        return args
    return [*args, option, str(value)]


def _refused_before_work(res, what: str) -> None:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), f"{what}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"


def _forces(command: str) -> tuple[tuple[str, ...], ...]:
    return ((), ("--force",)) if "--force" in _options(command) else ((),)


def test_rule_walk_finds_every_output_option():
    """The walk sees the options that write: it is not vacuous."""
    found = {c: _path_options(c) for c in STAGES}
    assert "--aff-out" in found["train-aff"] and "--aff-out" in found["refine-psa"] and "--html" in found["report"]
    assert all("--out" in found[c] for c in STAGES)


@pytest.mark.parametrize("command", list(STAGES))
def test_rule_1_no_path_option_replaces_a_file_or_folder_usage_did_not_write(w, no_work, command):
    """Rule 1: every path a command takes, given a user's file or a user's folder (its own manifest.json
    and notes), is refused with one line before any work, with --force too; not a byte changes."""
    mine = _user_folder(w, f"rule1-{command}", {"notes.txt": "my notes\n", "folder/manifest.json": '{"mine": 1}\n', "folder/notes.txt": "mine\n"})
    before = _tree(mine)
    for option in _path_options(command):
        for target in (mine / "notes.txt", mine / "folder"):
            for extra in _forces(command):
                res = _run(*_set(STAGES[command](w), option, target), *extra)
                _refused_before_work(res, f"{command} {option} {target.name} {' '.join(extra)}")
                assert _tree(mine) == before, f"{command} {option} {target.name}: changed the user's files"


@pytest.mark.parametrize("command", list(STAGES))
def test_rule_1_no_output_replaces_the_runs_own_inputs(w, no_work, command):
    """Rule 1: every path option given one of the run's own inputs (or, with --force, the folder holding
    one) is refused with one line before any work; the inputs are unchanged."""
    args = [str(a) for a in STAGES[command](w)]
    inputs = [(flag, Path(args[i + 1])) for i, flag in enumerate(args[:-1]) if flag.startswith("--") and Path(args[i + 1]).exists() and Path(args[i + 1]).is_absolute()]
    assert inputs or command == "synth", command  # synth reads nothing
    for flag, path in inputs:
        holder = path if path.is_dir() else path.parent
        before = _tree(holder)
        for option in _path_options(command):
            if option == flag:
                continue
            for target in (path, holder):
                for extra in _forces(command):
                    res = _run(*_set(args, option, target), *extra)
                    _refused_before_work(res, f"{command} {option} = its {flag} ({target}) {' '.join(extra)}")
        assert _tree(holder) == before, f"{command}: changed its input {flag}"


@pytest.mark.parametrize("command", [c for c in STAGES if "--root" in _options(c)])
def test_rule_2_no_output_lands_inside_the_data_set(w, no_work, command):
    """Rule 2: every path option given a place inside the data set's root is refused with one line before
    any work (an output: it lands where the loaders look their files up; an input: it is not there)."""
    before = _tree(w / "data")
    for option in _path_options(command):
        if option == "--root":
            continue
        for target in (w / "data" / "VOCdevkit" / "VOC2012" / "SegmentationClassAug", w / "data" / "runs" / "x.json"):
            res = _run(*_set(STAGES[command](w), option, target))
            _refused_before_work(res, f"{command} {option} {target}")
    assert _tree(w / "data") == before


def test_rule_2_a_user_who_means_it_writes_inside_the_data_set(w):
    """--out-in-root: an output inside the root (a runs/ folder in the data set) where the user says so;
    the data set's own files are untouched."""
    before = _tree(w / "data")
    _ok(*gen_seeds(w, w / "data" / "runs" / "seeds", None, "--out-in-root"))
    assert (w / "data" / "runs" / "seeds" / "manifest.json").exists()
    shutil.rmtree(w / "data" / "runs")
    assert _tree(w / "data") == before


def test_report_marks_a_row_whose_artifact_is_gone(w):
    seeds = w / "seeds-gone"
    shutil.copytree(w / "seeds", seeds)
    _ok(*evaluate(w, w / "gone.json", None, "--pred", seeds / "seeds.h5"))
    shutil.rmtree(seeds)
    res = _run("report", w / "gone.json")
    assert res.exit_code == 0 and "stale" in res.output and "is gone" in res.output, res.output


@pytest.mark.parametrize("command", [c for c in STAGES if "--resume" in _options(c)])
def test_rule_3_a_resume_never_continues_on_a_changed_data_set(w, command):
    """Rule 3: every command that resumes a training, after one epoch, its data set then edited (one
    image's labels flipped), refuses ``--resume`` with one line saying how to start over — it never trains its
    remaining epochs on other data than its first."""
    root = w / f"data-resume-{command}"
    shutil.copytree(w / "data", root)
    out = w / f"resume-{command}"
    _ok(*STAGES[command](w, out, root))
    table = np.load(root / "cls_labels.npy", allow_pickle=True).item()
    first = sorted(table)[0]
    table[first] = 1 - np.asarray(table[first], np.float32)  # the first image's labels flipped: another data set
    np.save(root / "cls_labels.npy", table)
    before = _tree(out)
    res = _run(*STAGES[command](w, out, root, "--resume", "--epochs", 2))
    _refused_before_work(res, f"{command} --resume on an edited data set")
    assert "--force" in res.output, res.output
    assert _tree(out) == before


NUMBERS = {"float": ("nan", "inf", "-inf", "1e400"), "int": ("1.5", str(2**64))}


@pytest.mark.parametrize("command", list(STAGES))
def test_rule_4_every_number_is_range_checked_when_parsed(w, no_work, command):
    """Rule 4: every numeric option given NaN, an infinity (an integer one: a fraction, a number beyond 64
    bits) is refused with one line naming it, before any work."""
    for option, kind in _options(command).items():
        number = next((t for t in NUMBERS if t in kind), None)
        if number is None or "Path" in kind:
            continue
        for value in NUMBERS[number]:
            res = _run(*_set(STAGES[command](w), option, value))
            _refused_before_work(res, f"{command} {option} {value}")
            assert option in res.output or option.lstrip("-").replace("-", "_") in res.output, f"{command} {option} {value}: {res.output}"
