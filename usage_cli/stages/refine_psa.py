"""`usage refine-psa`: seeds -> pseudo masks with PSA's AffinityNet and random walk.

1. Confident labels (``<out>/confident/<id>.png``) of the training split: seeds with a low and a
   high background power, each refined by a dense CRF in a process pool, the band between ignored.
2. AffinityNet trained on them with the shared loop (``<out>/affinity-train/``: ``last.pt``,
   ``log.jsonl``), published as ``<out>/affinity.pt`` (or ``--aff-out``). An ``affinity.pt`` of the
   same training settings and seeds is reused. ``--affinity FILE`` skips steps 1-2 and walks with an
   AffinityNet trained before (PSA's use: train once on train_aug, then refine any split).
3. Random walk of every inference-split seed map (+ background channel) with the predicted
   affinities; argmax at the original size -> ``<out>/<id>.png``; then ``<out>/manifest.json``.

Under ``torchrun`` every rank takes its share of the confident labels and of the walked ids (one PNG
per id, so no merge is needed), AffinityNet trains with DDP, and rank 0 alone writes the checkpoint,
the marker and the manifest.

Presets: ``psa`` (la 4 / ha 32, beta 8, logt 8, background ``(1 - max)^16``) and ``mctformer``
(la 1 / ha 12, beta 8, logt 6, constant background 0.39; what USAGE used). Any value can be set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from usage_cli.algorithms import psa_refine
from usage_cli.algorithms.affinity import confident_label_for_image, search_offsets
from usage_cli.algorithms.crf import crf_map
from usage_cli.artifacts import aff_checkpoint
from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.labels import write_label_png
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_hash,
    config_paths,
    run_config,
    sha256_file,
    write_manifest,
)
from usage_cli.artifacts.outdir import (
    claim_out,
    finish_png_folder,
    holds_out_lock,
    owned_files,
    resume_png_folder,
    start_png_folder,
)
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data import DataSpec
from usage_cli.data.identity import check_pairing, identity, recorded_data
from usage_cli.data.io import read_image
from usage_cli.data.joint_transforms import normalize
from usage_cli.engine.distributed import (
    DistInfo,
    barrier,
    check_device,
    init_distributed,
    is_main_process,
    resolve_device,
    use_amp,
)
from usage_cli.engine.loop import LoopConfig, check_resume, fit
from usage_cli.errors import ArtifactError, ConfigError, check_options
from usage_cli.models.affinitynet import (
    build_affinitynet,
    load_affinitynet,
    load_backbone_weights,
    pad_to_multiple,
)
from usage_cli.presets import REFINE_PSA
from usage_cli.progress import log, make_progress
from usage_cli.tasks.affinity import AffinityTask, ConfidentLabelSet

PRESETS = REFINE_PSA  # usage_cli/presets.py (shown in --help)
CHUNK = 64  # images whose seed maps are held at once for the CRF workers


@dataclass(frozen=True)
class RefinePsaConfig:
    seeds: Path
    root: Path
    out: Path
    dataset: str = "voc"
    split: str = "train_aug"
    split_file: Path | None = None
    classes_file: Path | None = None
    infer_split: str | None = None  # default: the training split
    infer_split_file: Path | None = None
    preset: str = "mctformer"
    crf_la: float | None = None  # None: from the preset
    crf_ha: float | None = None
    beta: float | None = None
    logt: int | None = None
    bg_mode: str | None = None  # power | const
    bg_power: float | None = None
    bg_const: float | None = None
    crf: bool = True
    radius: int = 5
    backbone: str = "resnet50"
    pretrained: bool | None = None  # None: from the preset (both start AffinityNet from ImageNet weights)
    weights: Path | None = None
    img_size: int = 224
    epochs: int = 5
    batch_size: int = 8
    crop: int = 448
    scale: tuple[float, float] = (0.7, 1.3)
    lr: float = 0.01
    weight_decay: float = 5e-4
    head_lr_mult: float = 10.0
    walk: str = "auto"  # auto | dense | local
    aff_out: Path | None = None
    affinity: Path | None = None  # a trained AffinityNet: skip confident labels and training
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA (float16), off on the CPU
    sync_bn: bool = False  # SyncBatchNorm under torchrun (CUDA)
    timeout: float = 60.0  # process-group timeout (minutes) under torchrun
    workers: int = 2
    seed: int = 0
    resume: bool = False
    force: bool = False
    quiet: bool = False


def resolve(cfg: RefinePsaConfig) -> RefinePsaConfig:
    """Fill the unset walk / label settings from the preset and check every value."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    preset = PRESETS[cfg.preset]
    cfg = replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})
    check_options([
        (cfg.bg_mode in ("power", "const"), f"--bg-mode must be power or const, got {cfg.bg_mode!r}"),
        (cfg.walk in ("auto", "dense", "local"), f"--walk must be auto, dense or local, got {cfg.walk!r}"),
        (0 < cfg.crf_la <= cfg.crf_ha, f"need 0 < --crf-la <= --crf-ha, got {cfg.crf_la} / {cfg.crf_ha}"),
        (cfg.beta > 0 and 0 <= cfg.logt <= 12, f"need --beta > 0 and 0 <= --logt <= 12, got {cfg.beta} / {cfg.logt}"),
        (0 <= cfg.bg_const <= 1 and cfg.bg_power > 0, "need 0 <= --bg-const <= 1 and --bg-power > 0"),
        (2 <= cfg.radius <= 16, f"--radius must be in 2..16, got {cfg.radius}"),
        (cfg.epochs >= 1 and cfg.batch_size >= 1, "--epochs and --batch-size must be positive"),
        (cfg.crop >= 16, f"--crop must be at least 16, got {cfg.crop}"),
        (cfg.img_size >= 16, f"--img-size must be at least 16, got {cfg.img_size}"),
        (cfg.lr > 0 and cfg.head_lr_mult > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must not be negative, got {cfg.weight_decay}"),
        (cfg.workers >= 0, f"--workers must not be negative, got {cfg.workers}"),
        (not (cfg.resume and cfg.force), "--resume continues a run and --force starts it over: pass one of them"),
        (0 < cfg.scale[0] <= cfg.scale[1], f"scale range must be 0 < low <= high, got {cfg.scale}"),
        (cfg.weights is None or Path(cfg.weights).exists(), f"{cfg.weights}: --weights file not found"),
        (cfg.affinity is None or Path(cfg.affinity).exists(), f"{cfg.affinity}: --affinity file not found; train one with `usage refine-psa` first"),
    ])
    return cfg


RUNTIME = ("device", "workers", "quiet", "resume", "force", "aff_out", "timeout")  # not in the config (hash)
LABEL_KEYS = ("dataset", "root", "split", "split_file", "classes_file", "crf_la", "crf_ha", "crf")
TRAIN_KEYS = LABEL_KEYS + (
    "radius", "backbone", "pretrained", "weights", "img_size", "epochs", "batch_size", "crop", "scale", "lr",
    "weight_decay", "head_lr_mult", "seed",
)  # fmt: skip


@holds_out_lock
def run(cfg: RefinePsaConfig) -> dict:
    """Run the three steps; returns {"images", "out", "affinity", "trained"}."""

    cfg = resolve(cfg)
    check_device(cfg.device)  # before any work: the walk's device is resolved only after training
    check_networks(cfg)  # before the CRF step: backbone, crop, weights or the given AffinityNet
    if cfg.affinity is None:
        check_resume(Path(cfg.out) / "affinity-train", resume=cfg.resume, force=cfg.force, epochs=cfg.epochs)
    out = claim_out(cfg.out, "refine-psa", run_config(cfg, RUNTIME), ("*.png",), force=cfg.force)
    info = init_distributed(cfg.device, cfg.timeout)
    # 1. inputs: the split(s) and seeds covering them
    train_ds = DataSpec.of(cfg).load()
    if cfg.infer_split is None and cfg.infer_split_file is None:
        infer_ds = train_ds
    else:
        infer_ds = DataSpec.of(cfg).load(cfg.infer_split or cfg.split, cfg.infer_split_file)
    data = identity(infer_ds, cfg.infer_split_file if infer_ds is not train_ds else cfg.split_file)  # reads the image headers
    with SeedReader(cfg.seeds) as reader:  # a missing or incomplete store is an error naming gen-seeds
        seeds_sha = sha256_file(cfg.seeds)
        pairing = check_seed_pairing(reader, cfg, train_ds, infer_ds)  # before the per-image checks: it names the cause
        check_seeds(reader, cfg.seeds, infer_ds)
        if cfg.affinity is not None:  # 2-3. a trained AffinityNet (refine_split loads it first): nothing to learn
            aff_path, trained = Path(cfg.affinity), False
        else:  # 2. confident labels, 3. AffinityNet
            if infer_ds is not train_ds:
                check_seeds(reader, cfg.seeds, train_ds)
            label_dir = make_confident_labels(cfg, train_ds, reader, {"seeds_sha256": seeds_sha, **run_config(cfg, RUNTIME, LABEL_KEYS)}, info)
            aff_path, trained = train_or_reuse(cfg, train_ds, label_dir, {"seeds_sha256": seeds_sha, **run_config(cfg, RUNTIME, TRAIN_KEYS)})
            barrier()  # rank 0 has written the checkpoint
        config = run_config(cfg, RUNTIME)
        key = {"config_hash": config_hash(config), "seeds_sha256": seeds_sha, "affinity_sha256": sha256_file(aff_path)}
        # 4. random walk
        refine_split(cfg, infer_ds, reader, aff_path, key, info)
    # 5. manifest
    if info.is_main:
        manifest = build_manifest(
            "refine-psa", config, inputs={"seeds": cfg.seeds, **({"affinity": aff_path} if cfg.affinity else {})},
            format_version=aff_checkpoint.VERSION,
            extra={"images": len(infer_ds), "split": infer_ds.split, "class_names": list(infer_ds.meta.class_names),
                   "affinity": str(aff_path), "affinity_sha256": key["affinity_sha256"], "affinity_trained_now": trained,
                   **({"pairing": pairing} if pairing and pairing["forced"] else {})},
            paths=config_paths(cfg), data=data, files=owned_files(out, ("*.png", "affinity.pt", "affinity-train")),
        )  # fmt: skip
        write_manifest(out, manifest)
        finish_png_folder(out, stage="refine-psa")
    barrier()
    return {"images": len(infer_ds), "out": str(out), "affinity": str(aff_path), "trained": trained}


def check_networks(cfg: RefinePsaConfig) -> None:
    """Build the AffinityNet (or load the given one) once, cheaply, so a bad backbone, crop or
    weights file fails before the confident-label step rather than after it."""
    if cfg.affinity is not None:
        load_affinitynet(Path(cfg.affinity), "cpu")
        return

    net = build_affinitynet({"backbone": cfg.backbone, "img_size": cfg.img_size, "radius": cfg.radius})
    if cfg.crop % net.pad_multiple:
        raise ConfigError(f"--crop must be a multiple of {net.pad_multiple} for backbone {cfg.backbone}, got {cfg.crop}")
    if cfg.weights is not None or cfg.pretrained:  # also: ImageNet weights that cannot be had offline
        load_backbone_weights(net, pretrained=bool(cfg.pretrained), weights=str(cfg.weights) if cfg.weights else None)


def check_seeds(reader, path: Path, ds) -> None:
    """The seed store must be of this dataset's classes, cover every id of the split, and hold seeds
    only for the classes each image's labels list."""
    attrs = reader.attrs
    k = attrs.get("num_classes")
    if k is not None and int(k) != ds.meta.num_classes:
        raise ArtifactError(f"{path}: seeds are of {k} classes but dataset {ds.meta.name} has {ds.meta.num_classes}; rerun `usage gen-seeds` on this dataset")
    check_class_names(path, attrs.get("class_names"), ds.meta.class_names, "rerun `usage gen-seeds` on this dataset")
    have = set(reader.ids())
    missing = [r.id for r in ds.records if r.id not in have]
    if missing:
        raise ArtifactError(
            f"{path}: no seeds for {len(missing)} of {len(ds)} ids of split '{ds.split}' (first: {missing[0]}); "
            f"the seeds were made for another split — run `usage gen-seeds --split {ds.split}`"
        )
    for r in ds.records:
        extra = sorted(set(int(x) for x in reader.keys(r.id)) - set(r.labels))
        if extra:
            raise ArtifactError(
                f"{path}: the seeds of {r.id} are for classes {extra} its image labels do not list ({list(r.labels)}); "
                f"the seeds were made with other labels — rerun `usage gen-seeds` with this dataset's labels"
            )


def check_seed_pairing(reader, cfg: RefinePsaConfig, train_ds, infer_ds) -> dict | None:
    """The seeds were made from the data set given (their recorded fingerprint, compared on the split
    that holds all their ids); ``--force`` uses them anyway. What the manifest records about it."""
    recorded, ids = recorded_data(reader.attrs), reader.ids()
    for ds in ([train_ds] if cfg.affinity is None and train_ds is not infer_ds else []) + [infer_ds]:
        pairing = check_pairing(cfg.seeds, recorded, ds, force=cfg.force, ids=ids, use="refine them")
        if pairing is not None:
            return pairing
    return None


def _confident_job(job: tuple) -> None:
    """One image's confident label, written as a PNG (runs in a CRF worker process)."""

    image_path, cams, keys, out_path, la, ha, crf = job
    image = read_image(image_path)
    if image.shape[:2] != cams.shape[1:]:
        raise ArtifactError(f"seeds of {Path(out_path).stem} are {cams.shape[1:]} but image {image_path} is {image.shape[:2]}; the seeds belong to other images")
    write_label_png(out_path, confident_label_for_image(image, cams.astype(np.float32), keys, la, ha, {} if crf else None))


def make_confident_labels(cfg: RefinePsaConfig, ds, reader, key: dict, info=None) -> Path:
    """Write ``<out>/confident/<id>.png`` for the training split (kept across runs of the same key).

    Under torchrun each rank writes every ``world_size``-th of the missing labels."""

    info = info or DistInfo()
    label_dir = Path(cfg.out) / "confident"
    key_path = label_dir / "key.json"
    if info.is_main:
        same = key_path.exists() and json.loads(key_path.read_text()) == key
        if not same and label_dir.exists():
            for p in label_dir.glob("*.png"):
                p.unlink()
        label_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(key_path, json.dumps(key, sort_keys=True) + "\n")
    barrier()
    todo = [r for r in ds.records if not (label_dir / f"{r.id}.png").exists()]
    barrier()  # every rank has listed the same missing labels before any rank writes one
    todo = todo[info.rank :: info.world_size]
    with make_progress(cfg.quiet or not info.is_main) as progress:
        bar = progress.add_task(f"confident labels (la {cfg.crf_la:g} / ha {cfg.crf_ha:g})", total=len(todo), info="")
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            jobs = []
            for rec in chunk:
                e = reader.read(rec.id)
                jobs.append((str(rec.image_path), e.cam, [int(k) for k in e.keys], str(label_dir / f"{rec.id}.png"), cfg.crf_la, cfg.crf_ha, cfg.crf))
            crf_map(_confident_job, jobs, cfg.workers)
            progress.update(bar, advance=len(chunk))
    barrier()
    log(f"refine-psa: confident labels of {len(ds)} images in {label_dir}", cfg.quiet or not info.is_main)
    return label_dir


def train_or_reuse(cfg: RefinePsaConfig, ds, label_dir: Path, train_config: dict) -> tuple[Path, bool]:
    """Train AffinityNet on the confident labels, or reuse an ``affinity.pt`` of the same settings."""

    aff_path = Path(cfg.aff_out) if cfg.aff_out else Path(cfg.out) / "affinity.pt"
    if aff_checkpoint.trained_with(aff_path, train_config):
        log(f"refine-psa: reusing {aff_path} (same seeds and training settings)", cfg.quiet)
        return aff_path, False
    model_config = {"backbone": cfg.backbone, "img_size": cfg.img_size, "radius": cfg.radius}
    torch.manual_seed(cfg.seed)  # the new layers' initialisation is part of the run
    net = build_affinitynet(model_config)
    source = load_backbone_weights(net, pretrained=cfg.pretrained, weights=str(cfg.weights) if cfg.weights else None)
    if cfg.crop % net.pad_multiple:
        raise ConfigError(f"--crop must be a multiple of {net.pad_multiple} for backbone {cfg.backbone}, got {cfg.crop}")
    train_set = ConfidentLabelSet(ds.records, label_dir, ds.meta.num_classes, crop=cfg.crop, stride=net.stride, scale=cfg.scale)
    loop = LoopConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer="sgd", weight_decay=cfg.weight_decay,
        schedule="poly", workers=cfg.workers, device=cfg.device, amp=cfg.amp, sync_bn=cfg.sync_bn, timeout=cfg.timeout,
        seed=cfg.seed, quiet=cfg.quiet,
    )  # fmt: skip
    task = AffinityTask(net, search_offsets(cfg.radius), cfg.head_lr_mult)
    task = fit(task, train_set, loop, Path(cfg.out) / "affinity-train", resume=cfg.resume, run_config=train_config)
    if is_main_process():
        aff_checkpoint.save_aff_checkpoint(
            aff_path, model={k: v.detach().cpu() for k, v in task.net.state_dict().items()}, model_config=model_config,
            class_names=list(ds.meta.class_names), train_config=train_config, weights_source=source,
        )  # fmt: skip
    return aff_path, True


def _features(net, device: str, amp: bool | None):
    """The AffinityNet's forward as :func:`psa_refine.refine_image` calls it (autocast on ``device``)."""

    enabled = use_amp(amp, device)

    def features(x):
        with torch.autocast(device_type=torch.device(device).type, enabled=enabled):
            return net(x)

    return features


def walk_settings(cfg: RefinePsaConfig) -> psa_refine.WalkSettings:
    return psa_refine.WalkSettings(
        radius=cfg.radius, beta=cfg.beta, logt=cfg.logt, bg_mode=cfg.bg_mode, bg_power=cfg.bg_power, bg_const=cfg.bg_const,
        method=cfg.walk,
    )  # fmt: skip


def refine_split(cfg: RefinePsaConfig, ds, reader, aff_path: Path, key: dict, info=None) -> None:
    """Write ``<out>/<id>.png`` for every id of ``ds`` (resuming an interrupted run of the same key).

    Under torchrun each rank walks every ``world_size``-th of the remaining ids."""

    info = info or DistInfo()
    out = Path(cfg.out)
    device = str(resolve_device(cfg.device, info))
    net, _ = load_affinitynet(aff_path, device)
    features, settings = _features(net, device, cfg.amp), walk_settings(cfg)
    done = resume_png_folder(out, key, stage="refine-psa", force=cfg.force, main=info.is_main)
    barrier()  # every rank has read the marker before rank 0 replaces it
    if info.is_main:
        start_png_folder(out, key, stage="refine-psa")
    barrier()
    todo = [r for r in ds.records if r.id not in done][info.rank :: info.world_size]
    with make_progress(cfg.quiet or not info.is_main) as progress:
        bar = progress.add_task(f"random walk {ds.split}", total=len(todo), info="")
        for rec in todo:
            e = reader.read(rec.id)
            image = read_image(rec.image_path)
            if image.shape[:2] != e.cam.shape[1:]:
                raise ArtifactError(f"{cfg.seeds}: seeds of {rec.id} are {e.cam.shape[1:]} but image {rec.image_path} is {image.shape[:2]}")
            x = pad_to_multiple(normalize(image)[None].to(device), net.pad_multiple)
            label = psa_refine.refine_image(features, x, e.cam.astype(np.float32), [int(k) for k in e.keys], settings, net.stride)
            write_label_png(out / f"{rec.id}.png", label)
            progress.update(bar, advance=1)
    barrier()  # every rank's masks are on disk before rank 0 writes the manifest
