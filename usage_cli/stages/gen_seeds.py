"""`usage gen-seeds`: seed areas of a trained classifier into a versioned HDF5 store.

Per image: every scale x flip view goes through the classifier (images of one size batched
together), each view's activation map is optionally refined with the patch-to-patch attention
affinity (transformers, MCTformer), ReLU'd (as PSA / IRN), un-flipped, resized to the image size
and summed, and the maps of the image's classes are divided by their maximum. Present classes whose map stays all zero ("empty
seeds") are counted from the finished store, warned about and recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_hash,
    config_paths,
    sha256_file,
    write_manifest,
)
from usage_cli.artifacts.outdir import claim_out
from usage_cli.artifacts.seeds import SeedReader, SeedWriter
from usage_cli.data import load_dataset
from usage_cli.engine.distributed import DEFAULT_TIMEOUT_MIN
from usage_cli.errors import ConfigError
from usage_cli.progress import log, make_progress


@dataclass(frozen=True)
class GenSeedsConfig:
    ckpt: Path
    dataset: str
    root: Path
    split: str
    out: Path
    split_file: Path | None = None
    classes_file: Path | None = None
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    refine: str = "auto"  # auto | patch-affinity | none
    affinity_layers: int = 12
    attn_budget_gb: float = 2.0  # attention kept per forward (patch affinity, mct); larger batches are split
    source: str = "auto"  # auto | cam | attn (mct: class-to-patch attention x CAM)
    batch_size: int = 8
    workers: int = 2
    device: str = "auto"
    amp: bool | None = None  # bfloat16 autocast; None: on for CUDA, off on the CPU
    timeout: float = DEFAULT_TIMEOUT_MIN  # process-group timeout (minutes) under torchrun
    overlays: int = 8
    overlay_threshold: float = 0.3
    force: bool = False
    quiet: bool = False


class _Images(torch.utils.data.Dataset):
    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        from usage_cli.data.io import read_image

        r = self.records[i]
        return r.id, torch.from_numpy(read_image(r.image_path)), r.labels


def check(cfg: GenSeedsConfig) -> None:
    """Every option in its range, before the classifier is loaded."""
    checks = [
        (len(cfg.scales) > 0 and all(s > 0 for s in cfg.scales), f"--scales must list positive numbers, got {','.join(map(str, cfg.scales)) or 'none'}"),
        (cfg.affinity_layers >= 1, f"--affinity-layers must be at least 1, got {cfg.affinity_layers}"),
        (cfg.attn_budget_gb > 0, f"the attention budget must be positive, got {cfg.attn_budget_gb}"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (cfg.workers >= 0, f"--workers must not be negative, got {cfg.workers}"),
        (cfg.overlays >= 0, f"--overlays must not be negative, got {cfg.overlays}"),
        (0 <= cfg.overlay_threshold <= 1, f"--overlay-threshold must lie in [0, 1] (seed maps are in [0, 1]), got {cfg.overlay_threshold}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _resolve(cfg: GenSeedsConfig, net) -> tuple[str, str]:
    refine = cfg.refine
    if refine == "auto":
        refine = "patch-affinity" if net.family == "transformer" else "none"
    if refine not in ("patch-affinity", "none"):
        raise ConfigError(f"unknown --refine '{cfg.refine}'; choose patch-affinity, none or auto")
    if refine == "patch-affinity" and net.family != "transformer":
        raise ConfigError(f"--refine patch-affinity needs a transformer classifier, not {net.model_config['backbone']}")
    blocks = len(getattr(net.backbone.model, "blocks", []))
    if refine == "patch-affinity" and cfg.affinity_layers > blocks:
        raise ConfigError(f"--affinity-layers {cfg.affinity_layers}: {net.model_config['backbone']} has only {blocks} layers")
    source = cfg.source if cfg.source != "auto" else ("attn" if net.mapping == "mct" else "cam")
    if source not in ("cam", "attn"):
        raise ConfigError(f"unknown --source '{cfg.source}'; choose cam, attn or auto")
    if source == "attn" and net.mapping != "mct":
        raise ConfigError(f"--source attn needs an mct checkpoint (class tokens), not mapping '{net.mapping}'")
    return refine, source


def _views_per_forward(net, size, refine: str, cfg: GenSeedsConfig, device: torch.device | None = None) -> int:
    """How many views (images x flips of one scale) go through the network in one forward.

    * On the CPU one: batching VOC-sized views there was slower, not faster (efficientnet_lite0,
      4 scales x flip: 0.25 images/s at 8 images a batch against 0.44 one view at a time, as the
      reference implementations do), since the activations of a batch outgrow the caches.
    * Forwards that keep attention are split to stay within ``cfg.attn_budget_gb``: patch affinity
      keeps each of the last ``affinity_layers`` layers' head-mean patch block (B x N x N), mct
      the last layers' whole B x heads x T x T maps (3 for the class attention, ``affinity_layers``
      with patch affinity; one DeiT-S view of a 500x375 image at scale 2 has 2,962 tokens: 0.4 GB
      kept for patch affinity, 2.5 GB for mct with 12 layers), in float32 (bfloat16 halves it).
    """
    if device is not None and device.type == "cpu":
        return 1
    if net.family != "transformer" or (refine != "patch-affinity" and net.mapping != "mct"):
        return 1 << 30
    stride = net.backbone.stride
    tokens = (size[0] // stride) * (size[1] // stride) + net.backbone.num_prefix_tokens
    blocks = getattr(net.backbone.model, "blocks", [])
    heads = blocks[0].attn.num_heads if len(blocks) else 1
    if net.mapping == "mct":  # the last layers' whole attention is kept
        kept = max(cfg.affinity_layers, 3) if refine == "patch-affinity" else 3
        per_view = min(kept, len(blocks)) * heads * tokens * tokens * 4
    else:  # the head-mean patch block of the last layers, plus one layer's maps in flight (x3 for the softmax)
        per_view = (min(cfg.affinity_layers, len(blocks)) + 3 * heads) * tokens * tokens * 4
    return max(1, int(cfg.attn_budget_gb * 2**30 // max(per_view, 1)))


@torch.no_grad()
def views_to_maps(net, images: torch.Tensor, cfg: GenSeedsConfig, refine: str, source: str) -> list[torch.Tensor]:
    """Fused (not yet normalised) C x H x W maps for a batch of same-size uint8 images (B x H x W x 3)."""
    from usage_cli.algorithms.fuse import (
        fuse_views,
        patch_affinity,
        patch_attention,
        refine_with_affinity,
        scaled_size,
    )
    from usage_cli.engine.distributed import use_amp

    mc = net.model_config
    mean = torch.tensor(mc.get("mean", (0.485, 0.456, 0.406)), device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(mc.get("std", (0.229, 0.224, 0.225)), device=images.device).view(1, 3, 1, 1)
    x0 = (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    H, W = x0.shape[-2:]
    multiple = net.backbone.stride if net.family == "transformer" else 1
    views, flips = [], []
    first = len(getattr(net.backbone.model, "blocks", [])) - cfg.affinity_layers
    prefix = net.backbone.num_prefix_tokens

    def keep(i: int, a: torch.Tensor) -> torch.Tensor | None:  # what patch affinity needs of layer i
        return patch_attention(a, prefix).float() if i >= first else None

    keep_only = refine == "patch-affinity" and net.mapping != "mct"  # keep only the head-mean patch block
    amp = use_amp(cfg.amp, images.device)

    for s in cfg.scales:
        x = torch.nn.functional.interpolate(x0, size=scaled_size(H, W, s, multiple), mode="bilinear", align_corners=False)
        batch = torch.cat([x, x.flip(-1)]) if cfg.flip else x
        z = []
        for part in batch.split(_views_per_forward(net, batch.shape[-2:], refine, cfg, batch.device)):
            # the network in bfloat16 autocast (--amp), only the layers whose attention is used forming
            # its weights; everything after it in float32
            with torch.autocast(part.device.type, dtype=torch.bfloat16, enabled=amp):
                if keep_only:
                    out = net(part, return_attn=True, keep_attn=keep, attn_layers=cfg.affinity_layers)
                else:
                    out = net(part, return_attn=refine == "patch-affinity", attn_layers=cfg.affinity_layers, cls_attn=source == "attn")
            cams = out["cams"].float()
            if keep_only:
                zp = refine_with_affinity(torch.relu(cams), sum(out["attn"]))  # ReLU first, as MCTformer-V2
            else:
                zp = out["cls_attn"].float() * torch.relu(cams) if source == "attn" else cams
                if refine == "patch-affinity":
                    zp = refine_with_affinity(torch.relu(zp), patch_affinity([a.float() for a in out["attn"]], prefix, cfg.affinity_layers))
            z.append(zp)
        z = torch.cat(z)
        n = x.shape[0]
        views.append(z[:n])
        flips.append(False)
        if cfg.flip:
            views.append(z[n:])
            flips.append(True)
    return [fuse_views([v[i] for v in views], flips, (H, W)) for i in range(x0.shape[0])]


def run(cfg: GenSeedsConfig) -> Path:
    from usage_cli.algorithms.fuse import seed_maps
    from usage_cli.engine.distributed import (
        barrier,
        enable_tf32,
        init_distributed,
        resolve_device,
        use_amp,
    )
    from usage_cli.models.classifier import load_classifier

    # 1. classifier, data, config
    check(cfg)
    info = init_distributed(cfg.device, cfg.timeout)  # checks --device first
    device = resolve_device(cfg.device, info)
    enable_tf32(device)
    net, ckpt = load_classifier(cfg.ckpt, device)
    refine, source = _resolve(cfg, net)
    ds = load_dataset(cfg.dataset, cfg.root, cfg.split, split_file=cfg.split_file, classes_file=cfg.classes_file)
    if ds.meta.num_classes != net.num_classes:
        raise ConfigError(f"{cfg.ckpt}: classifier has {net.num_classes} classes but dataset '{cfg.root}' has {ds.meta.num_classes}")
    check_class_names(cfg.ckpt, ckpt.get("class_names"), ds.meta.class_names, "train the classifier on this dataset, or pass its --classes")
    ckpt_sha = sha256_file(cfg.ckpt)
    config = {**_jsonable(cfg), "refine": refine, "source": source, "amp": use_amp(cfg.amp, device), "checkpoint_sha256": ckpt_sha}
    claim_out(cfg.out, "gen-seeds", config, ("seeds.h5", "overlays"), force=cfg.force)
    attrs = {"config": config, "config_hash": config_hash(config), "num_classes": ds.meta.num_classes, "class_names": list(ds.meta.class_names), "stride": 1}
    # 2. this rank's ids, skipping finished ones
    final = cfg.out / "seeds.h5"
    part = final if not info.enabled else cfg.out / f"seeds.rank{info.rank}.h5"
    records = list(ds.records)[info.rank :: info.world_size]
    writer = SeedWriter(part, attrs, resume=not cfg.force)
    try:
        done = writer.done_ids()
        todo = [r for r in records if r.id not in done]
        if done and info.is_main:
            log(f"gen-seeds: resuming, {len(done)} images already done", cfg.quiet)
        _generate(net, todo, cfg, refine, source, writer, seed_maps, device)
        writer.commit()
    finally:
        writer.close()
    # 3. merge ranks, overlays, empty seeds (counted from the finished store), manifest
    barrier()
    if info.enabled and info.is_main:
        _merge([cfg.out / f"seeds.rank{r}.h5" for r in range(info.world_size)], final, attrs)
    barrier()
    if info.is_main:
        if cfg.overlays:
            from usage_cli.artifacts.overlays import write_overlays

            write_overlays(final, ds, cfg.out / "overlays", cfg.overlays, cfg.overlay_threshold)
        empty = count_empty_seeds(final)
        if empty["empty_seeds"]:
            log(_empty_warning(empty))  # shown even with --quiet: empty seeds never pass silently
        extra = {"num_images": len(ds), "seed_network": ckpt.get("seed_network"), "seeds": "seeds.h5", **empty}
        write_manifest(cfg.out, build_manifest("gen-seeds", config, inputs={"checkpoint": cfg.ckpt}, extra=extra, paths=config_paths(cfg)))
    return final


def _generate(net, todo, cfg, refine, source, writer, seed_maps, device) -> None:
    loader = torch.utils.data.DataLoader(_Images(todo), batch_size=None, num_workers=cfg.workers if todo else 0)
    pending: dict[tuple[int, int], list] = {}

    def flush(key):
        items = pending.pop(key)
        maps = views_to_maps(net, torch.stack([im for _, im, _ in items]).to(device), cfg, refine, source)
        for (image_id, im, keys), fused in zip(items, maps, strict=True):
            cam = seed_maps(fused, keys).cpu().numpy() if keys else np.zeros((0, *im.shape[:2]), np.float32)
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


def count_empty_seeds(path: Path) -> dict[str, int]:
    """Empty seeds of a finished store: present-class maps that are all zero (no positive activation).

    Counted from the store itself, so images written before a resume and by other ranks count too."""
    empty = pairs = images = 0
    with SeedReader(path) as r:
        for image_id in r.ids():
            e = r.read(image_id)
            n = len(e.empty_keys)
            empty, pairs, images = empty + n, pairs + len(e.keys), images + (n > 0)
    return {"empty_seeds": empty, "present_pairs": pairs, "images_with_empty_seeds": images}


def _empty_warning(c: dict[str, int]) -> str:
    return (
        f"[yellow]gen-seeds: {c['empty_seeds']} of {c['present_pairs']} present-class seed maps are empty (all zero) "
        f"in {c['images_with_empty_seeds']} images: the classifier gives no positive activation for those classes; "
        f"check its training loss[/]"
    )


def _merge(parts: list[Path], final: Path, attrs: dict) -> None:
    with SeedWriter(final, attrs, resume=False) as out:
        for p in parts:
            with SeedReader(p) as r:
                out.copy_from(r)  # as stored: no decode / re-encode while the other ranks wait
        out.commit()
    for p in parts:
        p.unlink()


def _jsonable(cfg: GenSeedsConfig) -> dict:
    d = asdict(cfg)
    for k in ("out", "force", "quiet", "workers", "batch_size", "device", "overlays", "timeout"):
        d.pop(k)
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
