"""`usage synth`: write the built-in synthetic dataset with its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from usage_cli.artifacts.claims import check_writable_folder
from usage_cli.artifacts.lock import holds_out_lock, lock_out
from usage_cli.artifacts.manifest import (
    MANIFEST_NAME,
    build_manifest,
    config_paths,
    read_manifest,
    run_config,
    write_manifest,
)
from usage_cli.data.synth import CLASSES, MAX_CLASSES, generate
from usage_cli.errors import ConfigError
from usage_cli.runtime import Runtime, config_drop, takes_runtime


@takes_runtime("synth")
@dataclass(frozen=True)
class SynthConfig:
    out: Path
    train: int = 96
    val: int = 32
    size: int = 128
    runtime: Runtime = Runtime()  # seed (the dataset's), force
    classes: int = len(CLASSES)


@holds_out_lock
def run(cfg: SynthConfig) -> dict:
    # 1. validate
    if cfg.train < 1 or cfg.val < 0:
        raise ConfigError(f"--train must be >= 1 and --val >= 0 (got {cfg.train}, {cfg.val})")
    if not 2 <= cfg.classes <= MAX_CLASSES:
        raise ConfigError(f"--classes must be in 2..{MAX_CLASSES} (got {cfg.classes})")
    if not 32 <= cfg.size <= 2048:
        raise ConfigError(f"--size must be in 32..2048 (got {cfg.size})")
    config = run_config(cfg, config_drop(cfg, ("out",)))
    check_writable_folder(cfg.out)
    lock_out(cfg.out, "synth")  # one writer per folder
    # 2. an existing dataset with the same config is reused; another config needs --force
    if (cfg.out / MANIFEST_NAME).exists() and not cfg.runtime.force:
        old = read_manifest(cfg.out, expect_stage="synth")
        if {"classes": len(CLASSES), **old["config"]} == config:  # datasets made before --classes had the default set
            return old["stats"]
        raise ConfigError(f"{cfg.out}: holds a synth dataset made with {old['config']}; pass --force to overwrite")
    (cfg.out / MANIFEST_NAME).unlink(missing_ok=True)
    # 3. generate, then publish the manifest last (a folder without it is unfinished)
    stats = generate(cfg.out, cfg.train, cfg.val, cfg.size, cfg.runtime.seed, cfg.classes)
    write_manifest(cfg.out, build_manifest("synth", config, extra={"stats": stats}, paths=config_paths(cfg)))
    return stats
