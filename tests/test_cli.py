"""The command line as a whole: every stage is registered, help works, user errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import usage_cli.commands as commands_pkg
from usage_cli.cli import app
from usage_cli.commands import COMMAND_MODULES, COMMANDS

runner = CliRunner()


def test_every_command_module_on_disk_is_registered():
    here = Path(commands_pkg.__file__).parent
    on_disk = {name for name, mod in COMMAND_MODULES.items() if (here / f"{mod}.py").exists()}
    assert set(COMMANDS) == on_disk == set(COMMAND_MODULES)  # every stage exists and is registered


def test_no_args_prints_help_and_lists_the_stages():
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    for name in COMMANDS:
        assert name in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("usage ")


def test_report_table_and_missing_file(tmp_path):
    m = {"miou": 61.5, "fpr": 20.0, "fnr": 18.5, "threshold": 0.35, "split": "train", "num_images": 3}
    (tmp_path / "seeds-train.json").write_text(json.dumps(m))
    result = runner.invoke(app, ["report", str(tmp_path / "seeds-train.json"), "--out", str(tmp_path / "rows.json")])
    assert result.exit_code == 0, result.output
    assert "seeds-train" in result.output and "61.5" in result.output and "0.35" in result.output
    assert json.loads((tmp_path / "rows.json").read_text())[0]["miou"] == 61.5
    result = runner.invoke(app, ["report", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "metrics file not found" in result.output
