"""`usage refine-psa`: seeds -> pseudo masks with PSA's AffinityNet and random walk, three stages in order.

1. ``usage psa-labels`` -> ``<out>/confident/`` (confident CRF labels of the training split, a label
   folder with its manifest);
2. ``usage train-aff`` -> ``<out>/affinity-train/`` (``last.pt``, ``log.jsonl``, manifest) and the
   network ``<out>/affinity.pt`` (or ``--aff-out``). ``--affinity FILE`` skips steps 1-2 and walks with
   an AffinityNet trained before (PSA's use: train once, then refine any split);
3. the walk of ``usage psa-walk`` over the inference split -> ``<out>/<id>.png``, then
   ``<out>/manifest.json`` (stage ``refine-psa``, this command's whole config).

A rerun skips step 1 or 2 when its folder's manifest says it is done with the same options on the
same inputs (so changing a walk setting redoes only the walk); ``--force`` replaces this command's
masks, the steps' folders follow their own manifests. Under ``torchrun`` every step shards its work
over the ranks and rank 0 writes the manifests.

Presets: ``psa`` (la 4 / ha 32, beta 8, logt 8, background ``(1 - max)^16``) and ``mctformer``
(la 1 / ha 12, beta 8, logt 6, constant background 0.39; what USAGE used). Any value can be set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from usage_cli.algorithms.thresholds import auto_constants
from usage_cli.artifacts import aff_checkpoint
from usage_cli.artifacts.claims import claim_out, owned_files
from usage_cli.artifacts.compat import check_seeds_cover
from usage_cli.artifacts.labels import FOLDER_VERSION, clear_legacy_cache, finish_png_folder
from usage_cli.artifacts.lock import holds_out_lock
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_hash,
    config_paths,
    run_config,
    sha256_file,
    write_manifest,
)
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data import DataSpec
from usage_cli.data.identity import check_pairing, identity, recorded_data
from usage_cli.engine.distributed import (
    barrier,
    check_device,
    init_distributed,
    is_main_process,
    worker_count,
)
from usage_cli.engine.resume import check_resume
from usage_cli.errors import ConfigError, check_options
from usage_cli.presets import AUTO_CUTS, DEFAULT_REFINE_PRESET, REFINE_PSA
from usage_cli.progress import log
from usage_cli.runtime import Runtime, config_drop, runtime_checks, takes_runtime
from usage_cli.stages import psa_labels, psa_walk, train_aff

STAGE = "refine-psa"
PRESETS = REFINE_PSA  # usage_cli/presets.py (shown in --help)
CONFIDENT, AFFINITY_TRAIN = "confident", "affinity-train"  # the steps' folders in --out


@takes_runtime(STAGE)
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
    preset: str = DEFAULT_REFINE_PRESET
    crf_la: float | None = None  # None: from the preset
    crf_ha: float | None = None
    beta: float | None = None
    logt: int | None = None
    bg_mode: str | None = None  # power | const
    bg_power: float | None = None
    bg_const: float | None = None
    walk_norm: str | None = None
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
    runtime: Runtime = Runtime()


def resolve(cfg: RefinePsaConfig) -> RefinePsaConfig:
    """Fill the unset walk / label settings from the preset and check every value."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    if cfg.preset == "auto" and Path(cfg.seeds).is_file():  # the cuts and the walk's background from the seeds' own threshold
        # (without the store, --print-config shows them unset: they come from it)
        auto = auto_constants(cfg.seeds, AUTO_CUTS)
        cfg = replace(cfg, **{k: auto[k] for k in ("crf_la", "crf_ha", "bg_const") if getattr(cfg, k) is None})
    cfg = replace(cfg, **{k: v for k, v in PRESETS[cfg.preset].items() if getattr(cfg, k) is None})
    check_options([
        *runtime_checks(cfg.runtime),
        (None in (cfg.crf_la, cfg.crf_ha) or 0 < cfg.crf_la <= cfg.crf_ha, f"need 0 < --crf-la <= --crf-ha, got {cfg.crf_la} / {cfg.crf_ha}"),
        *psa_walk.walk_checks(cfg),
        (cfg.epochs >= 1 and cfg.batch_size >= 1, "--epochs and --batch-size must be positive"),
        (cfg.crop >= 16, f"--crop must be at least 16, got {cfg.crop}"),
        (cfg.img_size >= 16, f"--img-size must be at least 16, got {cfg.img_size}"),
        (cfg.lr > 0 and cfg.head_lr_mult > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must not be negative, got {cfg.weight_decay}"),
        (0 < cfg.scale[0] <= cfg.scale[1], f"scale range must be 0 < low <= high, got {cfg.scale}"),
        (cfg.weights is None or Path(cfg.weights).exists(), f"{cfg.weights}: --weights file not found"),
        (cfg.affinity is None or Path(cfg.affinity).exists(), f"{cfg.affinity}: --affinity file not found; train one with `usage refine-psa` first"),
    ])
    return cfg


def steps(cfg: RefinePsaConfig) -> tuple[psa_labels.PsaLabelsConfig, train_aff.TrainAffConfig, psa_walk.PsaWalkConfig]:
    """The configs of the three stages this run chains (of a resolved ``cfg``)."""
    out, rt = Path(cfg.out), replace(cfg.runtime, workers=worker_count(cfg.runtime))
    data = {"root": cfg.root, "dataset": cfg.dataset, "split": cfg.split, "split_file": cfg.split_file, "classes_file": cfg.classes_file}
    labels = psa_labels.PsaLabelsConfig(seeds=cfg.seeds, out=out / CONFIDENT, preset=cfg.preset, crf_la=cfg.crf_la, crf_ha=cfg.crf_ha, crf=cfg.crf, runtime=rt, **data)
    aff = train_aff.TrainAffConfig(
        labels=labels.out, out=out / AFFINITY_TRAIN, radius=cfg.radius, backbone=cfg.backbone, pretrained=cfg.pretrained,
        weights=cfg.weights, img_size=cfg.img_size, epochs=cfg.epochs, batch_size=cfg.batch_size, crop=cfg.crop, scale=cfg.scale,
        lr=cfg.lr, weight_decay=cfg.weight_decay, head_lr_mult=cfg.head_lr_mult, aff_out=cfg.aff_out or out / aff_checkpoint.FILENAME, runtime=rt,
        **data,
    )  # fmt: skip
    infer = cfg.infer_split is not None or cfg.infer_split_file is not None
    data.update(split=cfg.infer_split or cfg.split, split_file=cfg.infer_split_file if infer else cfg.split_file)
    walk = psa_walk.PsaWalkConfig(
        seeds=cfg.seeds, affinity=cfg.affinity or train_aff.affinity_path(aff), out=out, preset=cfg.preset, beta=cfg.beta, logt=cfg.logt,
        bg_mode=cfg.bg_mode, bg_power=cfg.bg_power, bg_const=cfg.bg_const, walk_norm=cfg.walk_norm, radius=cfg.radius, walk=cfg.walk, runtime=rt, **data,
    )  # fmt: skip
    return labels, aff, walk


@holds_out_lock
def run(cfg: RefinePsaConfig) -> dict:
    """Run the three steps; returns {"images", "out", "affinity", "trained"}."""
    # 1. options, networks and inputs, checked before any work; the output folder
    cfg = resolve(cfg)
    rt = cfg.runtime
    labels_cfg, aff_cfg, walk_cfg = steps(cfg)
    check_device(rt.device)
    if cfg.affinity is None:  # backbone, crop, weights; an unfinished AffinityNet run: before the CRF step
        train_aff.check(aff_cfg)
        check_resume(aff_cfg.out, resume=rt.resume, force=rt.force, epochs=cfg.epochs)
    else:
        psa_walk.check_affinity(cfg.affinity)
    config = run_config(cfg, config_drop(cfg, ("aff_out",)))
    out = claim_out(cfg.out, STAGE, config, ("*.png",), force=rt.force)
    info = init_distributed(rt.device, rt.timeout)
    walk_ds = DataSpec.of(walk_cfg).load()
    data = identity(walk_ds, walk_cfg.split_file)  # reads the image headers
    with SeedReader(cfg.seeds) as reader:  # a missing or incomplete store is an error naming gen-seeds
        # the seeds were made from this data set (before the per-image checks: it names the cause)
        pairing = check_pairing(cfg.seeds, recorded_data(reader.attrs), walk_ds, force=rt.force, ids=reader.ids(), use="refine them")
        check_seeds_cover(reader, cfg.seeds, walk_ds)
    seeds_sha = sha256_file(cfg.seeds)
    # 2. confident labels and AffinityNet, each unless its folder already holds it
    trained = False
    if cfg.affinity is None:
        if is_main_process():
            clear_legacy_cache(labels_cfg.out)
        barrier()
        _step(psa_labels, labels_cfg, rt.quiet)
        trained = _step(train_aff, aff_cfg, rt.quiet)
    aff_path = Path(walk_cfg.affinity)
    # 3. the walk, then this command's manifest
    key = {"config_hash": config_hash(config), "seeds_sha256": seeds_sha, "affinity_sha256": sha256_file(aff_path)}
    with SeedReader(cfg.seeds) as reader:
        psa_walk.walk(walk_cfg, walk_ds, reader, key, STAGE, info)
    if info.is_main:
        manifest = build_manifest(
            STAGE, config, inputs={"seeds": cfg.seeds, **({"affinity": aff_path} if cfg.affinity else {})},
            format_version=FOLDER_VERSION,
            extra={"images": len(walk_ds), "split": walk_ds.split, "class_names": list(walk_ds.meta.class_names),
                   "affinity": str(aff_path), "affinity_sha256": key["affinity_sha256"], "affinity_trained_now": trained,
                   **({"pairing": pairing} if pairing and pairing["forced"] else {}),
                   **({"auto_constants": auto_constants(cfg.seeds, AUTO_CUTS)} if cfg.preset == "auto" else {})},
            paths=config_paths(cfg), data=data, files=owned_files(out, ("*.png", aff_checkpoint.FILENAME, AFFINITY_TRAIN, CONFIDENT)),
        )  # fmt: skip
        write_manifest(out, manifest)
        finish_png_folder(out, stage=STAGE)
    barrier()
    return {"images": len(walk_ds), "out": str(out), "affinity": str(aff_path), "trained": trained}


def _step(stage, step_cfg, quiet: bool) -> bool:
    """Run one stage unless its folder's manifest says it is done; whether it ran."""
    if stage.is_done(step_cfg):
        log(f"{STAGE}: {step_cfg.out} is up to date ({stage.STAGE}, same options and inputs): kept", quiet or not is_main_process())
        return False
    stage.run(step_cfg)
    return True
