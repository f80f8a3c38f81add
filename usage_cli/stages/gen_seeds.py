"""`usage gen-seeds`: seed areas of a trained classifier into a versioned HDF5 store.

Per image: every scale x flip view through the classifier, fused into one map (``algorithms/cam_infer.py``),
the image's classes scaled to [0, 1] (``fuse.seed_maps``; ``auto`` steps: ``cam_infer.resolve_seed_step``).
The finished store's empty seeds and no-ground-truth background threshold (``algorithms/thresholds.py``)
are written into it, said and recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from usage_cli.algorithms.cam_infer import CamInference, resolve_seed_step, views_to_maps
from usage_cli.algorithms.fuse import NORMALISE, seed_maps
from usage_cli.algorithms.thresholds import METHODS, rule_ok, seed_statistics
from usage_cli.artifacts.claims import Output, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_hash,
    config_paths,
    run_config,
    sha256_file,
    write_manifest,
)
from usage_cli.artifacts.seeds import FILENAME, SeedReader, SeedWriter, rank_part
from usage_cli.data.identity import identity
from usage_cli.data.io import read_image
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine.distributed import (
    barrier,
    enable_tf32,
    init_distributed,
    resolve_device,
    use_amp,
    worker_count,
)
from usage_cli.errors import ConfigError, check_options
from usage_cli.models.classifier import load_classifier
from usage_cli.progress import log, make_progress
from usage_cli.report.overlays import write_overlays
from usage_cli.runtime import MAX_SCALE, Runtime, config_drop, runtime_checks, takes_runtime

# options that do not change the seeds: left out of the config (and its hash), with the run-time ones
NOT_IN_CONFIG = ("out", "batch_size", "overlays")
OWNED = (FILENAME, "overlays")  # what a run writes into --out (its manifest lists them)
# options of earlier versions: a --config file (or an earlier run's config) may still hold them
RETIRED = {"attn_budget_gb": "patch affinity no longer keeps attention maps, so forwards are not split"}


@takes_runtime("gen-seeds")
@takes_data
@dataclass(frozen=True)
class GenSeedsConfig:
    RETIRED_OPTIONS: ClassVar[dict[str, str]] = RETIRED
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out")}  # what it writes (artifacts/claims.py checks them first)
    ckpt: Path
    out: Path
    data: DataSpec = DataSpec(split="train")
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    refine: str = "auto"  # auto | patch-affinity | none
    normalise: str = "auto"  # auto | max | minmax | raw-minmax (algorithms/fuse.py; auto: cam_infer.auto_normalise)
    bg_threshold: str = "auto"  # the seeds' foreground/background cut without ground truth: auto | otsu | mean | a number
    affinity_layers: int = 12
    source: str = "auto"  # auto | cam | attn (mct: class-to-patch attention x CAM)
    batch_size: int = 8
    runtime: Runtime = Runtime()  # amp: bfloat16 autocast; workers: image decoding
    overlays: int = 8
    overlay_threshold: float | None = None  # None: the store's bg_threshold


class _Images(torch.utils.data.Dataset):
    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        return r.id, torch.from_numpy(read_image(r.image_path)), r.labels


def check(cfg: GenSeedsConfig) -> None:
    """Every option in its range, before the classifier is loaded."""
    check_options([
        *runtime_checks(cfg.runtime),
        (len(cfg.scales) > 0 and all(0 < s <= MAX_SCALE for s in cfg.scales), f"--scales must list numbers in (0, {MAX_SCALE}], got {','.join(map(str, cfg.scales)) or 'none'}"),
        (cfg.normalise in ("auto", *NORMALISE), f"--normalise must be auto or one of {', '.join(NORMALISE)}, got {cfg.normalise!r}"),
        (cfg.affinity_layers >= 1, f"--affinity-layers must be at least 1, got {cfg.affinity_layers}"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (cfg.overlays >= 0, f"--overlays must not be negative, got {cfg.overlays}"),
        (cfg.overlay_threshold is None or 0 <= cfg.overlay_threshold <= 1, f"--overlay-threshold must lie in [0, 1] (seed maps are in [0, 1]), got {cfg.overlay_threshold}"),
        (rule_ok(cfg.bg_threshold), f"--bg-threshold must be auto, {', '.join(METHODS)} or a number in [0, 1], got {cfg.bg_threshold!r}"),
    ])


@owns_outputs
def run(cfg: GenSeedsConfig) -> Path:
    # 1. classifier, data, config
    check(cfg)
    rt = cfg.runtime
    info = init_distributed(rt.device, rt.timeout)  # checks --device first
    device = resolve_device(rt.device, info)
    enable_tf32(device)
    net, ckpt = load_classifier(cfg.ckpt, device)
    step = seed_step(net, ckpt, cfg)
    refine, source, normalise = step["refine"], step["source"], step["normalise"]
    infer = CamInference(
        scales=tuple(cfg.scales), flip=cfg.flip, refine=refine, source=source, affinity_layers=cfg.affinity_layers,
        amp=use_amp(rt.amp, device), normalise=normalise,
    )  # fmt: skip
    ds = cfg.data.load()
    if ds.meta.num_classes != net.num_classes:
        raise ConfigError(f"{cfg.ckpt}: classifier has {net.num_classes} classes but dataset '{cfg.data.root}' has {ds.meta.num_classes}")
    check_class_names(cfg.ckpt, ckpt.get("class_names"), ds.meta.class_names, "train the classifier on this dataset, or pass its --classes")
    ckpt_sha = sha256_file(cfg.ckpt)
    config = {**run_config(cfg, config_drop(cfg, NOT_IN_CONFIG)), "refine": refine, "source": source, "normalise": normalise, "amp": infer.amp, "checkpoint_sha256": ckpt_sha}
    data = identity(ds, cfg.data.split_file)  # reads every image header: an unreadable one fails before any work
    claim_out(cfg.out, "gen-seeds", config, OWNED, force=rt.force, ignore=RETIRED)
    attrs = {"config": config, "config_hash": config_hash(config), "num_classes": ds.meta.num_classes, "class_names": list(ds.meta.class_names), "stride": 1,
             "data": data}  # fmt: skip
    # 2. this rank's ids, skipping finished ones
    final = cfg.out / FILENAME
    part = final if not info.enabled else rank_part(cfg.out, info.rank)
    records = list(ds.records)[info.rank :: info.world_size]
    writer = SeedWriter(part, attrs, resume=not rt.force)
    try:
        done = writer.done_ids()
        todo = [r for r in records if r.id not in done]
        if done and info.is_main:
            log(f"gen-seeds: resuming {writer.partial}: {len(records) - len(todo)} of {len(records)} images done, {len(todo)} to compute", rt.quiet)
        try:
            _generate(net, todo, cfg, infer, writer, seed_maps, device)
        except KeyboardInterrupt:  # said even with --quiet: what is kept, and that the batches in flight are not
            log(f"gen-seeds: interrupted; {len(writer.done_ids() & {r.id for r in records})} of {len(records)} images are saved "
                f"({writer.partial.name}), the batches in flight (up to --batch-size {cfg.batch_size} images per image size) are "
                f"not: rerun the same command to resume")  # fmt: skip
            raise
        stats = seed_statistics(writer.entries(), cfg.bg_threshold) if not info.enabled else None
        writer.commit(stats and stats["attrs"])
    finally:
        writer.close()
    # 3. merge ranks (sealed there), overlays at the store's threshold, manifest
    barrier()
    if info.enabled and info.is_main:
        stats = _merge([rank_part(cfg.out, r) for r in range(info.world_size)], final, attrs, cfg.bg_threshold)
    barrier()
    if info.is_main:
        empty, thr = stats["empty"], stats["attrs"]
        if cfg.overlays:
            overlay_t = thr["bg_threshold"] if cfg.overlay_threshold is None else cfg.overlay_threshold
            write_overlays(final, ds, cfg.out / "overlays", cfg.overlays, overlay_t)
        if empty["empty_seeds"]:
            log(_empty_warning(empty))  # shown even with --quiet: empty seeds never pass silently
        log(f"gen-seeds: background threshold {thr['bg_threshold']:.2f} ({thr['bg_threshold_rule']}), no ground truth used", rt.quiet)
        extra = {"num_images": len(ds), "seed_network": ckpt.get("seed_network"), "seeds": FILENAME, **empty, **thr, "seed_step": step}
        write_manifest(cfg.out, build_manifest("gen-seeds", config, inputs={"checkpoint": cfg.ckpt}, extra=extra, paths=config_paths(cfg),
                                               data=data, files=owned_files(cfg.out, OWNED)))  # fmt: skip
    return final


def seed_step(net, ckpt: dict, cfg: GenSeedsConfig) -> dict:
    """The resolved --refine / --source / --normalise and why (printed, recorded in the manifest)."""
    step = resolve_seed_step(net, ckpt.get("train_config") or {}, cfg.refine, cfg.source, cfg.normalise, cfg.affinity_layers)
    log(f"gen-seeds: --refine {step['refine']} ({step['refine_rule']}); --normalise {step['normalise']} ({step['normalise_rule']})", cfg.runtime.quiet)
    return step


def _generate(net, todo, cfg, infer: CamInference, writer, seed_maps, device) -> None:
    loader = torch.utils.data.DataLoader(_Images(todo), batch_size=None, num_workers=worker_count(cfg.runtime) if todo else 0)
    pending: dict[tuple[int, int], list] = {}

    def flush(key):
        items = pending.pop(key)
        maps = views_to_maps(net, torch.stack([im for _, im, _ in items]).to(device), infer)  # a module global: tests patch it
        for (image_id, im, keys), fused in zip(items, maps, strict=True):
            cam = seed_maps(fused, keys, infer.normalise).cpu().numpy() if keys else np.zeros((0, *im.shape[:2]), np.float32)
            writer.write(image_id, keys, cam, tuple(im.shape[:2]))
        writer.flush()

    with make_progress(cfg.runtime.quiet) as progress:
        bar = progress.add_task("gen-seeds", total=len(todo), info="")
        for image_id, im, keys in loader:
            key = tuple(im.shape[:2])
            pending.setdefault(key, []).append((image_id, im, tuple(keys)))
            if len(pending[key]) >= cfg.batch_size:
                n = len(pending[key])
                flush(key)
                progress.update(bar, advance=n)
        for key in list(pending):
            n = len(pending[key])
            flush(key)
            progress.update(bar, advance=n)


def _empty_warning(c: dict[str, int]) -> str:
    return (
        f"[yellow]gen-seeds: {c['empty_seeds']} of {c['present_pairs']} present-class seed maps are empty (all zero) "
        f"in {c['images_with_empty_seeds']} images: the classifier gives no positive activation for those classes; "
        f"check its training loss[/]"
    )


def _merge(parts: list[Path], final: Path, attrs: dict, rule: str) -> dict:
    with SeedWriter(final, attrs, resume=False) as out:
        for p in parts:
            with SeedReader(p) as r:
                out.copy_from(r)  # as stored: no decode / re-encode while the other ranks wait
        stats = seed_statistics(out.entries(), rule)  # empty seeds and the no-ground-truth threshold
        out.commit(stats["attrs"])
    for p in parts:
        p.unlink()
    return stats

