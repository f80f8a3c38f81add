"""`usage train-cls`: train the USAGE classifier and write ``checkpoint.pt`` + ``manifest.json``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from usage_cli.artifacts import cls_checkpoint, last_checkpoint
from usage_cli.artifacts.claims import Output, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.manifest import (
    MANIFEST_NAME,
    build_manifest,
    config_paths,
    run_config,
    write_manifest,
)
from usage_cli.data.identity import identity
from usage_cli.data.labels_io import root_label_file
from usage_cli.data.torchdata import ClassificationSet
from usage_cli.data.transforms import RECIPES, build_transform
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine import loop as engine_loop  # fit through the module: tests wrap it
from usage_cli.engine.distributed import check_device, is_main_process, worker_count, world_size
from usage_cli.engine.optim import backbone_head_groups
from usage_cli.engine.resume import check_resume
from usage_cli.engine.sampling import seed_everything
from usage_cli.errors import ConfigError, DatasetError, check_options
from usage_cli.models.backbones import TOKENS, backbone_family
from usage_cli.models.classifier import build_classifier
from usage_cli.models.mappings import MAPPINGS
from usage_cli.presets import TRAIN_CLS, deit_lr
from usage_cli.progress import log
from usage_cli.runtime import MAX_SIZE, Runtime, config_drop, runtime_checks, takes_runtime
from usage_cli.tasks.classification import (
    REGULARISERS,
    ClassificationTask,
    ClsTaskConfig,
    val_evaluator,
)

PRESETS = TRAIN_CLS  # usage_cli/presets.py: per backbone family, shown in --help
# train-cls's manifest config has held --device since its first version: kept, so that its runs still
# resume and rerun without --force (the other stages leave the device out)
ALSO_IN_CONFIG = ("device",)
OWNED = (cls_checkpoint.FILENAME, *last_checkpoint.FILES)  # what a run writes into --out (its manifest lists them)


@takes_runtime("train-cls")
@takes_data
@dataclass(frozen=True)
class TrainClsConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out")}  # what it writes (artifacts/claims.py checks them first)
    out: Path
    data: DataSpec = DataSpec(split="train_aug")
    backbone: str = "deit_s"
    preset: str = "paper"
    val_split: str | None = "val"
    weights: Path | None = None
    # None = from the preset for the backbone family (pretrained: the preset's, or on with --weights)
    pretrained: bool | None = None
    mapping: str | None = None
    reg: str | None = None
    tau1: float | None = None
    tau2: float | None = None
    lam: float | None = None
    bg_const: float = 0.0
    ema: float | None = None
    aa_schedule: str = "self-adaptive"
    aa_classes: str = "all"
    teacher_drop_path: float | None = None
    student_drop_path: tuple[float, float] | None = None
    student_dropout: tuple[float, float] | None = None
    status_momentum: float = 0.999
    seed_network: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    img_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    aug: str | None = None
    output_stride: int = 16
    tokens: str | None = None  # transformers: final-norm | last-block; None = by --pretrained / --weights
    runtime: Runtime = Runtime()


def resolve(cfg: TrainClsConfig, family: str) -> TrainClsConfig:
    """Fill the remaining None options from the preset of the backbone family."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset '{cfg.preset}'; choose from {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset][family]
    cfg = replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})
    if cfg.pretrained is None:  # a preset that does not say: ImageNet weights only from --weights
        cfg = replace(cfg, pretrained=cfg.weights is not None)
    if cfg.lr is None:  # DeiT / MCTformer: 5e-4 x global batch / 512 (--batch-size is per process)
        cfg = replace(cfg, lr=deit_lr(cfg.batch_size, world_size()))
    if cfg.runtime.workers is None:
        cfg = replace(cfg, runtime=replace(cfg.runtime, workers=worker_count(cfg.runtime)))
    if cfg.seed_network is None:
        cfg = replace(cfg, seed_network="teacher" if cfg.reg == "aa" else "student")
    if cfg.tokens is None:  # MCTformer's final-norm tokens for ImageNet weights; from scratch they stall
        cfg = replace(cfg, tokens="final-norm" if cfg.pretrained or cfg.weights else "last-block")
    return replace(cfg, warmup_epochs=min(cfg.warmup_epochs, cfg.epochs / 4))


@owns_outputs
def run(cfg: TrainClsConfig) -> Path:
    # 1. the resolved config, checked, and the output folder, before any work; then the data
    check_device(cfg.runtime.device)
    family = backbone_family(cfg.backbone)  # also checks the name
    cfg = resolve(cfg, family)
    check(cfg)
    if cfg.reg not in REGULARISERS:
        raise ConfigError(f"unknown regulariser '{cfg.reg}'; choose from {', '.join(REGULARISERS)}")
    rt = cfg.runtime
    config = run_config(cfg, config_drop(cfg, ("out",), keep=ALSO_IN_CONFIG))  # what defines the run (manifest, resume check)
    ds = cfg.data.load()
    if not any(r.labels for r in ds.records):
        raise DatasetError(f"{cfg.data.root}: split '{cfg.data.split}' has no image with a positive class label; nothing to learn")
    data = identity(ds, cfg.data.split_file)  # reads every image header: an unreadable one fails before training
    owned = (cls_checkpoint.FILENAME,) if rt.resume else OWNED
    sources = {"the data set": (cfg.data.root, data["fingerprint"])}
    check_resume(cfg.out, resume=rt.resume, force=rt.force, epochs=cfg.epochs, sources=sources)  # before the claim: a refused resume removes nothing
    claim_out(cfg.out, "train-cls", config, owned, force=rt.force, ignore=("epochs", "warmup_epochs") if rt.resume else ())
    # 2. model and task
    seed_everything(rt.seed)
    model_config = {
        "backbone": cfg.backbone, "num_classes": ds.meta.num_classes, "mapping": cfg.mapping, "tau1": cfg.tau1,
        "bg_const": cfg.bg_const, "img_size": cfg.img_size, "output_stride": cfg.output_stride, "tokens": cfg.tokens,
    }  # fmt: skip
    student = build_classifier(model_config, pretrained=cfg.pretrained, weights=str(cfg.weights) if cfg.weights else None)
    student.backbone.check_size(cfg.img_size, cfg.img_size)
    model_config.update(mean=list(_norm_stats(student)[0]), std=list(_norm_stats(student)[1]))
    student.model_config.update(model_config)
    task_cfg = ClsTaskConfig(
        reg=cfg.reg, lam=cfg.lam, tau2=cfg.tau2, ema=cfg.ema, aa_schedule=cfg.aa_schedule, aa_classes=cfg.aa_classes,
        teacher_drop_path=cfg.teacher_drop_path, student_drop_path=tuple(cfg.student_drop_path),
        student_dropout=tuple(cfg.student_dropout), status_momentum=cfg.status_momentum, num_images=len(ds),
    )  # fmt: skip
    task = ClassificationTask(student, task_cfg)
    if family == "cnn" and cfg.optimizer == "sgd":  # PSA: new layers at 10x
        task.param_groups = lambda lr: backbone_head_groups(student.backbone.parameters(), student.head.parameters(), lr)
    # 3. train
    aug = "light" if cfg.reg == "oaa" else cfg.aug
    train_set = ClassificationSet(ds.records, ds.meta.num_classes, build_transform(aug, cfg.img_size, *_norm_stats(student)))
    loop = engine_loop.loop_config(
        rt, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
        schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs,
    )  # fmt: skip
    evaluate = _val_evaluator(cfg, ds.meta.num_classes, student) if cfg.val_split else None
    engine_loop.fit(task, train_set, loop, cfg.out, resume=rt.resume, stage_config=config, sources=sources, evaluate=evaluate)

    if not is_main_process():  # only rank 0 publishes
        return cfg.out / cls_checkpoint.FILENAME
    return _publish(cfg, task, model_config, ds, config, data)


def check(cfg: TrainClsConfig) -> None:
    """Every resolved value in its range, before any work (one line naming the option otherwise)."""

    rates = (cfg.teacher_drop_path, *cfg.student_drop_path, *cfg.student_dropout)
    check_options([
        *runtime_checks(cfg.runtime),
        (cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (16 <= cfg.img_size <= MAX_SIZE, f"--img-size must be in 16..{MAX_SIZE}, got {cfg.img_size}"),
        (cfg.lr > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must not be negative, got {cfg.weight_decay}"),
        (cfg.warmup_epochs >= 0, f"--warmup-epochs must not be negative, got {cfg.warmup_epochs}"),
        (cfg.tau1 > 0 and cfg.tau2 > 0, f"--tau1 and --tau2 must be positive, got {cfg.tau1} / {cfg.tau2}"),
        (cfg.lam >= 0, f"--lam must not be negative, got {cfg.lam}"),
        (0 <= cfg.ema < 1 and 0 <= cfg.status_momentum < 1, f"--ema and --status-momentum must lie in [0, 1), got {cfg.ema} / {cfg.status_momentum}"),
        (all(0 <= r < 1 for r in rates), f"drop-path and dropout rates must lie in [0, 1), got {rates}"),
        (cfg.mapping in MAPPINGS, f"--mapping must be one of {', '.join(MAPPINGS)}, got {cfg.mapping!r}"),
        (cfg.optimizer in ("adamw", "sgd"), f"--optimizer must be adamw or sgd, got {cfg.optimizer!r}"),
        (cfg.schedule in ("cosine", "poly"), f"--schedule must be cosine or poly, got {cfg.schedule!r}"),
        (cfg.aug in RECIPES, f"--aug must be one of {', '.join(RECIPES)}, got {cfg.aug!r}"),
        (cfg.aa_schedule in ("self-adaptive", "linear", "fixed"), f"--aa-schedule must be self-adaptive, linear or fixed, got {cfg.aa_schedule!r}"),
        (cfg.aa_classes in ("all", "present"), f"--aa-classes must be all or present, got {cfg.aa_classes!r}"),
        (cfg.seed_network in ("teacher", "student"), f"--seed-network must be teacher or student, got {cfg.seed_network!r}"),
        (cfg.output_stride in (8, 16, 32), f"--output-stride must be 8, 16 or 32, got {cfg.output_stride}"),
        (cfg.tokens in TOKENS, f"--tokens must be one of {', '.join(TOKENS)}, got {cfg.tokens!r}"),
    ])


def _norm_stats(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation of the classifier's backbone weights, which the checkpoint records."""
    return model.backbone.norm_stats()


def _val_evaluator(cfg: TrainClsConfig, num_classes: int, student):
    """Per-epoch mAP and F1 on the val split (``tasks.classification.val_evaluator``); None without it."""
    try:
        val = cfg.data.load(cfg.val_split)
    except DatasetError as e:
        log(f"[yellow]no validation metrics: {e}[/]", cfg.runtime.quiet)
        return None
    val_set = ClassificationSet(val.records, num_classes, build_transform("none", cfg.img_size, *_norm_stats(student)))
    return val_evaluator(val_set, num_classes, cfg.seed_network, cfg.batch_size, cfg.runtime.workers)


def _publish(cfg: TrainClsConfig, task, model_config: dict, ds, config: dict, data: dict | None = None) -> Path:
    net = task.seed_network(cfg.seed_network)
    path = cls_checkpoint.save_cls_checkpoint(
        cfg.out / cls_checkpoint.FILENAME, model=net.state_dict(), model_config=model_config, class_names=list(ds.meta.class_names),
        seed_network=cfg.seed_network, dataset={"name": cfg.data.dataset, "root": str(cfg.data.root), "split": cfg.data.split},
        train_config=config,
    )  # fmt: skip
    inputs = {"split_file": cfg.data.split_file} if cfg.data.split_file else {}
    labels = root_label_file(cfg.data.root)
    if labels is not None:  # the one the dataset loader reads
        inputs["cls_labels"] = labels
    if (Path(cfg.data.root) / MANIFEST_NAME).exists():
        inputs["manifest"] = Path(cfg.data.root) / MANIFEST_NAME
    extra = {"seed_network": cfg.seed_network, "num_images": len(ds), "checkpoint": cls_checkpoint.FILENAME}
    write_manifest(cfg.out, build_manifest("train-cls", config, inputs=inputs, extra=extra, paths=config_paths(cfg), data=data,
                                           files=owned_files(cfg.out, OWNED)))  # fmt: skip
    return path


__all__ = ["PRESETS", "TrainClsConfig", "check", "resolve", "run"]
