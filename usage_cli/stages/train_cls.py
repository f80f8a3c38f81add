"""`usage train-cls`: train the USAGE classifier and write ``checkpoint.pt`` + ``manifest.json``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from usage_cli.artifacts.cls_checkpoint import save_cls_checkpoint
from usage_cli.artifacts.manifest import build_manifest, config_paths, run_config, write_manifest
from usage_cli.artifacts.outdir import claim_out, holds_out_lock, owned_files
from usage_cli.data import DataSpec
from usage_cli.data.identity import identity
from usage_cli.data.torchdata import ClassificationSet
from usage_cli.data.transforms import RECIPES, build_transform
from usage_cli.engine import loop as engine_loop  # fit through the module: tests wrap it
from usage_cli.engine.distributed import (
    DEFAULT_TIMEOUT_MIN,
    all_reduce_sum,
    check_device,
    current_info,
    default_workers,
    is_main_process,
    world_size,
)
from usage_cli.engine.loop import LoopConfig, check_resume, seed_everything
from usage_cli.engine.optim import backbone_head_groups
from usage_cli.errors import ConfigError, DatasetError, check_options
from usage_cli.metrics.multilabel import multilabel_metrics
from usage_cli.models.backbones import TOKENS, backbone_family
from usage_cli.models.classifier import build_classifier
from usage_cli.models.mappings import MAPPINGS
from usage_cli.presets import TRAIN_CLS
from usage_cli.progress import log
from usage_cli.tasks.classification import REGULARISERS, ClassificationTask, ClsTaskConfig

PRESETS = TRAIN_CLS  # usage_cli/presets.py: per backbone family, shown in --help
RUNTIME = ("resume", "force", "quiet", "workers", "out", "timeout")  # not in the run's config (hash)
OWNED = ("checkpoint.pt", "last.pt", "log.jsonl")  # what a run writes into --out (its manifest lists them)


@dataclass(frozen=True)
class TrainClsConfig:
    root: Path
    out: Path
    dataset: str = "voc"
    split: str = "train_aug"
    backbone: str = "deit_s"
    preset: str = "paper"
    split_file: Path | None = None
    classes_file: Path | None = None
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
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA (float16 + loss scaling), off on the CPU
    sync_bn: bool = False
    timeout: float = DEFAULT_TIMEOUT_MIN  # process-group timeout (minutes) under torchrun
    workers: int | None = None  # None: by device (engine.distributed.default_workers)
    seed: int = 0
    resume: bool = False
    force: bool = False
    quiet: bool = False


def resolve(cfg: TrainClsConfig, family: str) -> TrainClsConfig:
    """Fill the remaining None options from the preset of the backbone family."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset '{cfg.preset}'; choose from {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset][family]
    cfg = replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})
    if cfg.pretrained is None:  # a preset that does not say: ImageNet weights only from --weights
        cfg = replace(cfg, pretrained=cfg.weights is not None)
    if cfg.lr is None:  # DeiT / MCTformer: 5e-4 x global batch / 512 (--batch-size is per process)
        cfg = replace(cfg, lr=5e-4 * cfg.batch_size * world_size() / 512)
    if cfg.workers is None:
        cfg = replace(cfg, workers=default_workers(cfg.device))
    if cfg.seed_network is None:
        cfg = replace(cfg, seed_network="teacher" if cfg.reg == "aa" else "student")
    if cfg.tokens is None:  # MCTformer's final-norm tokens for ImageNet weights; from scratch they stall
        cfg = replace(cfg, tokens="final-norm" if cfg.pretrained or cfg.weights else "last-block")
    return replace(cfg, warmup_epochs=min(cfg.warmup_epochs, cfg.epochs / 4))


@holds_out_lock
def run(cfg: TrainClsConfig) -> Path:
    # 1. the resolved config, checked, and the output folder, before any work; then the data
    check_device(cfg.device)
    family = backbone_family(cfg.backbone)  # also checks the name
    cfg = resolve(cfg, family)
    check(cfg)
    if cfg.reg not in REGULARISERS:
        raise ConfigError(f"unknown regulariser '{cfg.reg}'; choose from {', '.join(REGULARISERS)}")
    config = run_config(cfg, RUNTIME)  # what defines the run (manifest, resume check)
    owned = ("checkpoint.pt",) if cfg.resume else OWNED
    claim_out(cfg.out, "train-cls", config, owned, force=cfg.force, ignore=("epochs", "warmup_epochs") if cfg.resume else ())
    check_resume(cfg.out, resume=cfg.resume, force=cfg.force, epochs=cfg.epochs)
    ds = DataSpec.of(cfg).load()
    if not any(r.labels for r in ds.records):
        raise DatasetError(f"{cfg.root}: split '{cfg.split}' has no image with a positive class label; nothing to learn")
    data = identity(ds, cfg.split_file)  # reads every image header: an unreadable one fails before training
    # 2. model and task
    seed_everything(cfg.seed)
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
    loop = LoopConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
        schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs, workers=cfg.workers, device=cfg.device, amp=cfg.amp,
        sync_bn=cfg.sync_bn, timeout=cfg.timeout, seed=cfg.seed, quiet=cfg.quiet,
    )  # fmt: skip
    evaluate = _val_evaluator(cfg, ds.meta.num_classes, student) if cfg.val_split else None
    engine_loop.fit(task, train_set, loop, cfg.out, resume=cfg.resume, run_config=config, evaluate=evaluate)

    if not is_main_process():  # only rank 0 publishes
        return cfg.out / "checkpoint.pt"
    return _publish(cfg, task, model_config, ds, config, data)


def check(cfg: TrainClsConfig) -> None:
    """Every resolved value in its range, before any work (one line naming the option otherwise)."""

    rates = (cfg.teacher_drop_path, *cfg.student_drop_path, *cfg.student_dropout)
    check_options([
        (cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (cfg.img_size >= 16, f"--img-size must be at least 16, got {cfg.img_size}"),
        (cfg.lr > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must not be negative, got {cfg.weight_decay}"),
        (cfg.warmup_epochs >= 0, f"--warmup-epochs must not be negative, got {cfg.warmup_epochs}"),
        (cfg.tau1 > 0 and cfg.tau2 > 0, f"--tau1 and --tau2 must be positive, got {cfg.tau1} / {cfg.tau2}"),
        (cfg.lam >= 0, f"--lam must not be negative, got {cfg.lam}"),
        (0 <= cfg.ema < 1 and 0 <= cfg.status_momentum < 1, f"--ema and --status-momentum must lie in [0, 1), got {cfg.ema} / {cfg.status_momentum}"),
        (all(0 <= r < 1 for r in rates), f"drop-path and dropout rates must lie in [0, 1), got {rates}"),
        (cfg.workers >= 0, f"--workers must not be negative, got {cfg.workers}"),
        (cfg.mapping in MAPPINGS, f"--mapping must be one of {', '.join(MAPPINGS)}, got {cfg.mapping!r}"),
        (cfg.optimizer in ("adamw", "sgd"), f"--optimizer must be adamw or sgd, got {cfg.optimizer!r}"),
        (cfg.schedule in ("cosine", "poly"), f"--schedule must be cosine or poly, got {cfg.schedule!r}"),
        (cfg.aug in RECIPES, f"--aug must be one of {', '.join(RECIPES)}, got {cfg.aug!r}"),
        (cfg.aa_schedule in ("self-adaptive", "linear", "fixed"), f"--aa-schedule must be self-adaptive, linear or fixed, got {cfg.aa_schedule!r}"),
        (cfg.aa_classes in ("all", "present"), f"--aa-classes must be all or present, got {cfg.aa_classes!r}"),
        (cfg.seed_network in ("teacher", "student"), f"--seed-network must be teacher or student, got {cfg.seed_network!r}"),
        (cfg.output_stride in (8, 16, 32), f"--output-stride must be 8, 16 or 32, got {cfg.output_stride}"),
        (cfg.tokens in TOKENS, f"--tokens must be one of {', '.join(TOKENS)}, got {cfg.tokens!r}"),
        (not (cfg.resume and cfg.force), "--resume continues a run and --force starts it over: pass one of them"),
    ])


def _norm_stats(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation of the classifier's backbone weights, which the checkpoint records."""
    return model.backbone.norm_stats()


def _val_evaluator(cfg: TrainClsConfig, num_classes: int, student):
    """Per-epoch mAP and F1 (threshold 0.5) of the multi-label classifier on the val split."""
    try:
        val = DataSpec.of(cfg).load(cfg.val_split)
    except DatasetError as e:
        log(f"[yellow]no validation metrics: {e}[/]", cfg.quiet)
        return None

    val_set = ClassificationSet(val.records, num_classes, build_transform("none", cfg.img_size, *_norm_stats(student)))

    @torch.no_grad()
    def evaluate(task, epoch: int) -> dict:
        """Run by every rank on its share of the val images (every world_size-th); scores and labels
        are summed over the ranks into one table, so no rank waits while another works alone."""

        info = current_info()
        net = task.seed_network(cfg.seed_network)
        was = net.training
        net.eval()
        device = next(net.parameters()).device
        mine = list(range(info.rank, len(val_set), info.world_size))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(val_set, mine), batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=device.type == "cuda"
        )
        rows = []
        for batch in loader:
            scores = torch.sigmoid(net(batch["image"].to(device, non_blocking=True))["logits"].float())
            rows.append(torch.cat([scores, batch["label"].to(device, scores.dtype)], 1))
        net.train(was)
        table = torch.zeros(len(val_set), 2 * num_classes, device=device)
        if rows:
            table[torch.as_tensor(mine, device=device)] = torch.cat(rows)
        table = all_reduce_sum(table).cpu().numpy()
        return {f"val_{k}": v for k, v in multilabel_metrics(table[:, :num_classes], table[:, num_classes:]).items()}

    return evaluate


def _publish(cfg: TrainClsConfig, task, model_config: dict, ds, config: dict, data: dict | None = None) -> Path:
    net = task.seed_network(cfg.seed_network)
    path = save_cls_checkpoint(
        cfg.out / "checkpoint.pt", model=net.state_dict(), model_config=model_config, class_names=list(ds.meta.class_names),
        seed_network=cfg.seed_network, dataset={"name": cfg.dataset, "root": str(cfg.root), "split": cfg.split},
        train_config=config,
    )  # fmt: skip
    inputs = {"split_file": cfg.split_file} if cfg.split_file else {}
    root = Path(cfg.root)
    labels = [p for p in (root / "cls_labels.npy", root / "cls_labels.json") if p.exists()]
    if labels:  # the one the dataset loader reads
        inputs["cls_labels"] = labels[0]
    if (root / "manifest.json").exists():
        inputs["manifest"] = root / "manifest.json"
    extra = {"seed_network": cfg.seed_network, "num_images": len(ds), "checkpoint": "checkpoint.pt"}
    write_manifest(cfg.out, build_manifest("train-cls", config, inputs=inputs, extra=extra, paths=config_paths(cfg), data=data,
                                           files=owned_files(cfg.out, OWNED)))  # fmt: skip
    return path


__all__ = ["PRESETS", "TrainClsConfig", "check", "resolve", "run"]
