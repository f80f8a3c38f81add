"""The Makefile's demo defaults (dry runs, `make -n`): the built-in data trains the small ViT from
scratch, two classifiers side by side; a dataset of the user's (ROOT) keeps the CPU-sized
EfficientNet-Lite0 setting."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def _dry(tmp_path: Path, *args: str) -> str:
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: nothing to install
    cmd = ["make", "-n", "--no-print-directory", f"VENV={tmp_path / 'venv'}", f"STAMP={stamp}", f"OUT={tmp_path / 'out'}", *args]
    # run from `make test`, the outer make's variables would reach this one (MAKELEVEL, MAKEFLAGS)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, env=env).stdout


def _threads_line(text: str) -> str:
    return next(line for line in text.splitlines() if "OMP_NUM_THREADS=" in line)


def _train_cls_lines(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")
    return [line for line in joined.splitlines() if " train-cls " in line]


def test_demo_trains_both_classifiers_side_by_side_on_half_the_cores(tmp_path):
    out = _dry(tmp_path, "demo", "NPROC=8")
    assert _threads_line(out).startswith("OMP_NUM_THREADS=4 MKL_NUM_THREADS=4")
    assert "-j2 -Oline cls cam-cls" in out
    one = _dry(tmp_path, "demo", "NPROC=8", "DEMO_JOBS=1")
    assert _threads_line(one).startswith("OMP_NUM_THREADS=8 MKL_NUM_THREADS=8") and "-j1 -Oline cls cam-cls" in one


def test_builtin_data_trains_the_small_vit_from_scratch_on_train_aug(tmp_path):
    lines = _train_cls_lines(_dry(tmp_path, "cls", "cam-cls"))
    assert len(lines) == 2
    for line in lines:
        assert "--backbone test_vit3" in line and "--no-pretrained" in line and "--split train_aug" in line
        assert "--epochs 40" in line
    assert sum("--mapping cam --reg none" in line for line in lines) == 1


def test_a_users_root_keeps_the_pretrained_cnn_setting(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    lines = _train_cls_lines(_dry(tmp_path, "cls", f"ROOT={root}", "DATASET=folder"))
    assert len(lines) == 1
    assert "--backbone efficientnet_lite0" in lines[0] and "--pretrained" in lines[0] and "--split train " in lines[0]
    assert "test_vit3" not in lines[0] and "synth" not in " ".join(lines)
