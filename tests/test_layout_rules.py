"""One home per kind of change, checked on the source and the configs: formats live in artifacts/ (no
file-name, suffix or version literal in stages/, chains/ or engine/), the run-time options are one
block with one default each that every stage config nests, and a stage file stays orchestration."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "usage_cli"
# a file name or suffix of an on-disk format, or a version string
FORMAT_LITERAL = re.compile(r"\.(json|jsonl|pt|pth|h5|hdf5|partial)\b|\b\d+\.\d+\.\d+\b")


def _format_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string constants of ``path`` that spell a format (docstrings are prose: skipped)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings and FORMAT_LITERAL.search(node.value)
    )


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (PKG / pkg).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _sources("stages", "chains", "engine"), ids=lambda p: str(p.relative_to(PKG)))
def test_no_format_literal_outside_artifacts(path):
    """A file name (``checkpoint.pt``, ``manifest.json``), a suffix (``.h5``, ``.partial``) or a version
    (``1.0.0``) is a format's knowledge: it belongs to its module in artifacts/."""
    found = [f"{path.relative_to(PKG)}:{line}: {text!r}" for line, text in _format_literals(path)]
    assert not found, "spell it through artifacts/: " + "; ".join(found)


def test_the_format_rule_catches_what_it_should(tmp_path):
    """The check itself: literals in code are found (f-string parts too), docstrings and other text are not."""
    src = tmp_path / "m.py"
    src.write_text(
        '"""Writes ``seeds.h5`` and ``manifest.json`` (docs may name files)."""\n'
        'A = "checkpoint.pt"\n'
        'def f(out, r):\n'
        '    """last.pt of 1.0.0"""\n'
        '    return out / f"seeds.rank{r}.h5", {"version": "1.0.0"}, "x.partial", "0.00:0.95:0.01", "log.jsonl"\n'
    )
    assert [text for _, text in _format_literals(src)] == ["checkpoint.pt", ".h5", "1.0.0", "log.jsonl", "x.partial"]


# ---------------------------------------------------------------- the run-time block


def _stage_configs() -> dict[str, type]:
    """Every stage's config class, found from the registry alone: the class its module decorates with
    ``@takes_runtime(<name>)``."""
    import importlib

    from usage_cli.registry import STAGES

    configs = {}
    for s in STAGES:
        if s.runtime is None:
            continue
        module = importlib.import_module(f"usage_cli.{s.package}.{s.module}")
        found = [c for c in vars(module).values() if isinstance(c, type) and getattr(c, "STAGE", None) == s.name and c.__module__ == module.__name__]
        assert len(found) == 1, f"{module.__name__}: one config decorated @takes_runtime({s.name!r}), found {found}"
        configs[s.name] = found[0]
    return configs


def test_every_stage_config_nests_the_runtime_block_and_declares_no_runtime_option_itself():
    from usage_cli.commands import COMMANDS
    from usage_cli.runtime import FIELDS, OPTIONS, Runtime

    configs = _stage_configs()
    assert set(configs) == set(OPTIONS) and set(COMMANDS) - set(OPTIONS) == {"report"}  # report takes none of them
    for stage, cls in configs.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert "runtime" in names and cls.__dataclass_fields__["runtime"].default == Runtime(), stage
        assert not names & set(FIELDS), f"{stage} declares {sorted(names & set(FIELDS))} itself"
        assert cls.RUNTIME_OPTIONS == OPTIONS[stage]
        # its command shows exactly those flags, with the block's defaults
        params = inspect.signature(COMMANDS[stage]).parameters
        assert [n for n in params if n in FIELDS] == list(OPTIONS[stage]), stage
        assert all(params[n].default == getattr(Runtime(), n) for n in OPTIONS[stage]), stage


def test_every_stage_checks_what_it_writes_before_any_work():
    """Issue 29: every command's ``run`` goes through ``artifacts.claims.owns_outputs`` (its outputs checked
    first, a refused start leaves no folder) and its config declares what it writes (``OUTPUTS``); the
    rule itself is walked over every option in tests/test_bad_inputs.py."""
    import importlib

    from usage_cli.registry import STAGES

    for s in STAGES:
        module = importlib.import_module(f"usage_cli.{s.package}.{s.module}")
        assert getattr(module.run, "owns_outputs", False), f"{module.__name__}.run: decorate it @owns_outputs"
    for stage, cls in {**_stage_configs(), "report": importlib.import_module("usage_cli.stages.report").ReportConfig}.items():
        assert "out" in getattr(cls, "OUTPUTS", {}), f"{stage}: its config declares no OUTPUTS"


def test_one_default_per_runtime_option():
    """The block's defaults are the only ones: no stage config, command or the loop's settings spell
    their own (the loop's device and workers excepted: it runs on the CPU in-process when called directly)."""
    from usage_cli.engine.loop import LoopConfig
    from usage_cli.runtime import DEFAULTS, FIELDS

    assert dataclasses.asdict(DEFAULTS) == {
        "device": "auto", "amp": None, "sync_bn": False, "timeout": 60.0, "workers": None, "seed": 0,
        "resume": False, "force": False, "quiet": False, "out_in_root": False, "tensorboard": False,
    }  # fmt: skip
    loop = {f.name: f.default for f in dataclasses.fields(LoopConfig)}
    assert all(loop[n] == getattr(DEFAULTS, n) for n in FIELDS if n in loop and n not in ("device", "workers"))
    for stage, cls in _stage_configs().items():
        assert not {f.name for f in dataclasses.fields(cls)} & set(FIELDS), stage


def test_runtime_options_pass_flat_and_stay_out_of_the_config_but_those_that_define_a_run():
    from usage_cli.artifacts.manifest import run_config
    from usage_cli.runtime import config_drop
    from usage_cli.stages.predict_seg import PredictSegConfig
    from usage_cli.stages.train_seg import TrainSegConfig

    cfg = TrainSegConfig(masks=Path("m"), root=Path("r"), out=Path("o"), device="cpu", seed=3, quiet=True)
    assert (cfg.runtime.device, cfg.runtime.seed, cfg.runtime.quiet) == ("cpu", 3, True)
    config = run_config(cfg, config_drop(cfg))
    assert (config["amp"], config["sync_bn"], config["seed"]) == (None, False, 3) and "device" not in config and "quiet" not in config
    with pytest.raises(TypeError, match="seed"):
        PredictSegConfig(ckpt=Path("c"), root=Path("r"), out=Path("o"), seed=1)  # predict-seg takes no --seed
    assert "seed" not in run_config(PredictSegConfig(ckpt=Path("c"), root=Path("r"), out=Path("o")))


def test_runtime_keys_are_flat_in_a_config_file(tmp_path):
    """--config / --print-config keep the run-time keys flat, as before the block was nested."""
    import yaml
    from typer.testing import CliRunner

    from usage_cli.cli import app

    (tmp_path / "c.yaml").write_text("masks: m\nroot: r\nout: o\ndevice: cpu\nworkers: 3\nseed: 7\n")
    r = CliRunner().invoke(app, ["train-seg", "--config", str(tmp_path / "c.yaml"), "--seed", "5", "--print-config"])
    assert r.exit_code == 0, r.output
    printed = yaml.safe_load(r.stdout)
    assert (printed["device"], printed["workers"], printed["seed"]) == ("cpu", 3, 5) and "runtime" not in printed
    (tmp_path / "bad.yaml").write_text("ckpt: c\nroot: r\nout: o\nseed: 1\n")
    r = CliRunner().invoke(app, ["predict-seg", "--config", str(tmp_path / "bad.yaml"), "--print-config"])
    assert r.exit_code == 2 and "unknown option(s) seed" in r.output


def test_a_runtime_block_turns_into_the_loops_settings_in_one_place():
    from usage_cli.engine.loop import loop_config
    from usage_cli.runtime import Runtime

    loop = loop_config(Runtime(device="cpu", amp=True, sync_bn=True, timeout=5.0, seed=4, quiet=True), epochs=2, batch_size=3, lr=0.1)
    assert (loop.device, loop.amp, loop.sync_bn, loop.timeout, loop.seed, loop.quiet) == ("cpu", True, True, 5.0, 4, True)
    assert loop.workers == 0  # unset: by device, none on the CPU
    assert loop_config(Runtime(device="cpu", workers=2), epochs=1, batch_size=1, lr=0.1).workers == 2


# ---------------------------------------------------------------- stage files stay orchestration


@pytest.mark.parametrize("path", _sources("stages", "chains"), ids=lambda p: str(p.relative_to(PKG)))
def test_stage_files_stay_short(path):
    assert len(path.read_text().splitlines()) <= 225, f"{path.name}: move the work down to the layer that owns it"


# ---------------------------------------------------------------- one dense backbone

TIMM_INTERNALS = re.compile(r"\b(patch_embed|embed_dim|feature_info|num_features|forward_intermediates|forward_features|create_model)\b")
TIMM_OWNERS = {"models/backbones.py", "models/backbone_caps.py", "models/vit.py", "models/weights.py"}  # the wrapper, its capabilities, the attention forward, weight files


@pytest.mark.parametrize("path", _sources("models", "stages", "chains", "tasks", "algorithms", "engine"), ids=lambda p: str(p.relative_to(PKG)))
def test_only_the_dense_backbone_reads_timm_internals(path):
    rel = str(path.relative_to(PKG))
    if rel in TIMM_OWNERS:
        return
    code = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    assert not TIMM_INTERNALS.findall(code), f"{rel} reads timm internals; ask models/backbones.py:DenseBackbone"


@pytest.mark.parametrize(
    "name,levels,output_stride,strides,channels",
    [("resnet18", (1, -1), 8, [4, 8], [64, 512]), ("resnet18", (-3, -2, -1), None, [8, 16, 32], [128, 256, 512]),
     ("resnet18", None, 16, [16], [512]), ("deit_t", (-3, -2, -1), None, [16, 16, 16], [192, 192, 192]), ("deit_t", None, None, [16], [192])],
)  # fmt: skip
def test_the_dense_backbone_gives_nchw_maps_their_strides_and_its_statistics(name, levels, output_stride, strides, channels):
    import torch

    from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD
    from usage_cli.models.backbones import DenseBackbone

    bb = DenseBackbone(name, levels=levels, output_stride=output_stride, img_size=64).eval()
    with torch.no_grad():
        feats = bb(torch.randn(2, 3, 64, 96))
    assert (bb.strides, bb.channels, bb.stride, bb.out_dim) == (strides, channels, strides[-1], channels[-1])
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 96 // s) for s, c in zip(strides, channels, strict=True)]
    assert bb.norm_stats() == (IMAGENET_MEAN, IMAGENET_STD)
    assert DenseBackbone("efficientnet_lite0", levels=(-1,)).norm_stats() == ((0.5,) * 3, (0.5,) * 3)  # the Lite weights' own


@pytest.mark.parametrize("net", ["affinitynet", "segnet"])
def test_dense_networks_train_with_the_statistics_their_weights_expect_and_old_checkpoints_read_as_imagenet(net):
    from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD
    from usage_cli.models.affinitynet import build_affinitynet
    from usage_cli.models.segnet import build_segnet

    def build(backbone):
        return build_affinitynet({"backbone": backbone}) if net == "affinitynet" else build_segnet({"backbone": backbone, "num_classes": 3, "aspp_channels": 8})

    lite, resnet = build("efficientnet_lite0"), build("resnet18")
    assert lite.expected_norm() == {"mean": [0.5] * 3, "std": [0.5] * 3}  # timm's config of the Lite weights
    assert resnet.expected_norm() == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert lite.input_norm() == (IMAGENET_MEAN, IMAGENET_STD)  # a config without them: a checkpoint of before, ImageNet's
    lite.model_config.update(lite.expected_norm())  # what train-aff / train-seg record
    assert lite.input_norm() == ((0.5,) * 3, (0.5,) * 3)


# ---------------------------------------------------------------- one stage registry


def test_every_command_and_stage_module_is_declared_once_in_the_registry():
    """usage_cli/registry.py lists every command; its modules exist, and no command or stage module is
    left out of it."""
    from usage_cli.registry import KINDS, STAGES

    names = {s.module for s in STAGES}
    assert len(names) == len(STAGES)
    for s in STAGES:
        assert s.writes in KINDS, s.name
        assert (PKG / "commands" / f"{s.module}.py").is_file() and (PKG / s.package / f"{s.module}.py").is_file(), s.name
    assert {p.stem for p in (PKG / "commands").glob("*.py") if not p.stem.startswith("_")} == names
    assert {p.stem for p in (PKG / "stages").glob("*.py") if p.stem != "__init__"} == {s.module for s in STAGES if not s.chain}


def _stage_name_tables(path: Path) -> list[tuple[int, list[str]]]:
    """(line, names) of the literal dicts, tuples, lists and sets of ``path`` that name two or more stages."""
    from usage_cli.registry import BY_NAME

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else []
        names = sorted({i.value for i in items if isinstance(i, ast.Constant) and i.value in BY_NAME})
        if len(names) >= 2:
            found.append((node.lineno, names))
    return found


@pytest.mark.parametrize("path", [p for p in _sources(".") if p.name != "registry.py"], ids=lambda p: str(p.relative_to(PKG)))
def test_no_second_table_of_stages(path):
    """A list of stages outside the registry drifts (the report once missed psa-walk's masks): derive it
    from ``usage_cli/registry.py`` (``writing(kind)``, ``kind_of(stage)``, ``STAGES``)."""
    found = [f"{path.relative_to(PKG)}:{line}: {names}" for line, names in _stage_name_tables(path)]
    assert not found, "derive it from usage_cli/registry.py: " + "; ".join(found)


def test_the_stage_table_rule_catches_what_it_should(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('MASKS = ("refine-psa", "psa-walk")\nKIND = {"gen-seeds": "seeds", "x": 1}\nONE = ("psa-walk", "masks")\n')
    assert _stage_name_tables(src) == [(1, ["psa-walk", "refine-psa"])]


# ---------------------------------------------------------------- the dataset block, the chain's config


def test_every_data_stage_nests_the_dataset_block_and_its_command_shows_every_dataset_flag():
    """A new dataset option is one field of DataSpec: every stage config that reads a data set nests the
    block (none declares a dataset field itself) and every such command shows all of its flags."""
    from usage_cli.commands import COMMANDS
    from usage_cli.dataspec import FIELDS, DataSpec

    for stage, cls in _stage_configs().items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & set(FIELDS), f"{stage} declares {sorted(names & set(FIELDS))} itself"
        if stage == "synth":  # writes a data set, reads none
            assert "data" not in names
            continue
        block = cls.__dataclass_fields__["data"].default
        assert isinstance(block, DataSpec) and cls.FLAT_BLOCKS["data"] == FIELDS, stage
        params = inspect.signature(COMMANDS[stage]).parameters
        assert [n for n in params if n in FIELDS] == list(FIELDS), stage
        assert all(params[n].default == getattr(block, n) for n in FIELDS), stage  # the command's defaults are the config's


def test_refine_psa_is_composed_of_its_steps_and_calls_them_only_through_their_entry_points():
    """refine-psa declares only its own options; every other is a step's, with the step's type and
    default. It reaches the stages through their entry points (resolve, check, is_done, run), never a
    private helper."""
    from usage_cli.chains.refine_psa import STEPS, RefinePsaConfig

    own = {"seeds", "out", "data", "infer_split", "infer_split_file", "pretrained", "affinity", "runtime"}
    chain = RefinePsaConfig.__dataclass_fields__
    for step in STEPS:
        for f in dataclasses.fields(step):
            if f.name not in own | {"labels"}:
                assert f.name in chain and chain[f.name].default == f.default, (step.__name__, f.name)
    assert set(chain) - own == {f.name for s in STEPS for f in dataclasses.fields(s)} - own - {"labels"}
    public = {"resolve", "check", "is_done", "run", "affinity_path", "STAGE", "PsaLabelsConfig", "TrainAffConfig", "PsaWalkConfig"}
    for path in _sources("chains"):
        used = {(n.value.id, n.attr) for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in ("psa_labels", "train_aff", "psa_walk")}  # fmt: skip
        assert {a for _, a in used} <= public, f"{path.name} uses {sorted(a for _, a in used if a not in public)} of a stage"
