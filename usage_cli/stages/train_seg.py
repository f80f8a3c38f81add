"""`usage train-seg`: a DeepLab-style network trained on pseudo masks (label PNGs).

Input: a label-PNG folder (``<id>.png`` label maps with a manifest) of a label-producing stage
(``refine-psa`` / ``psa-walk``, or ``predict-seg`` for self-training). Output ``<out>/checkpoint.pt`` (format
``usage-seg-checkpoint``) + ``manifest.json`` pinning the masks' manifest; ``<out>/last.pt`` and
``log.jsonl`` come from the shared loop (``--resume`` continues from ``last.pt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from usage_cli.artifacts import last_checkpoint, seg_checkpoint
from usage_cli.artifacts.claims import Output, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.labels import label_ids, read_label_folder
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_paths,
    input_digest,
    run_config,
    sha256_file,
    write_manifest,
)
from usage_cli.data.identity import check_pairing, identity, recorded_data
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine.distributed import check_device, is_main_process
from usage_cli.engine.loop import fit, loop_config
from usage_cli.engine.resume import check_resume
from usage_cli.errors import ArtifactError, ConfigError, check_options
from usage_cli.models.segnet import build_segnet, load_backbone_weights
from usage_cli.registry import writing
from usage_cli.runtime import MAX_SIZE, Runtime, config_drop, runtime_checks, takes_runtime
from usage_cli.tasks.segmentation import PseudoMaskDataset, SegmentationTask

MASK_STAGES = writing("masks", "preds")  # the folders it trains on: pseudo masks, or a network's predictions
OWNED = (seg_checkpoint.FILENAME, *last_checkpoint.FILES)  # what a run writes into --out (its manifest lists them)


@takes_runtime("train-seg")
@takes_data
@dataclass(frozen=True)
class TrainSegConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out")}  # what it writes (artifacts/claims.py checks them first)
    masks: Path
    out: Path
    data: DataSpec = DataSpec(split="train_aug")
    backbone: str = "resnet101"
    pretrained: bool = True  # the paper's DeepLab starts from ImageNet weights
    weights: Path | None = None
    output_stride: int = 16
    aspp_channels: int = 256
    img_size: int = 224  # transformer backbones: size their position embeddings are built for
    epochs: int = 30
    batch_size: int = 8
    crop: int = 321
    scale: tuple[float, float] = (0.7, 1.3)
    optimizer: str = "sgd"
    lr: float = 0.007
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0
    runtime: Runtime = Runtime()


def _check(cfg: TrainSegConfig) -> None:
    if not 16 <= cfg.crop <= MAX_SIZE:
        raise ConfigError(f"--crop must be in 16..{MAX_SIZE}, got {cfg.crop}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError("--epochs and --batch-size must be positive")
    if not (0 < cfg.scale[0] <= cfg.scale[1]):
        raise ConfigError(f"scale range must be 0 < low <= high, got {cfg.scale}")
    if cfg.weights is not None and not Path(cfg.weights).exists():
        raise ConfigError(f"{cfg.weights}: --weights file not found")
    check_options([
        *runtime_checks(cfg.runtime),
        (cfg.lr > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.head_lr_mult > 0, f"--head-lr-mult must be positive, got {cfg.head_lr_mult}"),
        (cfg.weight_decay >= 0, f"--weight-decay must not be negative, got {cfg.weight_decay}"),
        (cfg.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {cfg.optimizer!r}"),
        (cfg.output_stride in (8, 16, 32), f"--output-stride must be 8, 16 or 32, got {cfg.output_stride}"),
        (1 <= cfg.aspp_channels <= MAX_SIZE, f"--aspp-channels must be in 1..{MAX_SIZE}, got {cfg.aspp_channels}"),
        (16 <= cfg.img_size <= MAX_SIZE, f"--img-size must be in 16..{MAX_SIZE}, got {cfg.img_size}"),
    ])


@owns_outputs
def run(cfg: TrainSegConfig) -> Path:
    """Train; returns the path of the written checkpoint."""

    _check(cfg)
    rt = cfg.runtime
    check_device(rt.device)
    # 1. inputs: the masks' manifest, the split, one mask per id; the output folder
    if not Path(cfg.masks).is_dir():
        raise ArtifactError(f"{cfg.masks}: --masks folder not found; run `usage refine-psa --out {cfg.masks}` first")
    masks = read_label_folder(cfg.masks, MASK_STAGES)
    ds = cfg.data.load()
    check_class_names(cfg.masks, masks.get("class_names"), ds.meta.class_names, "make the masks from this dataset, or pass its --classes")
    mask_ids = label_ids(cfg.masks)
    pairing = check_pairing(cfg.masks, recorded_data(masks), ds, force=rt.force, ids=mask_ids, use="train on them")
    data = identity(ds, cfg.data.split_file)  # reads every image header: an unreadable one fails before training
    config = run_config(cfg, config_drop(cfg))  # what defines the run (manifest, resume check)
    owned = (seg_checkpoint.FILENAME,) if rt.resume else OWNED
    sources = {"--masks": (cfg.masks, input_digest(cfg.masks)), "the data set": (cfg.data.root, data["fingerprint"])}
    check_resume(cfg.out, resume=rt.resume, force=rt.force, epochs=cfg.epochs, sources=sources)  # before the claim: a refused resume removes nothing
    claim_out(cfg.out, "train-seg", config, owned, force=rt.force, ignore=("epochs", "warmup_epochs") if rt.resume else ())
    # 2. network
    model_config = {
        "backbone": cfg.backbone, "num_classes": ds.meta.num_classes + 1, "output_stride": cfg.output_stride,
        "aspp_channels": cfg.aspp_channels, "img_size": cfg.img_size,
    }  # fmt: skip

    torch.manual_seed(rt.seed)  # the head's initialisation is part of the run
    net = build_segnet(model_config)
    source = load_backbone_weights(net, pretrained=cfg.pretrained, weights=str(cfg.weights) if cfg.weights else None)
    net.model_config.update(net.expected_norm())  # the input normalisation it trains with, for predict-seg
    train_set = PseudoMaskDataset(ds.records, cfg.masks, ds.meta.num_classes, crop=cfg.crop, scale=cfg.scale, norm=net.input_norm())
    # 3. the shared loop (poly schedule, AMP on CUDA, DDP under torchrun, last.pt)
    loop = loop_config(rt, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay, schedule="poly")
    task = fit(SegmentationTask(net, cfg.head_lr_mult), train_set, loop, cfg.out, resume=rt.resume, stage_config=config, sources=sources)
    # 4. final artifact (rank 0 only)
    out = Path(cfg.out) / seg_checkpoint.FILENAME
    if is_main_process():
        _write_outputs(cfg, task.net, ds, config, source, out, data, pairing)
    return out


def _write_outputs(cfg: TrainSegConfig, net, ds, config: dict, source: str, out: Path, data: dict, pairing: dict | None) -> None:
    seg_checkpoint.save_seg_checkpoint(
        out, model={k: v.detach().cpu() for k, v in net.state_dict().items()}, model_config=net.model_config,
        class_names=list(ds.meta.class_names),
        dataset={"name": cfg.data.dataset, "split": cfg.data.split, "root": str(cfg.data.root), "num_images": len(ds)},
        train_config=config, weights_source=source,
    )  # fmt: skip
    manifest = build_manifest(
        "train-seg", config, inputs={"masks": cfg.masks}, format_version=seg_checkpoint.VERSION,
        extra={"artifact": out.name, "artifact_sha256": sha256_file(out), "weights_source": source,
               **({"pairing": pairing} if pairing and pairing["forced"] else {})},
        paths=config_paths(cfg), data=data, files=owned_files(cfg.out, OWNED),
    )  # fmt: skip
    write_manifest(cfg.out, manifest)
