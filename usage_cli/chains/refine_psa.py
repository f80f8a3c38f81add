"""`usage refine-psa`: seeds -> pseudo masks with PSA's AffinityNet and random walk, three stages in order.

1. ``usage psa-labels`` -> ``<out>/confident/`` (confident CRF labels of the training split, a label
   folder with its manifest);
2. ``usage train-aff`` -> ``<out>/affinity-train/`` (``last.pt``, ``log.jsonl``, manifest) and the
   network ``<out>/affinity.pt`` (or ``--aff-out``). ``--affinity FILE`` skips steps 1-2 and walks with
   an AffinityNet trained before (PSA's use: train once, then refine any split);
3. the walk of ``usage psa-walk`` over the inference split -> ``<out>/<id>.png``, then
   ``<out>/manifest.json`` (stage ``refine-psa``, this command's whole config).

Its config is composed of the three stages' configs (``chains/compose.py``): an option of a step is
declared once, in its stage. The chain resolves the ``auto`` preset once (from the seeds' own
threshold) and hands the resolved values to every step, checks every step's options (each stage's
``resolve`` / ``check``) before any work, and runs them through their ``run``. A rerun skips step 1
or 2 when its folder's manifest says it is done with the same options on the same inputs (so changing a walk setting redoes only the walk); ``--force`` replaces this command's
masks, the steps' folders follow their own manifests. Under ``torchrun`` every step shards its work
over the ranks and rank 0 writes the manifests.

Presets: ``psa`` (la 4 / ha 32, beta 8, logt 8, background ``(1 - max)^16``) and ``mctformer``
(la 1 / ha 12, beta 8, logt 6, constant background 0.39; what USAGE used). Any value can be set.
"""

from __future__ import annotations

from dataclasses import MISSING, replace
from pathlib import Path

from usage_cli.algorithms.thresholds import auto_constants
from usage_cli.artifacts import aff_checkpoint
from usage_cli.artifacts.claims import Output, check_outputs, claim_out, owned_files, owns_outputs
from usage_cli.artifacts.labels import FOLDER_VERSION, clear_legacy_cache, finish_png_folder
from usage_cli.artifacts.manifest import (
    build_manifest,
    check_unchanged,
    config_paths,
    file_version,
    run_config,
    write_manifest,
)
from usage_cli.chains.compose import compose_config, pick
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.engine.distributed import barrier, check_device, is_main_process, worker_count
from usage_cli.errors import ConfigError, check_options
from usage_cli.presets import AUTO_CUTS, REFINE_PSA
from usage_cli.progress import log
from usage_cli.runtime import Runtime, config_drop, runtime_checks, takes_runtime
from usage_cli.stages import psa_labels, psa_walk, train_aff

STAGE = "refine-psa"
PRESETS = REFINE_PSA  # usage_cli/presets.py (shown in --help)
CONFIDENT, AFFINITY_TRAIN = "confident", "affinity-train"  # the steps' folders in --out
STEPS = (psa_labels.PsaLabelsConfig, train_aff.TrainAffConfig, psa_walk.PsaWalkConfig)

RefinePsaConfig = takes_runtime(STAGE)(takes_data(compose_config(
    "RefinePsaConfig", STEPS,
    own=[("seeds", Path, MISSING), ("out", Path, MISSING), ("data", DataSpec, DataSpec(split="train_aug")),
         ("infer_split", str | None, None),  # default: the training split
         ("infer_split_file", Path | None, None)],
    override={"pretrained": (bool | None, None),  # None: from the preset (both start AffinityNet from ImageNet weights)
              "affinity": (Path | None, None)},  # a trained AffinityNet: skip confident labels and training
    tail=[("runtime", Runtime, Runtime())],
    internal=("labels",),  # train-aff's input: the labels of step 1
    doc="refine-psa's options: its own, then those of psa-labels, train-aff and psa-walk (composed from their configs).",
    module=__name__,
)))  # fmt: skip
RefinePsaConfig.OUTPUTS = {  # what it writes (artifacts/claims.py checks them first)
    "out": Output("--out"),
    "aff_out": Output("--aff-out", "file", "a usage AffinityNet checkpoint", aff_checkpoint.is_aff_checkpoint, aff_checkpoint.FILENAME),
}


def resolve(cfg: RefinePsaConfig) -> RefinePsaConfig:
    """The preset's values where unset — the ``auto`` cuts and walk background from the seeds' own
    threshold, read once here and handed to every step — and every step's options checked."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    if cfg.preset == "auto" and Path(cfg.seeds).is_file():  # (without the store, --print-config shows them unset: they come from it)
        auto = auto_constants(cfg.seeds, AUTO_CUTS)
        cfg = replace(cfg, **{k: auto[k] for k in ("crf_la", "crf_ha", "bg_const") if getattr(cfg, k) is None})
    cfg = replace(cfg, **{k: v for k, v in PRESETS[cfg.preset].items() if getattr(cfg, k) is None})
    check_options([
        *runtime_checks(cfg.runtime),
        (cfg.affinity is None or Path(cfg.affinity).exists(), f"{cfg.affinity}: --affinity file not found; train one with `usage refine-psa` first"),
    ])  # fmt: skip
    labels, aff, walk = steps(cfg)
    psa_labels.resolve(labels), train_aff.resolve(aff), psa_walk.resolve(walk)
    return cfg


def steps(cfg: RefinePsaConfig) -> tuple[psa_labels.PsaLabelsConfig, train_aff.TrainAffConfig, psa_walk.PsaWalkConfig]:
    """The configs of the three stages this run chains (of a resolved ``cfg``): each takes its options
    from the chain's; the chain sets where they write and what they read from each other."""
    out, rt = Path(cfg.out), replace(cfg.runtime, workers=worker_count(cfg.runtime))
    labels = pick(psa_labels.PsaLabelsConfig, cfg, out=out / CONFIDENT, runtime=rt)
    aff = pick(train_aff.TrainAffConfig, cfg, labels=labels.out, out=out / AFFINITY_TRAIN, aff_out=cfg.aff_out or out / aff_checkpoint.FILENAME, runtime=rt)
    infer = cfg.infer_split is not None or cfg.infer_split_file is not None
    walk_data = replace(cfg.data, split=cfg.infer_split or cfg.data.split, split_file=cfg.infer_split_file if infer else cfg.data.split_file)
    walk = pick(psa_walk.PsaWalkConfig, cfg, out=out, data=walk_data, affinity=cfg.affinity or train_aff.affinity_path(aff), runtime=rt)
    return labels, aff, walk


@owns_outputs
def run(cfg: RefinePsaConfig) -> dict:
    """Run the three steps; returns {"images", "out", "affinity", "trained"}."""
    # 1. options, networks and inputs of every step, checked before any work; the output folder
    cfg = resolve(cfg)
    rt = cfg.runtime
    labels_cfg, aff_cfg, walk_cfg = steps(cfg)
    check_device(rt.device)
    for step in (labels_cfg, aff_cfg) if cfg.affinity is None else ():
        check_outputs(step)  # each step's outputs (a user's file at affinity.pt): now, not after the CRF step
    if cfg.affinity is None:  # backbone, crop, weights; an unfinished AffinityNet run: before the CRF step
        train_aff.check(aff_cfg)
    if cfg.affinity is not None or walk_cfg.data != labels_cfg.data:  # (psa-labels checks the seeds of its split first)
        psa_walk.check(walk_cfg, affinity=cfg.affinity is not None)
    config = run_config(cfg, config_drop(cfg, ("aff_out",)))
    out = claim_out(cfg.out, STAGE, config, ("*.png",), force=rt.force)
    seeds_version = file_version(cfg.seeds)  # the store this run starts from: every step reads it (checked before publishing)
    # 2. confident labels and AffinityNet, each unless its folder already holds it
    trained = False
    if cfg.affinity is None:
        if is_main_process():
            clear_legacy_cache(labels_cfg.out)
        barrier()
        _step(psa_labels, labels_cfg, rt.quiet)
        trained = _step(train_aff, aff_cfg, rt.quiet)
    # 3. the walk, published under this command's name
    aff_version = file_version(walk_cfg.affinity)
    walked = psa_walk.run(walk_cfg, publish_as=(STAGE, config))
    if is_main_process():  # made from the seeds and the AffinityNet it began with, or not published
        check_unchanged({"--seeds": (cfg.seeds, seeds_version), "the AffinityNet": (walk_cfg.affinity, aff_version)}, STAGE)
        pairing = walked["pairing"]
        manifest = build_manifest(
            STAGE, config, inputs={"seeds": cfg.seeds, **({"affinity": walk_cfg.affinity} if cfg.affinity else {})},
            format_version=FOLDER_VERSION,
            extra={"images": walked["images"], "split": walked["split"], "class_names": walked["class_names"],
                   "affinity": str(walk_cfg.affinity), "affinity_sha256": walked["affinity_sha256"], "affinity_trained_now": trained,
                   **({"pairing": pairing} if pairing and pairing["forced"] else {}),
                   **({"auto_constants": auto_constants(cfg.seeds, AUTO_CUTS)} if cfg.preset == "auto" else {})},
            paths=config_paths(cfg), data=walked["data"], files=owned_files(out, ("*.png", aff_checkpoint.FILENAME, AFFINITY_TRAIN, CONFIDENT)),
        )  # fmt: skip
        write_manifest(out, manifest)
        finish_png_folder(out, stage=STAGE)
    barrier()
    return {"images": walked["images"], "out": str(out), "affinity": str(walk_cfg.affinity), "trained": trained}


def _step(stage, step_cfg, quiet: bool) -> bool:
    """Run one stage unless its folder's manifest says it is done; whether it ran."""
    if stage.is_done(step_cfg):
        log(f"{STAGE}: {step_cfg.out} is up to date ({stage.STAGE}, same options and inputs): kept", quiet or not is_main_process())
        return False
    stage.run(step_cfg)
    return True
