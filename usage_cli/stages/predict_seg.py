"""`usage predict-seg`: label PNGs of a split, or of a bare folder of photos, from a segmentation
checkpoint.

Multi-scale + flip fusion of class probabilities (``algorithms.seg_infer``), optional dense CRF in
worker processes, palette PNGs ``<out>/<id>.png`` (255 never predicted) and a ``manifest.json``
pinning the checkpoint's sha256. An interrupted run resumes: ids whose PNG exists are skipped
when the folder's in-progress marker carries the same config and checkpoint digest. Under
``torchrun`` each rank predicts every ``world_size``-th remaining id and rank 0 writes the manifest.
New photos (``--images DIR``: ``--dataset images``, no labels, split or masks) take their class names
from the checkpoint, and the folder also gets ``classes.txt`` (the name of each label value) and
``overlays/<id>.jpg`` (the photo beside its prediction, the classes named), each written before its PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from usage_cli.algorithms.crf import crf_map
from usage_cli.algorithms.seg_infer import crf_refine, fuse_views, to_label
from usage_cli.artifacts import labels  # write_label_png through the module: a test interrupts it
from usage_cli.artifacts.claims import Output, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.labels import (
    CLASS_LIST,
    FOLDER_VERSION,
    OVERLAYS,
    finish_png_folder,
    label_path,
    overlay_path,
    resume_png_folder,
    start_png_folder,
    write_class_list,
)
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_hash,
    config_paths,
    run_config,
    sha256_file,
    write_manifest,
)
from usage_cli.data.identity import identity
from usage_cli.data.io import read_image
from usage_cli.data.joint_transforms import normalize
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine.distributed import (
    barrier,
    init_distributed,
    resolve_device,
    use_amp,
    worker_count,
)
from usage_cli.errors import ConfigError, check_options
from usage_cli.models.segnet import load_segnet
from usage_cli.progress import make_progress
from usage_cli.report.overlays import write_prediction_overlay
from usage_cli.runtime import MAX_SCALE, Runtime, config_drop, runtime_checks, takes_runtime

CHUNK = 16  # images whose probabilities are held at once for the CRF workers


@takes_runtime("predict-seg")
@takes_data
@dataclass(frozen=True)
class PredictSegConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out")}  # what it writes (artifacts/claims.py checks them first)
    ckpt: Path
    out: Path
    data: DataSpec = DataSpec(split="val")
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    fuse: str = "mean"
    crf: bool = False
    runtime: Runtime = Runtime()  # amp: float16 autocast; workers: the CRF's


def check(cfg: PredictSegConfig) -> None:
    check_options([
        *runtime_checks(cfg.runtime),
        (cfg.fuse in ("mean", "max"), f"--fuse must be mean or max, got {cfg.fuse}"),
        (len(cfg.scales) > 0 and all(0 < s <= MAX_SCALE for s in cfg.scales), f"--scales must list numbers in (0, {MAX_SCALE}], got {','.join(map(str, cfg.scales)) or 'none'}"),
    ])


def _crf_label(item: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    image, probs = item
    return to_label(crf_refine(image, probs))


@owns_outputs
def run(cfg: PredictSegConfig) -> dict:
    """Predict every id of the split; returns a summary {"images", "skipped", "out"} (and "overlays")."""

    check(cfg)
    rt = cfg.runtime
    info = init_distributed(rt.device, rt.timeout)  # checks --device first
    device = str(resolve_device(rt.device, info))
    net, ckpt = load_segnet(cfg.ckpt, device)
    ds = cfg.data.load()
    bare = ds.meta.name == "images"  # new photos: the checkpoint names the classes
    if bare and not ds.meta.class_names:
        ds = replace(ds, meta=replace(ds.meta, class_names=tuple(ckpt["class_names"])))
    if net.model_config["num_classes"] != ds.meta.num_classes + 1:
        raise ConfigError(
            f"{cfg.ckpt}: network predicts {net.model_config['num_classes']} labels, dataset {cfg.data.dataset} has {ds.meta.num_classes + 1}"
        )
    check_class_names(cfg.ckpt, ckpt.get("class_names"), ds.meta.class_names, "train the network on this dataset, or pass its --classes")
    data = identity(ds, cfg.data.split_file)  # reads every image header: an unreadable one fails before any work
    config = run_config(cfg, config_drop(cfg))
    owned = ("*.png", CLASS_LIST, OVERLAYS) if bare else ("*.png",)
    out = claim_out(cfg.out, "predict-seg", config, owned, force=rt.force)
    key = {"config_hash": config_hash(config), "checkpoint_sha256": sha256_file(cfg.ckpt)}
    done = resume_png_folder(out, key, stage="predict-seg", force=rt.force, main=info.is_main)
    barrier()  # every rank has read the marker before rank 0 replaces it
    if info.is_main:
        start_png_folder(out, key, stage="predict-seg")
        if bare:
            write_class_list(out, ds.meta.all_names)
    todo = [r for r in ds.records if r.id not in done]
    names = ds.meta.all_names if bare else None  # overlays for people: new photos only
    _predict_all(net, todo[info.rank :: info.world_size], cfg, device, out, names, quiet=rt.quiet or not info.is_main)
    barrier()  # every rank's PNGs are on disk
    if info.is_main:
        manifest = build_manifest(
            "predict-seg", config, inputs={"checkpoint": cfg.ckpt}, format_version=FOLDER_VERSION,
            extra={"images": len(ds), "class_names": list(ckpt["class_names"]), "train_config": ckpt.get("train_config", {})},
            paths=config_paths(cfg), data=data, files=owned_files(out, owned),
        )  # fmt: skip
        write_manifest(out, manifest)
        finish_png_folder(out, stage="predict-seg")
    barrier()
    return {"images": len(ds), "skipped": len(ds) - len(todo), "out": str(out), **({"overlays": str(out / OVERLAYS)} if bare else {})}


def _write(out: Path, rec, image: np.ndarray, label: np.ndarray, names: tuple[str, ...] | None) -> None:
    """A record's label PNG, after its overlay when ``names`` (a PNG on disk means both are)."""
    if names is not None:
        write_prediction_overlay(overlay_path(out, rec.id), image, label, names)
    labels.write_label_png(label_path(out, rec.id), label)


def _predict_all(net, records, cfg: PredictSegConfig, device: str, out: Path, names, quiet: bool) -> None:
    amp, workers = use_amp(cfg.runtime.amp, device), worker_count(cfg.runtime)
    with make_progress(quiet) as progress:
        bar = progress.add_task(f"predict-seg {cfg.data.split}", total=len(records), info="")
        for start in range(0, len(records), CHUNK):
            chunk, pending = records[start:start + CHUNK], []
            for rec in chunk:
                image = read_image(rec.image_path)
                x = normalize(image, *net.input_norm())[None].to(device)
                with torch.inference_mode(), torch.autocast(device_type=torch.device(device).type, enabled=amp):
                    probs = fuse_views(net, x, cfg.scales, cfg.flip, cfg.fuse)
                if cfg.crf:
                    pending.append((image, probs.float().cpu().numpy()))
                else:
                    _write(out, rec, image, to_label(probs), names)
                    progress.update(bar, advance=1)
            if pending:
                for (image, _), rec, label in zip(pending, chunk, crf_map(_crf_label, pending, workers), strict=True):
                    _write(out, rec, image, label, names)
                    progress.update(bar, advance=1)
