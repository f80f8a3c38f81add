"""`usage psa-labels`: seeds -> confident labels (PSA step 1), a label-PNG folder with its manifest.

For each image of the split the seed maps of its classes get a background channel ``(1 - max)^power``
at a low (``--crf-la``) and a high (``--crf-ha``) power, each refined by a dense CRF in a process pool
(``algorithms.affinity.confident_label_for_image``); what both agree on is kept, the band between is
255. ``usage train-aff`` trains AffinityNet on the folder. An interrupted run resumes the PNGs of the
same options and seeds; under ``torchrun`` each rank writes every ``world_size``-th label and rank 0
the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from usage_cli.algorithms.affinity import confident_label_for_image
from usage_cli.algorithms.crf import crf_map
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
    up_to_date,
    write_manifest,
)
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data.identity import check_pairing, identity, recorded_data
from usage_cli.data.io import read_image
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine.distributed import barrier, init_distributed
from usage_cli.errors import ArtifactError, ConfigError, check_options
from usage_cli.presets import AUTO_CUTS, DEFAULT_REFINE_PRESET, REFINE_PSA
from usage_cli.progress import log, make_progress
from usage_cli.runtime import Runtime, config_drop, cpu_worker_count, runtime_checks, takes_runtime

STAGE = "psa-labels"
CHUNK = 64  # images whose seed maps are held at once for the CRF workers


@takes_runtime(STAGE)
@takes_data
@dataclass(frozen=True)
class PsaLabelsConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {"out": Output("--out")}  # what it writes (artifacts/claims.py checks them first)
    seeds: Path
    out: Path
    data: DataSpec = DataSpec(split="train_aug")
    preset: str = DEFAULT_REFINE_PRESET
    crf_la: float | None = None  # None: from the preset
    crf_ha: float | None = None
    crf: bool = True
    runtime: Runtime = Runtime()  # workers: the CRF's processes


def resolve(cfg: PsaLabelsConfig) -> PsaLabelsConfig:
    """The CRF powers the preset gives where unset, checked."""
    if cfg.preset not in REFINE_PSA:
        raise ConfigError(f"--preset must be one of {', '.join(REFINE_PSA)}, got {cfg.preset!r}")
    if cfg.preset == "auto" and None in (cfg.crf_la, cfg.crf_ha) and Path(cfg.seeds).is_file():  # cuts from the seeds' own threshold
        cfg = replace(cfg, **{k: v for k, v in auto_constants(cfg.seeds, AUTO_CUTS).items() if k in ("crf_la", "crf_ha") and getattr(cfg, k) is None})
    cfg = replace(cfg, **{k: REFINE_PSA[cfg.preset][k] for k in ("crf_la", "crf_ha") if getattr(cfg, k) is None})
    check_options([
        *runtime_checks(cfg.runtime),
        (None in (cfg.crf_la, cfg.crf_ha) or 0 < cfg.crf_la <= cfg.crf_ha, f"need 0 < --crf-la <= --crf-ha, got {cfg.crf_la} / {cfg.crf_ha}"),
    ])
    return cfg


def manifest_config(cfg: PsaLabelsConfig) -> dict:
    """What defines the labels: the manifest's config (of a resolved ``cfg``)."""
    return run_config(cfg, config_drop(cfg, ("out",)))


def is_done(cfg: PsaLabelsConfig) -> bool:
    """Whether ``cfg.out`` holds this run's labels, finished, from the same seeds (a chain skips it)."""
    cfg = resolve(cfg)
    return up_to_date(cfg.out, STAGE, manifest_config(cfg), {"seeds": cfg.seeds})


@owns_outputs
def run(cfg: PsaLabelsConfig) -> dict:
    """Write ``<out>/<id>.png`` for every id of the split, then the manifest; returns {"images", "out"}."""
    # 1. options, the split and the seeds covering it, the output folder
    cfg = resolve(cfg)
    rt = cfg.runtime
    info = init_distributed("cpu", rt.timeout)  # the CRF runs on the CPU
    ds = cfg.data.load()
    config = manifest_config(cfg)
    data = identity(ds, cfg.data.split_file)  # reads the image headers
    with SeedReader(cfg.seeds) as reader:  # a missing or incomplete store is an error naming gen-seeds
        # the seeds were made from this data set (before the per-image checks: it names the cause)
        pairing = check_pairing(cfg.seeds, recorded_data(reader.attrs), ds, force=rt.force, ids=reader.ids(), use="make labels from them")
        check_seeds_cover(reader, cfg.seeds, ds)
        out = claim_out(cfg.out, STAGE, config, ("*.png",), force=rt.force)
        key = {"config_hash": config_hash(config), "seeds_sha256": sha256_file(cfg.seeds)}
        done = resume_png_folder(out, key, stage=STAGE, force=rt.force, main=info.is_main)
        barrier()  # every rank has read the marker before rank 0 replaces it
        if info.is_main:
            start_png_folder(out, key, stage=STAGE)
        # 2. this rank's share of the missing labels, in chunks through the CRF workers
        todo = [r for r in ds.records if r.id not in done][info.rank :: info.world_size]
        _label_all(cfg, todo, reader, out, quiet=rt.quiet or not info.is_main)
    barrier()  # every rank's labels are on disk
    # 3. manifest
    if info.is_main:
        manifest = build_manifest(
            STAGE, config, inputs={"seeds": cfg.seeds}, format_version=FOLDER_VERSION,
            extra={"images": len(ds), "split": ds.split, "class_names": list(ds.meta.class_names),
                   **({"pairing": pairing} if pairing and pairing["forced"] else {}),
                   **({"auto_constants": auto_constants(cfg.seeds, AUTO_CUTS)} if cfg.preset == "auto" else {})},
            paths=config_paths(cfg), data=data, files=owned_files(out, ("*.png",)),
        )  # fmt: skip
        write_manifest(out, manifest)
        finish_png_folder(out, stage=STAGE)
    barrier()
    log(f"{STAGE}: confident labels of {len(ds)} images in {out}", rt.quiet or not info.is_main)
    return {"images": len(ds), "out": str(out)}


def _label_all(cfg: PsaLabelsConfig, records, reader, out: Path, quiet: bool) -> None:
    workers = cpu_worker_count(cfg.runtime)
    with make_progress(quiet) as progress:
        bar = progress.add_task(f"confident labels (la {cfg.crf_la:g} / ha {cfg.crf_ha:g})", total=len(records), info="")
        for start in range(0, len(records), CHUNK):
            chunk, jobs = records[start:start + CHUNK], []
            for rec in chunk:
                e = reader.read(rec.id)
                jobs.append((str(rec.image_path), e.cam, [int(k) for k in e.keys], str(label_path(out, rec.id)), cfg.crf_la, cfg.crf_ha, cfg.crf))
            crf_map(_confident_job, jobs, workers)
            progress.update(bar, advance=len(chunk))


def _confident_job(job: tuple) -> None:
    """One image's confident label, written as a PNG (runs in a CRF worker process)."""
    image_path, cams, keys, out_path, la, ha, crf = job
    image = read_image(image_path)
    if image.shape[:2] != cams.shape[1:]:
        raise ArtifactError(f"seeds of {Path(out_path).stem} are {cams.shape[1:]} but image {image_path} is {image.shape[:2]}; the seeds belong to other images")
    write_label_png(out_path, confident_label_for_image(image, cams.astype(np.float32), keys, la, ha, {} if crf else None))
