"""The formats artifacts/ owns: the three checkpoint kinds (round trip, wrong kind, other major version),
the one config-to-JSON helper (equal to the five copies it replaced), the PNG-folder marker, the
metrics.json manifest; and the image-level label files: PSA's pickled cls_labels.npy read without
running code, cls_labels.json."""

from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
import torch

from usage_cli.artifacts import aff_checkpoint, cls_checkpoint, seg_checkpoint
from usage_cli.artifacts.checkpoint import save_checkpoint
from usage_cli.artifacts.claims import check_owned, run_state
from usage_cli.artifacts.labels import (
    PNG_MARKERS,
    finish_png_folder,
    resume_png_folder,
    start_png_folder,
)
from usage_cli.artifacts.manifest import config_hash, run_config
from usage_cli.data.labels_io import (
    load_cls_labels,
    load_cls_labels_json,
    read_npy_restricted,
    write_cls_labels_json,
)
from usage_cli.errors import ArtifactError, DatasetError

# --- checkpoint kinds -------------------------------------------------------------------------------

STATE = {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(2)}
KINDS = {
    "cls": (cls_checkpoint.save_cls_checkpoint, cls_checkpoint.read_cls_checkpoint, cls_checkpoint,
            {"seed_network": "teacher", "dataset": {"name": "voc", "root": "data", "split": "train"}}),
    "seg": (seg_checkpoint.save_seg_checkpoint, seg_checkpoint.read_seg_checkpoint, seg_checkpoint,
            {"dataset": {"name": "voc", "split": "train", "root": "data", "num_images": 2}, "weights_source": "none"}),
    "aff": (aff_checkpoint.save_aff_checkpoint, aff_checkpoint.read_aff_checkpoint, aff_checkpoint, {"weights_source": "none"}),
}  # fmt: skip


def _save(kind: str, path: Path) -> None:
    save, _, _, extra = KINDS[kind]
    save(path, model=STATE, model_config={"backbone": "resnet18"}, class_names=["cat", "dog"], train_config={"lr": 0.1, "scale": [0.7, 1.3]}, **extra)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_kind_round_trip_weights_only(kind, tmp_path):
    _, read, module, extra = KINDS[kind]
    _save(kind, tmp_path / "c.pt")
    ckpt = read(tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["format"] == module.FORMAT  # plain torch.load reads it
    assert (ckpt["format"], ckpt["version"]) == (module.FORMAT, module.VERSION)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in STATE.items())
    assert ckpt["model_config"] == {"backbone": "resnet18"} and ckpt["class_names"] == ["cat", "dog"]
    assert ckpt["train_config"] == {"lr": 0.1, "scale": [0.7, 1.3]} and all(ckpt[k] == v for k, v in extra.items())


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_kind_refuses_another_kind_and_another_major_version(kind, tmp_path):
    _, read, module, _ = KINDS[kind]
    other = next(k for k in KINDS if k != kind)
    _save(other, tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match=r"other\.pt: not a usage.*format 'usage-.*(pass it to `usage)"):
        read(tmp_path / "other.pt")  # and the message names what the file is and where it goes
    save_checkpoint(tmp_path / "v2.pt", {"format": module.FORMAT, "version": "2.0.0", "model": STATE})
    with pytest.raises(ArtifactError, match=r"v2\.pt: .*version 2\.0\.0 is not readable by this usage \(1\.x\); .*usage"):
        read(tmp_path / "v2.pt")
    save_checkpoint(tmp_path / "v1.pt", {"format": module.FORMAT, "version": "1.7.0", "model": STATE})
    assert read(tmp_path / "v1.pt")["version"] == "1.7.0"  # a minor version is readable


def test_kind_messages_the_stages_relied_on(tmp_path):
    _save("cls", tmp_path / "cls.pt")
    _save("seg", tmp_path / "seg.pt")
    with pytest.raises(ArtifactError, match="not a usage-aff-checkpoint"):
        aff_checkpoint.read_aff_checkpoint(tmp_path / "cls.pt")
    with pytest.raises(ArtifactError, match="not a usage classifier checkpoint"):
        cls_checkpoint.read_cls_checkpoint(tmp_path / "seg.pt")


# --- run_config: the five config-to-JSON copies it replaced ----------------------------------------


def _flat(cfg):  # the fields as they were before the run-time and dataset blocks were nested: the stage's own, flat
    def items(f):
        if f.name == "data":  # --allow-unlabelled came later: off, it is not in a manifest config (those before it compare equal)
            return {k: v for k, v in asdict(cfg.data).items() if not (k == "allow_unlabelled" and v is False)}
        if f.name != "runtime":
            return {f.name: getattr(cfg, f.name)}
        # (--tensorboard came after these copies: how a run goes, never in a manifest)
        return {k: v for k, v in asdict(cfg.runtime).items() if k in cfg.RUNTIME_OPTIONS and k != "tensorboard"}

    return {k: v for f in fields(cfg) for k, v in items(f).items()}


def _refine_psa_plain(cfg, keep=None):  # stages/refine_psa.py `_plain` before
    skip = ("device", "workers", "quiet", "resume", "force", "aff_out", "timeout", "out_in_root")
    d = _flat(cfg)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items() if k not in skip and (keep is None or k in keep)}


def _jsonable(d, drop=()):  # stages/train_cls.py `_jsonable` before
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in drop}


def _gen_seeds_jsonable(cfg):  # stages/gen_seeds.py `_jsonable` before
    d = _flat(cfg)
    for k in ("out", "force", "quiet", "workers", "batch_size", "device", "overlays", "timeout", "out_in_root"):
        d.pop(k)
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _skip_paths(cfg, skip):  # stages/predict_seg.py `_config`, stages/train_seg.py `_run_config` before
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in _flat(cfg).items() if k not in skip}


def _configs():
    from usage_cli.chains import refine_psa
    from usage_cli.runtime import config_drop
    from usage_cli.stages import gen_seeds, predict_seg, train_cls, train_seg

    p = {"root": Path("data/voc"), "out": Path("runs/x")}
    cfg = refine_psa.RefinePsaConfig(seeds=Path("s/seeds.h5"), dataset="voc", split="train", **p, split_file=Path("a b/list.txt"), scale=(0.5, 2.0), crf_la=4.0)
    yield "refine-psa", _refine_psa_plain, config_drop(cfg, ("aff_out",)), None, cfg
    cfg = train_cls.TrainClsConfig(dataset="voc", **p, student_drop_path=(0.1, 0.2), weights=Path("w.pth"))
    yield "train-cls", lambda c: _jsonable(_flat(c), drop=("resume", "force", "quiet", "workers", "out", "timeout", "out_in_root")), \
        config_drop(cfg, ("out",), keep=train_cls.ALSO_IN_CONFIG), None, cfg
    cfg = gen_seeds.GenSeedsConfig(ckpt=Path("c/checkpoint.pt"), dataset="voc", split="val", **p, scales=(1.0, 0.5))
    yield "gen-seeds", _gen_seeds_jsonable, config_drop(cfg, gen_seeds.NOT_IN_CONFIG), None, cfg
    cfg = predict_seg.PredictSegConfig(ckpt=Path("seg/checkpoint.pt"), **p, scales=(0.75, 1.0, 1.25))
    yield "predict-seg", lambda c: _skip_paths(c, ("device", "workers", "quiet", "force", "timeout", "out_in_root")), config_drop(cfg), None, cfg
    cfg = train_seg.TrainSegConfig(masks=Path("masks"), **p, scale=(0.6, 1.4))
    yield "train-seg", lambda c: _skip_paths(c, ("device", "workers", "quiet", "resume", "force", "timeout", "out_in_root")), config_drop(cfg), None, cfg


@pytest.mark.parametrize("case", list(_configs()), ids=lambda c: c[0])
def test_run_config_equals_the_copies_it_replaced(case):
    """Manifests keep their ``config`` key for key and ``config_hash`` (resume and --force compare
    them), the run-time and dataset blocks nested or not (the dataset options now sit together, where the
    block is: JSON objects are unordered, the hash sorts the keys); only tuples become lists in memory,
    which JSON never told apart."""
    _, old, runtime, keep, cfg = case
    before, after = old(cfg), run_config(cfg, runtime, keep)
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
    assert config_hash(after) == config_hash(before)
    assert after == json.loads(json.dumps(before))  # plain JSON types: str paths, lists


def test_config_paths_record_the_dataset_blocks_paths_too():
    """A manifest's ``paths`` (where relative options pointed: a rerun that spells them otherwise is the
    same run) hold the dataset block's ``root`` and files beside the stage's own."""
    from usage_cli.artifacts.manifest import config_paths
    from usage_cli.stages.train_seg import TrainSegConfig

    paths = config_paths(TrainSegConfig(masks=Path("m"), root=Path("r"), out=Path("o"), split_file=Path("list.txt")))
    assert paths == {k: str(Path(k2).resolve()) for k, k2 in (("masks", "m"), ("out", "o"), ("root", "r"), ("split_file", "list.txt"))}


def test_run_config_drop_and_keep():
    from usage_cli.stages.evaluate import EvaluateConfig

    cfg = EvaluateConfig(dataset="voc", root=Path("r"), split="val", pred=Path("p"), out=Path("m.json"))
    assert list(run_config(cfg, ("out", "workers", "quiet", "no_such_field"))) == [
        "pred", "dataset", "root", "split", "split_file", "classes_file", "allow_unlabelled", "metrics", "bg_thresholds", "bg_threshold", "bg_power", "allow_missing", "force", "out_in_root",
    ]  # fmt: skip
    assert run_config(cfg, keep=("root", "metrics")) == {"root": "r", "metrics": ["miou", "fpr", "fnr"]}


# --- the PNG-folder resume marker -------------------------------------------------------------------


@pytest.mark.parametrize("stage", PNG_MARKERS)
def test_png_folder_marker_resumes_the_same_run_only(stage, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    key = {"config_hash": "abc"}
    assert resume_png_folder(out, key, stage=stage, force=False) == set()
    start_png_folder(out, key, stage=stage)
    assert not (out / "manifest.json").exists() and json.loads((out / PNG_MARKERS[stage]).read_text()) == key
    (out / "a.png").write_bytes(b"")
    assert resume_png_folder(out, key, stage=stage, force=False) == {"a"}  # interrupted: resumed
    with pytest.raises(ArtifactError, match="unfinished"):
        resume_png_folder(out, {"config_hash": "other"}, stage=stage, force=False)
    finish_png_folder(out, stage=stage)
    assert not (out / PNG_MARKERS[stage]).exists()


@pytest.mark.parametrize("stage", [*PNG_MARKERS, "train-aff"])
def test_an_interrupted_run_of_every_stage_is_its_own(stage, tmp_path):
    """A run killed before its manifest (the PNGs and the marker, or last.pt, written) is resumed, not
    refused as a user's files: every PNG stage and every training stage proves its unfinished run."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"")
    with pytest.raises(ArtifactError, match="which no usage run wrote"):
        check_owned(out, stage, ("*.png",), None)  # no run's state: a user's PNGs, refused
    (out / run_state(stage)[0]).write_text("{}")
    check_owned(out, stage, ("*.png",), None)  # an unfinished run of this stage: its own


# --- image-level labels: PSA's pickled cls_labels.npy, cls_labels.json -------------------------------


class _RunsCode:
    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def _npy_with_pickle(path: Path, obj=None, raw: bytes | None = None) -> Path:
    """A .npy file of a 0-d object array whose pickle is ``obj``'s (or the bytes ``raw``)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    buf.write(raw if raw is not None else pickle.dumps(obj, protocol=4))
    path.write_bytes(buf.getvalue())
    return path


def test_cls_labels_npy_that_would_run_code_is_refused_not_run(tmp_path):
    flag = tmp_path / "ran"
    for i, obj in enumerate([np.array({"a": _RunsCode(flag)}, dtype=object), {"a": _RunsCode(flag)}, _RunsCode(flag)]):
        path = _npy_with_pickle(tmp_path / f"cls_labels{i}.npy", obj)
        with pytest.raises(DatasetError) as e:
            load_cls_labels(path, 3)
        assert str(path) in str(e.value) and "system" in str(e.value) and "\n" not in str(e.value)
    assert not flag.exists()


def test_cls_labels_npy_written_by_numpy_is_read_like_np_load(tmp_path):
    table = {"b": np.array([0, 1, 1], np.float32), "a": np.array([1.0, 0, 0]), "c": [0, 0, 1], "d": np.float32([0, 0, 0])}
    np.save(tmp_path / "new.npy", np.array(table, dtype=object), allow_pickle=True)
    assert load_cls_labels(tmp_path / "new.npy", 3) == {"b": (2, 3), "a": (1,), "c": (3,), "d": ()}
    # a protocol-2 pickle (Python 2 era, numpy 1 names: PSA's own file) also holds `_codecs.encode`
    old = pickle.dumps(np.array(table, dtype=object), protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"_codecs" in old and b"numpy.core.multiarray" in old
    path = _npy_with_pickle(tmp_path / "old.npy", raw=old)
    got = read_npy_restricted(path).item()
    assert got.keys() == table.keys() and all(np.array_equal(got[k], table[k]) for k in table)
    assert load_cls_labels(path, 3) == load_cls_labels(tmp_path / "new.npy", 3)


def test_cls_labels_npy_unreadable_is_one_line(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(DatasetError, match=r"junk\.npy: unreadable cls_labels file"):
        load_cls_labels(tmp_path / "junk.npy", 3)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(DatasetError, match="expected a pickled dict"):
        load_cls_labels(tmp_path / "plain.npy", 3)


def test_cls_labels_json_round_trip_and_checks(tmp_path):
    path = tmp_path / "cls_labels.json"
    write_cls_labels_json(path, {"b": [3, 1], "a": np.array([2]), "e": []}, ["cat", "dog", "cow"])
    doc = json.loads(path.read_text())
    assert doc["format"] == "usage-cls-labels" and doc["version"] == "1.0.0" and list(doc["labels"]) == ["a", "b", "e"]
    assert load_cls_labels_json(path, ["cat", "dog", "cow"]) == {"a": (2,), "b": (1, 3), "e": ()}
    with pytest.raises(DatasetError, match="dataset has"):
        load_cls_labels_json(path, ["cat", "dog", "horse"])
    doc["labels"]["a"] = [4]
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"labels of 'a' are \[4\]; expected a list of label values 1\.\.3"):
        load_cls_labels_json(path, ["cat", "dog", "cow"])
    path.write_text(json.dumps({**doc, "version": "2.0.0"}))
    with pytest.raises(DatasetError, match="version 2.0.0"):
        load_cls_labels_json(path, ["cat", "dog", "cow"])


def test_synth_writes_labels_that_need_no_pickle_and_agree_with_the_npy(synth_root):
    from usage_cli.data import load_dataset

    names = (synth_root / "classes.txt").read_text().split()[1:]
    from_json = load_cls_labels_json(synth_root / "cls_labels.json", names)
    assert from_json == load_cls_labels(synth_root / "cls_labels.npy", len(names)) and len(from_json) == 18
    ds = load_dataset("voc", synth_root, "train")
    assert all(r.labels == from_json[r.id] for r in ds.records)


def test_voc_loader_reads_cls_labels_json_when_there_is_no_npy(synth_root, tmp_path):
    import shutil

    from usage_cli.data import load_dataset

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    (root / "cls_labels.npy").unlink()
    for xml in (root / "VOCdevkit/VOC2012/Annotations").glob("*.xml"):
        xml.unlink()  # so the labels can only come from the JSON (or the masks, which agree)
    doc = json.loads((root / "cls_labels.json").read_text())
    first = sorted(doc["labels"])[0]
    doc["labels"][first] = [1, 2, 3]
    (root / "cls_labels.json").write_text(json.dumps(doc))
    ds = load_dataset("voc", root, "train")
    assert ds.by_id()[first].labels == (1, 2, 3)


# --- evaluate's metrics.json carries its manifest ----------------------------------------------------


def test_metrics_json_keeps_its_keys_and_gains_a_manifest(synth_root, tmp_path):
    from usage_cli.artifacts.labels import read_label_png, write_label_png
    from usage_cli.data import load_dataset
    from usage_cli.stages.evaluate import EvaluateConfig, run

    ds = load_dataset("voc", synth_root, "val")
    pred = tmp_path / "pred"  # PNGs made by hand: no manifest, so the input is recorded but not pinned
    for r in ds.records:
        write_label_png(pred / f"{r.id}.png", read_label_png(r.mask_path))
    result = run(EvaluateConfig(dataset="voc", root=synth_root, split="val", pred=pred, out=tmp_path / "m.json", workers=1, quiet=True))
    m = json.loads((tmp_path / "m.json").read_text())
    manifest = m.pop("manifest")
    assert m == json.loads(json.dumps(result)) and list(m) == list(result)  # the scores as run() returns them
    assert manifest["stage"] == "evaluate" and manifest["config"]["pred"] == str(pred) and "out" not in manifest["config"]
    assert manifest["config_hash"] == config_hash(manifest["config"])
    assert manifest["inputs"]["pred"]["sha256"] is None and manifest["paths"]["out"] == str((tmp_path / "m.json").resolve())
