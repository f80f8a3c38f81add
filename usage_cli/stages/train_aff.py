"""`usage train-aff`: AffinityNet (PSA step 2) trained on a folder of confident labels.

Input: the label-PNG folder of ``usage psa-labels`` (its manifest pins the seeds it came from).
Output: ``affinity.pt`` (format ``usage-aff-checkpoint``; ``<out>/affinity.pt`` or ``--aff-out``) and
``<out>/manifest.json`` pinning the labels and the checkpoint's sha256; ``<out>/last.pt`` and
``log.jsonl`` come from the shared loop (``--resume`` continues from ``last.pt``). The labels are only
read, so a retraining (other settings, more epochs) never redoes the CRF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from usage_cli.algorithms.affinity import search_offsets
from usage_cli.artifacts import aff_checkpoint, last_checkpoint
from usage_cli.artifacts.claims import Output, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.labels import label_ids, read_label_folder
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_paths,
    input_digest,
    run_config,
    sha256_file,
    up_to_date,
    write_manifest,
)
from usage_cli.data.identity import check_pairing, identity, recorded_data
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine.distributed import barrier, check_device, is_main_process
from usage_cli.engine.loop import fit, loop_config
from usage_cli.engine.resume import check_resume
from usage_cli.errors import ArtifactError, check_options
from usage_cli.models.affinitynet import build_affinitynet, check_crop, load_backbone_weights
from usage_cli.registry import writing
from usage_cli.runtime import MAX_SIZE, Runtime, config_drop, runtime_checks, takes_runtime
from usage_cli.tasks.affinity import AffinityTask, ConfidentLabelSet

STAGE = "train-aff"
LABEL_STAGES = writing("confident")  # the confident labels it trains on


@takes_runtime(STAGE)
@takes_data
@dataclass(frozen=True)
class TrainAffConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {  # what it writes (artifacts/claims.py checks them first)
        "out": Output("--out"),
        "aff_out": Output("--aff-out", "file", "a usage AffinityNet checkpoint", aff_checkpoint.is_aff_checkpoint, aff_checkpoint.FILENAME),
    }
    labels: Path
    out: Path
    data: DataSpec = DataSpec(split="train_aug")
    radius: int = 5
    backbone: str = "resnet50"
    pretrained: bool = True  # both refine-psa presets start AffinityNet from ImageNet weights
    weights: Path | None = None
    img_size: int = 224
    epochs: int = 5
    batch_size: int = 8
    crop: int = 448
    scale: tuple[float, float] = (0.7, 1.3)
    lr: float = 0.01
    weight_decay: float = 5e-4
    head_lr_mult: float = 10.0
    aff_out: Path | None = None  # default <out>/affinity.pt
    runtime: Runtime = Runtime()


def resolve(cfg: TrainAffConfig) -> TrainAffConfig:
    """Every option in its range (a chain asks it of its step before any step runs)."""
    check_options([
        *runtime_checks(cfg.runtime),
        (2 <= cfg.radius <= 16, f"--radius must be in 2..16, got {cfg.radius}"),
        (cfg.epochs >= 1 and cfg.batch_size >= 1, "--epochs and --batch-size must be positive"),
        (16 <= cfg.crop <= MAX_SIZE, f"--crop must be in 16..{MAX_SIZE}, got {cfg.crop}"),
        (16 <= cfg.img_size <= MAX_SIZE, f"--img-size must be in 16..{MAX_SIZE}, got {cfg.img_size}"),
        (cfg.lr > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.head_lr_mult > 0, f"--head-lr-mult must be positive, got {cfg.head_lr_mult}"),
        (cfg.weight_decay >= 0, f"--weight-decay must not be negative, got {cfg.weight_decay}"),
        (0 < cfg.scale[0] <= cfg.scale[1], f"scale range must be 0 < low <= high, got {cfg.scale}"),
        (cfg.weights is None or Path(cfg.weights).exists(), f"{cfg.weights}: --weights file not found"),
    ])
    return cfg


def check(cfg: TrainAffConfig) -> None:
    """Everything a run refuses before its work, for a chain to ask before its earlier steps: the
    options, the network buildable (backbone, crop, weights), an unfinished run that may not be replaced."""
    cfg = resolve(cfg)
    check_device(cfg.runtime.device)
    net = build_affinitynet(model_config(cfg))  # cheap: a bad backbone or crop fails now, not after the CRF
    check_crop(net, cfg.crop)
    if cfg.weights is not None or cfg.pretrained:  # also: ImageNet weights that cannot be had offline
        load_backbone_weights(net, pretrained=cfg.pretrained, weights=str(cfg.weights) if cfg.weights else None)
    check_resume(cfg.out, resume=cfg.runtime.resume, force=cfg.runtime.force, epochs=cfg.epochs)


def model_config(cfg: TrainAffConfig) -> dict:
    return {"backbone": cfg.backbone, "img_size": cfg.img_size, "radius": cfg.radius}


def affinity_path(cfg: TrainAffConfig) -> Path:
    return Path(cfg.aff_out) if cfg.aff_out else Path(cfg.out) / aff_checkpoint.FILENAME


def manifest_config(cfg: TrainAffConfig) -> dict:
    """What defines the training: the manifest's config (and the resume key of ``last.pt``)."""
    return run_config(cfg, config_drop(cfg, ("out", "aff_out")))


def is_done(cfg: TrainAffConfig) -> bool:
    """Whether ``cfg.out`` holds this training, finished, on the same labels, and its ``affinity.pt``
    is still the published one (a chain skips it)."""
    return up_to_date(cfg.out, STAGE, manifest_config(cfg), {"labels": cfg.labels}, artifact=affinity_path(cfg))


@owns_outputs
def run(cfg: TrainAffConfig) -> Path:
    """Train; returns the path of the written ``affinity.pt``."""
    # 1. options and network, the labels (finished, of this dataset, covering the split), the output folder
    check(cfg)
    rt = cfg.runtime
    manifest = read_label_folder(cfg.labels, LABEL_STAGES)
    ds = cfg.data.load()
    check_class_names(cfg.labels, manifest.get("class_names"), ds.meta.class_names, "make the labels from this dataset, or pass its --classes")
    have = label_ids(cfg.labels)
    pairing = check_pairing(cfg.labels, recorded_data(manifest), ds, force=rt.force, ids=have, use="train on them")
    missing = [r.id for r in ds.records if r.id not in have]
    if missing:
        raise ArtifactError(f"{cfg.labels}: no confident label for {len(missing)} of {len(ds)} ids of split '{ds.split}' (first: {missing[0]}); run `usage psa-labels --split {ds.split}`")
    data = identity(ds, cfg.data.split_file)  # reads the image headers
    config, aff_path = manifest_config(cfg), affinity_path(cfg)
    owned = ((aff_path.name,) if aff_path.parent == Path(cfg.out) else ()) + (() if rt.resume else last_checkpoint.FILES)
    sources = {"--labels": (cfg.labels, input_digest(cfg.labels)), "the data set": (cfg.data.root, data["fingerprint"])}
    check_resume(cfg.out, resume=rt.resume, force=rt.force, epochs=cfg.epochs, sources=sources)  # before the claim: a refused resume removes nothing
    claim_out(cfg.out, STAGE, config, owned, force=rt.force, ignore=("epochs",) if rt.resume else ())
    # 2. network and data
    torch.manual_seed(rt.seed)  # the new layers' initialisation is part of the run
    net = build_affinitynet(model_config(cfg))
    source = load_backbone_weights(net, pretrained=cfg.pretrained, weights=str(cfg.weights) if cfg.weights else None)
    net.model_config.update(net.expected_norm())  # the input normalisation it trains with, for the walk
    train_set = ConfidentLabelSet(ds.records, cfg.labels, ds.meta.num_classes, crop=cfg.crop, stride=net.stride, scale=cfg.scale, norm=net.input_norm())
    # 3. the shared loop (SGD, poly schedule, new layers at --head-lr-mult; AMP on CUDA, DDP under torchrun)
    loop = loop_config(rt, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer="sgd", weight_decay=cfg.weight_decay, schedule="poly")
    task = AffinityTask(net, search_offsets(cfg.radius), cfg.head_lr_mult)
    task = fit(task, train_set, loop, cfg.out, resume=rt.resume, stage_config=config, sources=sources)
    # 4. the checkpoint and the manifest (rank 0)
    if is_main_process():
        aff_checkpoint.save_aff_checkpoint(
            aff_path, model={k: v.detach().cpu() for k, v in task.net.state_dict().items()}, model_config=task.net.model_config,
            class_names=list(ds.meta.class_names), train_config=config, weights_source=source,
        )  # fmt: skip
        manifest = build_manifest(
            STAGE, config, inputs={"labels": cfg.labels}, format_version=aff_checkpoint.VERSION,
            extra={"artifact": str(aff_path), "artifact_sha256": sha256_file(aff_path), "weights_source": source,
                   **({"pairing": pairing} if pairing and pairing["forced"] else {})},
            paths=config_paths(cfg), data=data, files=owned_files(cfg.out, tuple(dict.fromkeys((*owned, *last_checkpoint.FILES)))),
        )  # fmt: skip
        write_manifest(cfg.out, manifest)
    barrier()  # the checkpoint is on disk before any rank walks with it
    return aff_path
