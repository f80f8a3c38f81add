"""`usage gen-seeds`: seed areas of a trained classifier into a versioned HDF5 store.

Per image: every scale x flip view goes through the classifier (images of one size batched
together) and the views are fused into one map (``algorithms/cam_infer.py``: optional
patch-affinity refinement, ReLU, un-flip, resize, sum); the maps of the image's classes are divided
by their maximum (``fuse.seed_maps``). Present classes whose map stays all zero ("empty seeds") are
counted from the finished store, warned about and recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from usage_cli.algorithms.cam_infer import (
    CamInference,
    auto_normalise,
    auto_refine,
    resolve_options,
    views_to_maps,
)
from usage_cli.algorithms.fuse import NORMALISE, seed_maps
from usage_cli.algorithms.thresholds import BINS, METHODS, fg_histogram, threshold_from_histogram
from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_hash,
    config_paths,
    run_config,
    sha256_file,
    write_manifest,
)
from usage_cli.artifacts.outdir import claim_out, holds_out_lock, owned_files
from usage_cli.artifacts.seeds import SeedReader, SeedWriter
from usage_cli.data import DataSpec
from usage_cli.data.identity import identity
from usage_cli.data.io import read_image
from usage_cli.engine.distributed import (
    DEFAULT_TIMEOUT_MIN,
    barrier,
    enable_tf32,
    init_distributed,
    resolve_device,
    use_amp,
)
from usage_cli.errors import ConfigError, check_options
from usage_cli.models.classifier import load_classifier
from usage_cli.progress import log, make_progress
from usage_cli.report.overlays import write_overlays

AUTO_RULE = "mean"  # what --bg-threshold auto means: chosen on the synthetic sets by bench/seed_step.py (docs/results.md)

# options that do not change the seeds: left out of the config (and its hash)
RUNTIME = ("out", "force", "quiet", "workers", "batch_size", "device", "overlays", "timeout")
OWNED = ("seeds.h5", "overlays")  # what a run writes into --out (its manifest lists them)


@dataclass(frozen=True)
class GenSeedsConfig:
    ckpt: Path
    root: Path
    out: Path
    dataset: str = "voc"
    split: str = "train"
    split_file: Path | None = None
    classes_file: Path | None = None
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    refine: str = "auto"  # auto | patch-affinity | none
    normalise: str = "auto"  # auto | max | minmax | raw-minmax (algorithms/fuse.py; auto: cam_infer.auto_normalise)
    bg_threshold: str = "auto"  # the seeds' foreground/background cut without ground truth: auto | otsu | mean | a number
    affinity_layers: int = 12
    attn_budget_gb: float = 2.0  # attention kept per forward (patch affinity, mct); larger batches are split
    source: str = "auto"  # auto | cam | attn (mct: class-to-patch attention x CAM)
    batch_size: int = 8
    workers: int = 2
    device: str = "auto"
    amp: bool | None = None  # bfloat16 autocast; None: on for CUDA, off on the CPU
    timeout: float = DEFAULT_TIMEOUT_MIN  # process-group timeout (minutes) under torchrun
    overlays: int = 8
    overlay_threshold: float | None = None  # None: the store's bg_threshold
    force: bool = False
    quiet: bool = False


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
        (len(cfg.scales) > 0 and all(s > 0 for s in cfg.scales), f"--scales must list positive numbers, got {','.join(map(str, cfg.scales)) or 'none'}"),
        (cfg.normalise in ("auto", *NORMALISE), f"--normalise must be auto or one of {', '.join(NORMALISE)}, got {cfg.normalise!r}"),
        (cfg.affinity_layers >= 1, f"--affinity-layers must be at least 1, got {cfg.affinity_layers}"),
        (cfg.attn_budget_gb > 0, f"the attention budget must be positive, got {cfg.attn_budget_gb}"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (cfg.workers >= 0, f"--workers must not be negative, got {cfg.workers}"),
        (cfg.overlays >= 0, f"--overlays must not be negative, got {cfg.overlays}"),
        (cfg.overlay_threshold is None or 0 <= cfg.overlay_threshold <= 1, f"--overlay-threshold must lie in [0, 1] (seed maps are in [0, 1]), got {cfg.overlay_threshold}"),
        (_rule_ok(cfg.bg_threshold), f"--bg-threshold must be auto, {', '.join(METHODS)} or a number in [0, 1], got {cfg.bg_threshold!r}"),
    ])


@holds_out_lock
def run(cfg: GenSeedsConfig) -> Path:
    # 1. classifier, data, config
    check(cfg)
    info = init_distributed(cfg.device, cfg.timeout)  # checks --device first
    device = resolve_device(cfg.device, info)
    enable_tf32(device)
    net, ckpt = load_classifier(cfg.ckpt, device)
    step = seed_step(net, ckpt, cfg)
    refine, source, normalise = step["refine"], step["source"], step["normalise"]
    infer = CamInference(
        scales=tuple(cfg.scales), flip=cfg.flip, refine=refine, source=source, affinity_layers=cfg.affinity_layers,
        attn_budget_gb=cfg.attn_budget_gb, amp=use_amp(cfg.amp, device), normalise=normalise,
    )  # fmt: skip
    ds = DataSpec.of(cfg).load()
    if ds.meta.num_classes != net.num_classes:
        raise ConfigError(f"{cfg.ckpt}: classifier has {net.num_classes} classes but dataset '{cfg.root}' has {ds.meta.num_classes}")
    check_class_names(cfg.ckpt, ckpt.get("class_names"), ds.meta.class_names, "train the classifier on this dataset, or pass its --classes")
    ckpt_sha = sha256_file(cfg.ckpt)
    config = {**run_config(cfg, RUNTIME), "refine": refine, "source": source, "normalise": normalise, "amp": infer.amp, "checkpoint_sha256": ckpt_sha}
    data = identity(ds, cfg.split_file)  # reads every image header: an unreadable one fails before any work
    claim_out(cfg.out, "gen-seeds", config, OWNED, force=cfg.force)
    attrs = {"config": config, "config_hash": config_hash(config), "num_classes": ds.meta.num_classes, "class_names": list(ds.meta.class_names), "stride": 1,
             "data": data}  # fmt: skip
    # 2. this rank's ids, skipping finished ones
    final = cfg.out / "seeds.h5"
    part = final if not info.enabled else cfg.out / f"seeds.rank{info.rank}.h5"
    records = list(ds.records)[info.rank :: info.world_size]
    writer = SeedWriter(part, attrs, resume=not cfg.force)
    try:
        done = writer.done_ids()
        todo = [r for r in records if r.id not in done]
        if done and info.is_main:
            log(f"gen-seeds: resuming {writer.partial}: {len(records) - len(todo)} of {len(records)} images done, {len(todo)} to compute", cfg.quiet)
        try:
            _generate(net, todo, cfg, infer, writer, seed_maps, device)
        except KeyboardInterrupt:  # said even with --quiet: what is kept, and that the batches in flight are not
            log(f"gen-seeds: interrupted; {len(writer.done_ids() & {r.id for r in records})} of {len(records)} images are saved "
                f"({writer.partial.name}), the batches in flight (up to --batch-size {cfg.batch_size} images per image size) are "
                f"not: rerun the same command to resume")  # fmt: skip
            raise
        stats = _seal(writer, cfg.bg_threshold) if not info.enabled else None
        writer.commit(stats and stats["attrs"])
    finally:
        writer.close()
    # 3. merge ranks (sealed there), overlays at the store's threshold, manifest
    barrier()
    if info.enabled and info.is_main:
        stats = _merge([cfg.out / f"seeds.rank{r}.h5" for r in range(info.world_size)], final, attrs, cfg.bg_threshold)
    barrier()
    if info.is_main:
        empty, thr = stats["empty"], stats["attrs"]
        if cfg.overlays:
            overlay_t = thr["bg_threshold"] if cfg.overlay_threshold is None else cfg.overlay_threshold
            write_overlays(final, ds, cfg.out / "overlays", cfg.overlays, overlay_t)
        if empty["empty_seeds"]:
            log(_empty_warning(empty))  # shown even with --quiet: empty seeds never pass silently
        log(f"gen-seeds: background threshold {thr['bg_threshold']:.2f} ({thr['bg_threshold_rule']}), no ground truth used", cfg.quiet)
        extra = {"num_images": len(ds), "seed_network": ckpt.get("seed_network"), "seeds": "seeds.h5", **empty, **thr, "seed_step": step}
        write_manifest(cfg.out, build_manifest("gen-seeds", config, inputs={"checkpoint": cfg.ckpt}, extra=extra, paths=config_paths(cfg),
                                               data=data, files=owned_files(cfg.out, OWNED)))  # fmt: skip
    return final


def seed_step(net, ckpt: dict, cfg: GenSeedsConfig) -> dict:
    """The resolved --refine / --source / --normalise, and why where ``auto`` chose (said in the
    output and recorded in the manifest)."""
    tc = ckpt.get("train_config") or {}
    pretrained = bool(tc.get("pretrained") or tc.get("weights"))
    refine, source = resolve_options(net, cfg.refine, cfg.source, cfg.affinity_layers, pretrained=pretrained)
    normalise = auto_normalise(refine)[0] if cfg.normalise == "auto" else cfg.normalise
    step = {"refine": refine, "source": source, "normalise": normalise, "classifier_pretrained": pretrained}
    step["refine_rule"] = auto_refine(net.family, pretrained)[1] if cfg.refine == "auto" else "set by --refine"
    step["normalise_rule"] = auto_normalise(refine)[1] if cfg.normalise == "auto" else "set by --normalise"
    log(f"gen-seeds: --refine {refine} ({step['refine_rule']}); --normalise {normalise} ({step['normalise_rule']})", cfg.quiet)
    return step


def _generate(net, todo, cfg, infer: CamInference, writer, seed_maps, device) -> None:
    loader = torch.utils.data.DataLoader(_Images(todo), batch_size=None, num_workers=cfg.workers if todo else 0)
    pending: dict[tuple[int, int], list] = {}

    def flush(key):
        items = pending.pop(key)
        maps = views_to_maps(net, torch.stack([im for _, im, _ in items]).to(device), infer)  # a module global: tests patch it
        for (image_id, im, keys), fused in zip(items, maps, strict=True):
            cam = seed_maps(fused, keys, infer.normalise).cpu().numpy() if keys else np.zeros((0, *im.shape[:2]), np.float32)
            writer.write(image_id, keys, cam, tuple(im.shape[:2]))
        writer.flush()

    with make_progress(cfg.quiet) as progress:
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


def seed_statistics(entries, rule: str) -> dict:
    """From every entry of a store (images written before a resume and by other ranks too): the empty
    seeds (present-class maps that are all zero: no positive activation) and the background
    threshold of ``rule`` (``algorithms/thresholds.py``) from the seed values alone."""
    empty = pairs = images = 0
    hist = np.zeros(BINS, np.int64)
    for e in entries:
        n = len(e.empty_keys)
        empty, pairs, images = empty + n, pairs + len(e.keys), images + (n > 0)
        hist += fg_histogram(e.cam)
    method = AUTO_RULE if rule == "auto" else rule
    method = method if method in METHODS else float(method)
    t = threshold_from_histogram(hist, method) if hist.sum() else 0.5
    how = f"{method} of {int(hist.sum())} seed pixels" if isinstance(method, str) else "fixed"
    if rule == "auto":
        how = f"auto = {how}"
    return {
        "empty": {"empty_seeds": empty, "present_pairs": pairs, "images_with_empty_seeds": images},
        "attrs": {"bg_threshold": round(float(t), 4), "bg_threshold_rule": how if hist.sum() else "no seed pixels: 0.5"},
    }


def _seal(writer: SeedWriter, rule: str) -> dict:
    return seed_statistics(writer.entries(), rule)


def _rule_ok(rule: str) -> bool:
    if rule == "auto" or rule in METHODS:
        return True
    try:
        return 0 <= float(rule) <= 1
    except (TypeError, ValueError):
        return False


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
        stats = _seal(out, rule)
        out.commit(stats["attrs"])
    for p in parts:
        p.unlink()
    return stats

