"""`usage synth`: write the built-in synthetic dataset with its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.claims import SYNTH_MARKER, Output, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.manifest import (
    MANIFEST_NAME,
    build_manifest,
    config_paths,
    read_manifest,
    run_config,
    write_manifest,
)
from usage_cli.data.synth import CLASSES, FILES, MAX_CLASSES, generate
from usage_cli.errors import check_options
from usage_cli.runtime import Runtime, config_drop, runtime_checks, takes_runtime

MAX_IMAGES = 100_000  # --train / --val: more is no miniature
OWNED = FILES  # what a run writes into --out (its manifest lists them)


@takes_runtime("synth")
@dataclass(frozen=True)
class SynthConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out")}  # what it writes (artifacts/claims.py checks them first)
    out: Path
    train: int = 96
    val: int = 32
    size: int = 128
    runtime: Runtime = Runtime()  # seed (the dataset's), force
    classes: int = len(CLASSES)
    train_aug: int = 0  # more images in the train_aug split only (the classifier's, as VOC's SBD images)


@owns_outputs
def run(cfg: SynthConfig) -> dict:
    # 1. validate
    check_options([
        *runtime_checks(cfg.runtime),
        (1 <= cfg.train <= MAX_IMAGES and 0 <= cfg.val <= MAX_IMAGES and 0 <= cfg.train_aug <= MAX_IMAGES,
         f"--train must be in 1..{MAX_IMAGES}, --val and --train-aug in 0..{MAX_IMAGES} (got {cfg.train}, {cfg.val}, {cfg.train_aug})"),
        (2 <= cfg.classes <= MAX_CLASSES, f"--classes must be in 2..{MAX_CLASSES} (got {cfg.classes})"),
        (32 <= cfg.size <= 2048, f"--size must be in 32..2048 (got {cfg.size})"),
    ])
    # (train_aug only when set: a default data set's manifest is what it was before the option)
    config = run_config(cfg, config_drop(cfg, ("out",) if cfg.train_aug else ("out", "train_aug")))
    # 2. an existing dataset with the same config is reused; another config needs --force; a folder of files
    # no synth run wrote (a user's own data set) is refused (artifacts/claims.py)
    if (cfg.out / MANIFEST_NAME).exists() and not cfg.runtime.force:
        old = read_manifest(cfg.out)
        if old.get("stage") == "synth" and {"classes": len(CLASSES), **old["config"]} == config:  # datasets made before --classes had the default set
            return old["stats"]
    claim_out(cfg.out, "synth", config, OWNED, force=cfg.runtime.force)
    # 3. generate (the folder marked unfinished meanwhile), then publish the manifest last
    write_text_atomic(cfg.out / SYNTH_MARKER, "")
    stats = generate(cfg.out, cfg.train, cfg.val, cfg.size, cfg.runtime.seed, cfg.classes, cfg.train_aug)
    write_manifest(cfg.out, build_manifest("synth", config, extra={"stats": stats}, paths=config_paths(cfg), files=owned_files(cfg.out, OWNED)))
    (cfg.out / SYNTH_MARKER).unlink()
    return stats
