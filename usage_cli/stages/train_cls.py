"""`usage train-cls`: train the USAGE classifier and write ``checkpoint.pt`` + ``manifest.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from usage_cli.artifacts.checkpoint import save_checkpoint
from usage_cli.artifacts.manifest import build_manifest, write_manifest
from usage_cli.data import load_dataset
from usage_cli.errors import ConfigError, DatasetError
from usage_cli.progress import log

# values the paper gives per backbone family (sec. 5.1) and the anchors' training recipes
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "transformer": {
            "mapping": "cm", "reg": "aa", "tau1": 1.0, "tau2": 0.1, "lam": 0.25, "ema": 0.99,
            "teacher_drop_path": 0.05, "student_drop_path": (0.05, 0.15), "student_dropout": (0.0, 0.01),
            "optimizer": "adamw", "lr": None, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 5.0,
            "batch_size": 64, "img_size": 224, "epochs": 60, "aug": "deit",
        },
        "cnn": {
            "mapping": "cm", "reg": "aa", "tau1": 50.0, "tau2": 0.1, "lam": 0.25, "ema": 0.99,
            "teacher_drop_path": 0.05, "student_drop_path": (0.05, 0.15), "student_dropout": (0.0, 0.01),
            "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "schedule": "poly", "warmup_epochs": 0.0,
            "batch_size": 16, "img_size": 448, "epochs": 15, "aug": "psa",
        },
    },
}  # fmt: skip


@dataclass(frozen=True)
class TrainClsConfig:
    dataset: str
    root: Path
    out: Path
    split: str = "train_aug"
    backbone: str = "deit_s"
    preset: str = "paper"
    split_file: Path | None = None
    classes_file: Path | None = None
    val_split: str | None = "val"
    weights: Path | None = None
    pretrained: bool = False
    # None = from the preset for the backbone family
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
    device: str = "cpu"
    workers: int = 0
    seed: int = 0
    resume: bool = False
    quiet: bool = False
    extra: dict = field(default_factory=dict)


def with_config_file(cfg: TrainClsConfig, path: Path | None) -> TrainClsConfig:
    """Fill options left unset (None) from a JSON or YAML file; explicit flags win."""
    if path is None:
        return cfg
    if not Path(path).exists():
        raise ConfigError(f"{path}: config file not found")
    text = Path(path).read_text()
    try:
        data = json.loads(text) if str(path).endswith(".json") else __import__("yaml").safe_load(text)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{path}: unreadable config ({e})") from e
    known = {f.name for f in fields(TrainClsConfig)}
    bad = set(data or {}) - known
    if bad:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(sorted(bad))}")
    fill = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (data or {}).items() if getattr(cfg, k) in (None, False)}
    for k in ("root", "out", "weights", "split_file", "classes_file"):
        if isinstance(fill.get(k), str):
            fill[k] = Path(fill[k])
    return replace(cfg, **fill)


def resolve(cfg: TrainClsConfig, family: str) -> TrainClsConfig:
    """Fill the remaining None options from the preset of the backbone family."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset '{cfg.preset}'; choose from {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset][family]
    filled = {k: v for k, v in preset.items() if getattr(cfg, k) is None}
    cfg = replace(cfg, **filled)
    if cfg.lr is None:  # DeiT / MCTformer: 5e-4 x batch / 512
        cfg = replace(cfg, lr=5e-4 * cfg.batch_size / 512)
    if cfg.seed_network is None:
        cfg = replace(cfg, seed_network="teacher" if cfg.reg == "aa" else "student")
    if cfg.tokens is None:  # MCTformer's final-norm tokens for ImageNet weights; from scratch they stall
        cfg = replace(cfg, tokens="final-norm" if cfg.pretrained or cfg.weights else "last-block")
    return replace(cfg, warmup_epochs=min(cfg.warmup_epochs, cfg.epochs / 4))


def run(cfg: TrainClsConfig) -> Path:
    from usage_cli.data.torchdata import ClassificationSet
    from usage_cli.data.transforms import build_transform
    from usage_cli.engine.loop import LoopConfig, fit, seed_everything
    from usage_cli.engine.optim import backbone_head_groups
    from usage_cli.models.backbones import backbone_family
    from usage_cli.models.classifier import build_classifier
    from usage_cli.tasks.classification import REGULARISERS, ClassificationTask, ClsTaskConfig

    # 1. data and the resolved config
    ds = load_dataset(cfg.dataset, cfg.root, cfg.split, split_file=cfg.split_file, classes_file=cfg.classes_file)
    if not any(r.labels for r in ds.records):
        raise DatasetError(f"{cfg.root}: split '{cfg.split}' has no image with a positive class label; nothing to learn")
    family = backbone_family(cfg.backbone)  # also checks the name
    cfg = resolve(cfg, family)
    if cfg.reg not in REGULARISERS:
        raise ConfigError(f"unknown regulariser '{cfg.reg}'; choose from {', '.join(REGULARISERS)}")
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
        schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs, workers=cfg.workers, device=cfg.device, seed=cfg.seed, quiet=cfg.quiet,
    )  # fmt: skip
    run_config = _jsonable(asdict(cfg), drop=("resume", "quiet", "workers", "out"))
    evaluate = _val_evaluator(cfg, ds.meta.num_classes, student) if cfg.val_split else None
    fit(task, train_set, loop, cfg.out, resume=cfg.resume, run_config=run_config, evaluate=evaluate)
    from usage_cli.engine.distributed import is_main_process

    if not is_main_process():  # only rank 0 publishes
        return cfg.out / "checkpoint.pt"
    return _publish(cfg, task, model_config, ds, run_config)


def _norm_stats(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pc = getattr(model.backbone.model, "pretrained_cfg", {}) or {}
    return tuple(pc.get("mean", (0.485, 0.456, 0.406))), tuple(pc.get("std", (0.229, 0.224, 0.225)))


def _jsonable(d: dict, drop: tuple[str, ...] = ()) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in drop}


def _val_evaluator(cfg: TrainClsConfig, num_classes: int, student):
    """Per-epoch mAP and F1 (threshold 0.5) of the multi-label classifier on the val split."""
    try:
        val = load_dataset(cfg.dataset, cfg.root, cfg.val_split, classes_file=cfg.classes_file)
    except DatasetError as e:
        log(f"[yellow]no validation metrics: {e}[/]", cfg.quiet)
        return None
    from usage_cli.data.torchdata import ClassificationSet
    from usage_cli.data.transforms import build_transform
    from usage_cli.metrics.multilabel import multilabel_metrics

    val_set = ClassificationSet(val.records, num_classes, build_transform("none", cfg.img_size, *_norm_stats(student)))

    @torch.no_grad()
    def evaluate(task, epoch: int) -> dict:
        net = task.seed_network(cfg.seed_network)
        was = net.training
        net.eval()
        scores, labels = [], []
        device = next(net.parameters()).device
        for batch in torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.workers):
            scores.append(torch.sigmoid(net(batch["image"].to(device))["logits"]).cpu())
            labels.append(batch["label"])
        net.train(was)
        return {f"val_{k}": v for k, v in multilabel_metrics(torch.cat(scores).numpy(), torch.cat(labels).numpy()).items()}

    return evaluate


def _publish(cfg: TrainClsConfig, task, model_config: dict, ds, run_config: dict) -> Path:
    net = task.seed_network(cfg.seed_network)
    ckpt = {
        "format": "usage-cls-checkpoint", "version": "1.0.0", "model": net.state_dict(), "model_config": model_config,
        "class_names": list(ds.meta.class_names), "seed_network": cfg.seed_network,
        "dataset": {"name": cfg.dataset, "root": str(cfg.root), "split": cfg.split}, "train_config": run_config,
    }  # fmt: skip
    path = save_checkpoint(cfg.out / "checkpoint.pt", ckpt)
    inputs = {"split_file": cfg.split_file} if cfg.split_file else {}
    for cand in (Path(cfg.root) / "cls_labels.npy", Path(cfg.root) / "manifest.json"):
        if cand.exists():
            inputs[cand.stem] = cand
    write_manifest(cfg.out, build_manifest("train-cls", run_config, inputs=inputs, extra={"seed_network": cfg.seed_network, "num_images": len(ds), "checkpoint": "checkpoint.pt"}))
    return path


def load_val_log(out: Path) -> list[dict]:
    p = Path(out) / "log.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []


__all__ = ["PRESETS", "TrainClsConfig", "resolve", "run", "with_config_file"]
