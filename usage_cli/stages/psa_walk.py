"""`usage psa-walk`: seeds + a trained AffinityNet -> pseudo masks (PSA step 3), a label-PNG folder.

Every image of the split: its seed maps plus a background channel, walked with the affinities the
network predicts (``algorithms.psa_refine.refine_image``), arg-maxed at the original size into
``<out>/<id>.png``; then ``<out>/manifest.json`` pinning the seeds and the ``affinity.pt``. The network
may come from ``usage train-aff`` on another split or another run (PSA trains once on train_aug and
walks any split). An interrupted run resumes the masks of the same options and inputs; under
``torchrun`` each rank walks every ``world_size``-th id and rank 0 writes the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from usage_cli.algorithms import psa_refine
from usage_cli.algorithms.thresholds import auto_constants
from usage_cli.artifacts.claims import Output, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.compat import check_seeds_cover
from usage_cli.artifacts.labels import (
    FOLDER_VERSION,
    finish_png_folder,
    label_path,
    resume_png_folder,
    start_png_folder,
    write_label_png,
)
from usage_cli.artifacts.manifest import (
    build_manifest,
    config_hash,
    config_paths,
    run_config,
    sha256_file,
    write_manifest,
)
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data.identity import check_pairing, identity, recorded_data
from usage_cli.data.io import read_image
from usage_cli.data.joint_transforms import normalize
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine.distributed import (
    DistInfo,
    barrier,
    init_distributed,
    resolve_device,
    use_amp,
)
from usage_cli.errors import ArtifactError, ConfigError, check_options
from usage_cli.heap import release_freed
from usage_cli.models.affinitynet import load_affinitynet, pad_to_multiple
from usage_cli.presets import AUTO_CUTS, DEFAULT_REFINE_PRESET, REFINE_PSA
from usage_cli.progress import make_progress
from usage_cli.runtime import Runtime, config_drop, runtime_checks, takes_runtime

STAGE = "psa-walk"
WALK_KEYS = ("beta", "logt", "bg_mode", "bg_power", "bg_const", "walk_norm")  # the preset's walk settings


@takes_runtime(STAGE)
@takes_data
@dataclass(frozen=True)
class PsaWalkConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out")}  # what it writes (artifacts/claims.py checks them first)
    seeds: Path
    affinity: Path
    out: Path
    data: DataSpec = DataSpec(split="train_aug")
    preset: str = DEFAULT_REFINE_PRESET
    beta: float | None = None  # None: from the preset
    logt: int | None = None
    bg_mode: str | None = None  # power | const
    bg_power: float | None = None
    bg_const: float | None = None
    walk_norm: str | None = None  # none | class-max | max (psa_refine.rescale_walked)
    radius: int = 5
    walk: str = "auto"  # auto | dense | local
    runtime: Runtime = Runtime()


def resolve(cfg: PsaWalkConfig) -> PsaWalkConfig:
    """The walk settings the preset gives where unset, checked."""
    if cfg.preset not in REFINE_PSA:
        raise ConfigError(f"--preset must be one of {', '.join(REFINE_PSA)}, got {cfg.preset!r}")
    if cfg.preset == "auto" and cfg.bg_const is None and Path(cfg.seeds).is_file():  # the walk's background at the seeds' own threshold
        cfg = replace(cfg, bg_const=auto_constants(cfg.seeds, AUTO_CUTS)["bg_const"])
    cfg = replace(cfg, **{k: REFINE_PSA[cfg.preset][k] for k in WALK_KEYS if getattr(cfg, k) is None})
    check_options(walk_checks(cfg) + runtime_checks(cfg.runtime))
    return cfg


def walk_checks(cfg) -> list[tuple[bool, str]]:
    """The walk settings' ranges (``cfg``: any config with them, refine-psa's too)."""
    return [
        (cfg.bg_mode in ("power", "const"), f"--bg-mode must be power or const, got {cfg.bg_mode!r}"),
        (cfg.walk_norm in psa_refine.WALK_NORMS, f"--walk-norm must be one of {', '.join(psa_refine.WALK_NORMS)}, got {cfg.walk_norm!r}"),
        (cfg.walk in ("auto", "dense", "local"), f"--walk must be auto, dense or local, got {cfg.walk!r}"),
        (cfg.beta > 0 and 0 <= cfg.logt <= 12, f"need --beta > 0 and 0 <= --logt <= 12, got {cfg.beta} / {cfg.logt}"),
        ((cfg.bg_const is None or 0 <= cfg.bg_const <= 1) and cfg.bg_power > 0, "need 0 <= --bg-const <= 1 and --bg-power > 0"),
        (2 <= cfg.radius <= 16, f"--radius must be in 2..16, got {cfg.radius}"),
    ]


def _check_affinity(path: Path) -> None:
    """The AffinityNet file exists and loads (before any work)."""
    if not Path(path).exists():
        raise ConfigError(f"{path}: --affinity file not found; train one with `usage train-aff` (or `usage refine-psa`) first")
    load_affinitynet(Path(path), "cpu")


def check(cfg: PsaWalkConfig, *, affinity: bool = True) -> None:
    """Everything a run refuses before its work, for a chain to ask before its earlier steps: the
    options (:func:`resolve`), the AffinityNet (``affinity=False``: not yet — the chain trains it),
    the split, and the seeds made from it and covering it."""
    cfg = resolve(cfg)
    if affinity:
        _check_affinity(cfg.affinity)
    ds = cfg.data.load()
    with SeedReader(cfg.seeds) as reader:
        _check_seeds(cfg, ds, reader)


def _check_seeds(cfg: PsaWalkConfig, ds, reader) -> dict | None:
    """The seeds were made from this data set (before the per-image checks: it names the cause) and
    cover the split; the pairing record."""
    pairing = check_pairing(cfg.seeds, recorded_data(reader.attrs), ds, force=cfg.runtime.force, ids=reader.ids(), use="refine them")
    check_seeds_cover(reader, cfg.seeds, ds)
    return pairing


@owns_outputs
def run(cfg: PsaWalkConfig, publish_as: tuple[str, dict] | None = None) -> dict:
    """Walk every id of the split; returns {"images", "out", "split", "class_names", "affinity_sha256",
    "pairing", "data"}. ``publish_as=(stage, config)``: the walk of a chain that publishes the folder
    under its own name (refine-psa) — its claim, its resume marker, and no psa-walk manifest: the
    chain writes its own from what this returns."""
    cfg = resolve(cfg)
    rt = cfg.runtime
    _check_affinity(cfg.affinity)
    info = init_distributed(rt.device, rt.timeout)  # checks --device first
    ds = cfg.data.load()
    stage, config = publish_as or (STAGE, run_config(cfg, config_drop(cfg, ("out",))))
    data = identity(ds, cfg.data.split_file)  # reads the image headers
    with SeedReader(cfg.seeds) as reader:  # a missing or incomplete store is an error naming gen-seeds
        pairing = _check_seeds(cfg, ds, reader)
        out = claim_out(cfg.out, stage, config, ("*.png",), force=rt.force)
        aff_sha = sha256_file(cfg.affinity)
        key = {"config_hash": config_hash(config), "seeds_sha256": sha256_file(cfg.seeds), "affinity_sha256": aff_sha}
        _walk(cfg, ds, reader, key, stage, info)
    done = {"images": len(ds), "out": str(out), "split": ds.split, "class_names": list(ds.meta.class_names), "affinity_sha256": aff_sha, "pairing": pairing, "data": data}
    if info.is_main and publish_as is None:
        manifest = build_manifest(
            STAGE, config, inputs={"seeds": cfg.seeds, "affinity": cfg.affinity}, format_version=FOLDER_VERSION,
            extra={"images": len(ds), "split": ds.split, "class_names": done["class_names"], "affinity": str(cfg.affinity), "affinity_sha256": aff_sha,
                   **({"pairing": pairing} if pairing and pairing["forced"] else {}),
                   **({"auto_constants": auto_constants(cfg.seeds, AUTO_CUTS)} if cfg.preset == "auto" else {})},
            paths=config_paths(cfg), data=data, files=owned_files(out, ("*.png",)),
        )  # fmt: skip
        write_manifest(out, manifest)
        finish_png_folder(out, stage=STAGE)
    barrier()
    return done


def _walk(cfg, ds, reader, key: dict, stage: str, info: DistInfo | None = None) -> None:
    """Write ``<cfg.out>/<id>.png`` for every id of ``ds`` not yet written by an interrupted run of the
    same ``key`` (the PNG-folder marker of ``stage``: psa-walk's own, or refine-psa's when it chains
    this step). ``cfg``: a resolved config with the walk settings, ``affinity``, ``seeds`` and ``out``.
    Under torchrun each rank walks every ``world_size``-th of the remaining ids."""
    info = info or DistInfo()
    rt, out = cfg.runtime, Path(cfg.out)
    device = str(resolve_device(rt.device, info))
    net, _ = load_affinitynet(cfg.affinity, device)  # class-agnostic: it may come from another dataset
    features, settings, norm = _features(net, device, rt.amp), walk_settings(cfg), net.input_norm()
    done = resume_png_folder(out, key, stage=stage, force=rt.force, main=info.is_main)
    barrier()  # every rank has read the marker before rank 0 replaces it
    if info.is_main:
        start_png_folder(out, key, stage=stage)
    barrier()
    todo = [r for r in ds.records if r.id not in done][info.rank :: info.world_size]
    with make_progress(rt.quiet or not info.is_main) as progress:
        bar = progress.add_task(f"random walk {ds.split}", total=len(todo), info="")
        for i, rec in enumerate(todo):
            e = reader.read(rec.id)
            image = read_image(rec.image_path)
            if image.shape[:2] != e.cam.shape[1:]:
                raise ArtifactError(f"{cfg.seeds}: seeds of {rec.id} are {e.cam.shape[1:]} but image {rec.image_path} is {image.shape[:2]}")
            x = pad_to_multiple(normalize(image, *norm)[None].to(device), net.pad_multiple)
            label = psa_refine.refine_image(features, x, e.cam.astype(np.float32), [int(k) for k in e.keys], settings, net.stride)
            write_label_png(label_path(out, rec.id), label)
            if i % 8 == 7:
                release_freed()  # the heap the walk's tensors freed (else it grew with the images)
            progress.update(bar, advance=1)
    barrier()  # every rank's masks are on disk before rank 0 writes the manifest


def walk_settings(cfg) -> psa_refine.WalkSettings:
    return psa_refine.WalkSettings(
        radius=cfg.radius, beta=cfg.beta, logt=cfg.logt, bg_mode=cfg.bg_mode, bg_power=cfg.bg_power, bg_const=cfg.bg_const,
        method=cfg.walk, norm=cfg.walk_norm,
    )  # fmt: skip


def _features(net, device: str, amp: bool | None):
    """The AffinityNet's forward as :func:`psa_refine.refine_image` calls it (autocast on ``device``)."""
    enabled = use_amp(amp, device)

    def features(x):
        with torch.autocast(device_type=torch.device(device).type, enabled=enabled):
            return net(x)

    return features
