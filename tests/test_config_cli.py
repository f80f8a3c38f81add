"""--config / --print-config on every stage, the paper preset's ImageNet start, the offline-weights
error, absolute paths in manifests, and progress lines when stderr is not a terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from usage_cli.artifacts.manifest import build_manifest
from usage_cli.cli import app
from usage_cli.errors import ConfigError

runner = CliRunner()

# each stage with its required options (none of the paths has to exist for --print-config)
STAGES = {
    "synth": ["--out", "d"],
    "train-cls": ["--root", "d", "--out", "cls"],
    "gen-seeds": ["--ckpt", "cls/checkpoint.pt", "--root", "d", "--out", "seeds"],
    "refine-psa": ["--seeds", "seeds/seeds.h5", "--root", "d", "--out", "masks"],
    "train-seg": ["--masks", "masks", "--root", "d", "--out", "seg"],
    "predict-seg": ["--ckpt", "seg/checkpoint.pt", "--root", "d", "--out", "preds"],
    "evaluate": ["--pred", "preds", "--root", "d"],
}


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("stage", list(STAGES))
def test_print_config_round_trips_through_config_and_writes_nothing(stage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = _invoke(stage, *STAGES[stage], "--print-config")
    assert first.exit_code == 0, first.output
    printed = yaml.safe_load(first.stdout)
    assert printed["root" if stage != "synth" else "out"] == "d" and first.stderr == ""
    (tmp_path / "c.yaml").write_text(first.stdout)
    again = _invoke(stage, "--config", "c.yaml", "--print-config")  # the required options come from the file
    assert again.exit_code == 0, again.output
    assert again.stdout == first.stdout  # the resolved config is a fixed point
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no output folder, no file


@pytest.mark.parametrize(
    ("stage", "config", "required"),
    [
        ("synth", "synth.SynthConfig", {"out": "d"}),
        ("gen-seeds", "gen_seeds.GenSeedsConfig", {"ckpt": "cls/checkpoint.pt", "root": "d", "out": "seeds"}),
        ("train-seg", "train_seg.TrainSegConfig", {"masks": "masks", "root": "d", "out": "seg"}),
        ("predict-seg", "predict_seg.PredictSegConfig", {"ckpt": "seg/checkpoint.pt", "root": "d", "out": "preds"}),
        ("evaluate", "evaluate.EvaluateConfig", {"root": "d", "pred": "preds"}),
    ],
)  # fmt: skip
def test_config_defaults_equal_the_command_line_defaults(stage, config, required):
    """A Python user's config and the command line's agree on every default (stages without presets)."""
    import importlib

    from usage_cli.config import dump_config

    module, name = config.split(".")
    cls = getattr(importlib.import_module(f"usage_cli.stages.{module}"), name)
    paths = {k: Path(v) for k, v in required.items() if k not in ("dataset", "split")}
    assert _invoke(stage, *STAGES[stage], "--print-config").stdout == dump_config(cls(**{**required, **paths}))


def test_print_config_is_resolved_by_the_presets():
    cls = yaml.safe_load(_invoke("train-cls", "--root", "d", "--out", "o", "--print-config").stdout)
    assert (cls["epochs"], cls["batch_size"], cls["img_size"], cls["mapping"], cls["reg"]) == (60, 64, 224, "cm", "aa")
    assert cls["pretrained"] is True and cls["tokens"] == "final-norm" and cls["lr"] == pytest.approx(5e-4 * 64 / 512)
    cnn = yaml.safe_load(_invoke("train-cls", "--root", "d", "--out", "o", "--backbone", "resnet50", "--print-config").stdout)
    assert (cnn["epochs"], cnn["tau1"], cnn["optimizer"], cnn["pretrained"]) == (15, 50.0, "sgd", True)
    scratch = yaml.safe_load(_invoke("train-cls", "--root", "d", "--out", "o", "--no-pretrained", "--print-config").stdout)
    assert scratch["pretrained"] is False and scratch["tokens"] == "last-block"
    psa = yaml.safe_load(_invoke("refine-psa", *STAGES["refine-psa"], "--preset", "psa", "--print-config").stdout)
    assert (psa["crf_la"], psa["logt"], psa["pretrained"]) == (4.0, 8, True)
    seg = yaml.safe_load(_invoke("train-seg", *STAGES["train-seg"], "--print-config").stdout)
    assert seg["pretrained"] is True


def test_help_shows_the_preset_values_per_family():
    from usage_cli.presets import TRAIN_CLS

    text = " ".join(_invoke("train-cls", "--help").output.replace("│", " ").split())  # unwrapped
    t, c = TRAIN_CLS["paper"]["transformer"], TRAIN_CLS["paper"]["cnn"]
    assert f"paper preset: {t['epochs']} transformers, {c['epochs']} CNNs" in text
    assert "paper preset: on" in text  # --pretrained


def test_flags_beat_the_file_even_at_their_default_value(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"root": "r", "out": "o", "epochs": 7, "lr": 0.5, "batch_size": 4}))
    r = _invoke("train-cls", "--config", tmp_path / "c.json", "--epochs", 3, "--print-config")
    cfg = yaml.safe_load(r.stdout)
    assert (cfg["root"], cfg["epochs"], cfg["lr"], cfg["batch_size"]) == ("r", 3, 0.5, 4)
    (tmp_path / "s.yaml").write_text("batch_size: 2\nscales: [1, 0.5]\nworkers: 0\n")
    r = _invoke("gen-seeds", *STAGES["gen-seeds"], "--config", tmp_path / "s.yaml", "--batch-size", 8, "--print-config")
    cfg = yaml.safe_load(r.stdout)
    assert cfg["batch_size"] == 8 and cfg["workers"] == 0  # 8 is the default, but it was given
    assert cfg["scales"] == [1.0, 0.5] and isinstance(cfg["scales"][0], float)  # typed as the config field


def test_an_option_of_an_earlier_version_is_said_and_ignored(tmp_path):
    # gen-seeds' attn_budget_gb (gone with the attention maps patch affinity kept): an earlier config still runs
    (tmp_path / "old.yaml").write_text("attn_budget_gb: 2.0\nbatch_size: 3\n")
    r = _invoke("gen-seeds", *STAGES["gen-seeds"], "--config", tmp_path / "old.yaml", "--print-config")
    assert r.exit_code == 0 and "'attn_budget_gb' is no longer an option" in r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["batch_size"] == 3 and "attn_budget_gb" not in cfg
    assert _invoke("gen-seeds", *STAGES["gen-seeds"], "--attn-budget-gb", 2, "--print-config").exit_code == 2  # no such flag


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"tau3": 1}', "unknown option(s) tau3 (did you mean tau2?)"),
        ('{"epochs": "ten"}', "epochs must be"),
        ("[1, 2]", "must hold a mapping"),
        ("epochs: [1", "not valid YAML"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(content, expected, tmp_path):
    path = tmp_path / ("c.json" if content.startswith("{") else "c.yaml")
    path.write_text(content)
    r = _invoke("train-cls", *STAGES["train-cls"], "--config", path, "--print-config")
    assert r.exit_code == 2 and expected in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_a_missing_required_option_names_it(tmp_path):
    r = _invoke("gen-seeds", "--root", "d", "--out", "o", "--print-config")
    assert r.exit_code == 2 and "missing option --ckpt" in r.output and len(r.output.strip().splitlines()) == 1


def test_offline_imagenet_weights_are_one_line_naming_weights(synth_root, tmp_path):
    r = _invoke("train-cls", "--root", synth_root, "--split", "train", "--out", tmp_path / "cls", "--backbone", "deit_t",
                "--epochs", 1, "--batch-size", 2, "--img-size", 32, "--val-split", "")  # fmt: skip
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert len(line.splitlines()) == 1 and "deit_t" in line and "offline" in line
    assert "--weights FILE" in line and "--no-pretrained" in line and "Traceback" not in line
    assert not (tmp_path / "cls" / "checkpoint.pt").exists()


def test_dense_backbones_fail_the_same_way_and_a_weights_file_needs_no_hub(tmp_path):
    from usage_cli.models.backbones import build_backbone
    from usage_cli.models.segnet import build_segnet, load_backbone_weights

    net = build_segnet({"backbone": "resnet18", "num_classes": 3, "aspp_channels": 8})
    with pytest.raises(ConfigError, match=r"resnet18 backbone: its ImageNet weights are not available offline.*--weights FILE"):
        load_backbone_weights(net, pretrained=True)
    torch.save(build_backbone("deit_t").model.state_dict(), tmp_path / "deit_t.pth")
    assert build_backbone("deit_t", pretrained=True, weights=str(tmp_path / "deit_t.pth")).caps.tokens


def test_manifests_record_absolute_paths_beside_the_given_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _invoke("synth", "--out", "d", "--train", 2, "--val", 1, "--size", 32)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["paths"]["out"] == str((tmp_path / "d").resolve())  # the config does not hold --out
    (tmp_path / "x.bin").write_bytes(b"abc")
    m = build_manifest("gen-seeds", {"a": 1}, inputs={"checkpoint": "x.bin"})
    assert m["inputs"]["checkpoint"]["path"] == "x.bin"
    assert m["inputs"]["checkpoint"]["resolved"] == str((tmp_path / "x.bin").resolve())


def test_status_on_stderr_and_progress_lines_off_a_terminal(synth_root, tmp_path):
    r = _invoke("train-cls", "--root", synth_root, "--split", "train", "--out", tmp_path / "cls", "--backbone", "deit_t",
                "--no-pretrained", "--epochs", 2, "--batch-size", 4, "--img-size", 32, "--aug", "light", "--val-split", "",
                "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    epochs = [ln for ln in r.stderr.splitlines() if re.match(r"epoch \d/2: 3/3, [\d.]+/s, \d:\d\d:\d\d elapsed", ln)]
    assert len(epochs) == 2 and "ETA" in epochs[0] and "loss" in epochs[1]  # one line an epoch
    assert "train-cls: wrote" in r.stderr and r.stdout == ""
    masks = next(synth_root.rglob("SegmentationClass"))
    r = _invoke("evaluate", "--pred", masks, "--root", synth_root, "--split", "train", "--workers", 1)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("evaluate train: ")]
    assert len(lines) >= 2 and lines[-1].startswith("evaluate train: 12/12,")  # every few images, then the end
    assert "mIoU 100.0" in r.stdout  # the result stays on stdout


def test_every_stage_config_default_equals_its_command_line_default():
    """All stages, presets included: where a flag and a config field both have a default, they agree
    (a flag left to the preset is None in both; text flags parsed into tuples are compared parsed)."""
    import dataclasses
    import inspect

    from usage_cli.chains import refine_psa
    from usage_cli.commands import COMMANDS
    from usage_cli.commands._options import number_pair
    from usage_cli.stages import (
        evaluate,
        gen_seeds,
        predict_seg,
        synth,
        train_cls,
        train_seg,
    )

    configs = {"synth": synth.SynthConfig, "train-cls": train_cls.TrainClsConfig, "gen-seeds": gen_seeds.GenSeedsConfig,
               "refine-psa": refine_psa.RefinePsaConfig, "train-seg": train_seg.TrainSegConfig,
               "predict-seg": predict_seg.PredictSegConfig, "evaluate": evaluate.EvaluateConfig}  # fmt: skip
    parsed = {
        "scales": lambda t: tuple(float(x) for x in t.split(",")),
        "metric": lambda t: tuple(t.split(",")),
        "scale": lambda t: number_pair(t, "--scale"),
    }
    compared = 0
    for stage, cls in configs.items():
        fields = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        fields.update({n: getattr(cls.__dataclass_fields__["runtime"].default, n) for n in cls.RUNTIME_OPTIONS})  # nested run-time block
        for name, p in inspect.signature(COMMANDS[stage]).parameters.items():
            field = {"classes": "classes_file", "metric": "metrics"}.get(name, name) if stage != "synth" else name
            if field not in fields or p.default is None:
                continue
            cli = parsed[name](p.default) if name in parsed else p.default
            assert cli == fields[field], f"{stage} --{name.replace('_', '-')}: command line {p.default!r}, config {fields[field]!r}"
            compared += 1
    assert compared > 80
