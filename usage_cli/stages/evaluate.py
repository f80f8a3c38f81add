"""`usage evaluate`: mIoU / FPR / FNR of label PNGs or seed maps against the ground-truth masks.

Reads only ground-truth masks and predictions (an image's header only to tell which of two files of different
sizes is wrong). One (K+1)x(K+1) int64 confusion matrix
is accumulated over the split (per threshold, for seeds); chunks of images are scored in worker
processes and their counts summed. For a seed store the empty seeds (present-class maps that are
all zero, see `usage gen-seeds`) of the scored images are counted on the way, and each image's own
mIoU (at the chosen threshold) is kept for `usage report`'s worst-first gallery.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from usage_cli.algorithms.thresholds import recorded_threshold
from usage_cli.artifacts import metrics_file
from usage_cli.artifacts.claims import Output, json_is, owns_outputs
from usage_cli.artifacts.compat import check_class_names
from usage_cli.artifacts.labels import folder_class_names, label_ids
from usage_cli.artifacts.manifest import build_manifest, config_paths, read_manifest, run_config
from usage_cli.artifacts.metrics_file import write_metrics
from usage_cli.artifacts.seeds import SeedReader, is_seed_store
from usage_cli.data.identity import check_pairing, identity, recorded_data
from usage_cli.dataspec import DataSpec, takes_data
from usage_cli.errors import ArtifactError, ConfigError, check_options
from usage_cli.metrics.confusion import metrics_from_confusion
from usage_cli.metrics.scoring import ScoreJob, score_chunk
from usage_cli.metrics.sweep import confusions_from_counts, parse_thresholds
from usage_cli.progress import make_progress
from usage_cli.runtime import Runtime, config_drop, cpu_worker_count, runtime_checks, takes_runtime

METRICS = ("miou", "fpr", "fnr")


@takes_runtime("evaluate")
@takes_data
@dataclass(frozen=True)
class EvaluateConfig:
    OUTPUTS: ClassVar[dict[str, Output]] = {  # what it writes (artifacts/claims.py checks it first)
        "out": Output("--out", "file", "a usage metrics file", json_is(lambda doc: is_metrics_file(doc)), metrics_file.FILENAME),
    }
    pred: Path
    data: DataSpec = DataSpec(split="val")
    metrics: tuple[str, ...] = METRICS
    out: Path | None = None
    bg_thresholds: str = "0.00:0.95:0.01"
    bg_threshold: float | None = None
    bg_power: float | None = None
    allow_missing: bool = False
    runtime: Runtime = Runtime()  # workers, quiet, force (score a prediction made from another data set; recorded in the output)


@dataclass(frozen=True)
class _Prediction:
    """What evaluate reads of a prediction before scoring, in one open of it: its kind ("png" | "seeds"),
    ids, recorded class names and data set, and a seed store's own background threshold."""

    kind: str
    ids: set[str]
    class_names: list[str] | None
    recorded: dict | None
    threshold: dict | None = None


def _read_prediction(pred: Path) -> _Prediction:
    if pred.is_dir():
        try:  # PNGs made by hand: no manifest, nothing recorded
            recorded = recorded_data(read_manifest(pred))
        except ArtifactError:
            recorded = None
        return _Prediction("png", label_ids(pred), folder_class_names(pred), recorded)
    if not is_seed_store(pred):
        raise ArtifactError(f"{pred}: no such folder of label PNGs or seed file")
    with SeedReader(pred) as r:
        t = recorded_threshold(r.attrs)
        return _Prediction("seeds", set(r.ids()), r.attrs.get("class_names"), recorded_data(r.attrs), None if t is None else {"value": t[0], "rule": t[1]})


def is_metrics_file(doc) -> bool:
    """A ``metrics.json`` usage evaluate wrote (the only file ``--out`` replaces)."""
    return isinstance(doc, dict) and isinstance(doc.get("manifest"), dict) and doc["manifest"].get("stage") == "evaluate"


def _summary(mat: np.ndarray, pred_ignored: np.ndarray, names: tuple[str, ...]) -> dict:
    res = metrics_from_confusion(mat, pred_ignored)

    def pct(v: float) -> float | None:
        return None if np.isnan(v) else round(100.0 * float(v), 4)

    return {
        "miou": pct(res["miou"]),
        "fpr": pct(res["mfpr"]),
        "fnr": pct(res["mfnr"]),
        "per_class": {n: {"iou": pct(res["iou"][c]), "fpr": pct(res["fpr"][c]), "fnr": pct(res["fnr"][c])} for c, n in enumerate(names)},
        "confusion": mat.tolist(),
    }


def _score_all(cfg: EvaluateConfig, kind: str, items: list, n: int, thresholds: np.ndarray, missing: list[str]):
    """Chunks of images scored in worker processes; their counts summed: (counts, pred_ignored,
    empty seeds, {id: the image's mIoU})."""
    workers = max(1, min(cpu_worker_count(cfg.runtime), len(items)))
    chunks = [tuple(items[i::workers * 4]) for i in range(min(len(items), workers * 4))]
    jobs = [ScoreJob(kind, str(cfg.pred), c, n, tuple(thresholds.tolist()), cfg.bg_power, frozenset(missing)) for c in chunks]
    parts = []
    with make_progress(cfg.runtime.quiet) as progress, (ProcessPoolExecutor(max_workers=workers) if workers > 1 else nullcontext()) as pool:
        bar = progress.add_task(f"evaluate {cfg.data.split}", total=len(items), info="")
        for job, part in zip(jobs, pool.map(score_chunk, jobs) if pool else map(score_chunk, jobs), strict=True):
            parts.append(part)
            progress.update(bar, advance=len(job.items))
    per_image = {k: v for p in parts for k, v in p[3].items()}
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts), per_image


@owns_outputs
def run(cfg: EvaluateConfig) -> dict:
    # 1. options, ground truth, predictions
    check_options(runtime_checks(cfg.runtime))
    unknown = set(cfg.metrics) - set(METRICS)
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}")
    if cfg.bg_threshold is not None and cfg.bg_power is not None:
        raise ConfigError("give either --bg-threshold or --bg-power, not both")
    check_options([
        (cfg.bg_threshold is None or 0 <= cfg.bg_threshold <= 1, f"--bg-threshold must lie in [0, 1] (seed maps are in [0, 1]), got {cfg.bg_threshold}"),
        (cfg.bg_power is None or cfg.bg_power > 0, f"--bg-power must be positive, got {cfg.bg_power}"),
    ])
    ds = cfg.data.load(require_images=False)
    no_mask = [r.id for r in ds.records if r.mask_path is None]
    if no_mask:
        raise ArtifactError(f"{cfg.data.root}: no ground-truth mask for {len(no_mask)} id(s) of '{cfg.data.split}' (first: {no_mask[0]})")
    pred = _read_prediction(cfg.pred)  # the one read of it before scoring
    kind, have = pred.kind, pred.ids
    check_class_names(cfg.pred, pred.class_names, ds.meta.class_names, "score it on the dataset it was made for, or pass its --classes")
    data = identity(ds, cfg.data.split_file, check_images=False)  # evaluate reads no image
    pairing = check_pairing(cfg.pred, pred.recorded, ds, force=cfg.runtime.force, ids=have, use="score it", known=data["fingerprint"])
    missing = sorted({r.id for r in ds.records} - have)
    if missing and not cfg.allow_missing:
        raise ArtifactError(f"{cfg.pred}: no prediction for {len(missing)} of {len(ds)} ids of '{cfg.data.split}' (first: {missing[0]}); pass --allow-missing to count them as background")
    try:
        thresholds = parse_thresholds(str(cfg.bg_threshold) if cfg.bg_threshold is not None else cfg.bg_thresholds)
    except ValueError as e:
        raise ConfigError(f"--bg-thresholds / --bg-threshold: {e}") from e
    mode = "power" if cfg.bg_power is not None else ("fixed" if cfg.bg_threshold is not None else "sweep-best")
    pipeline_t = pred.threshold if mode == "sweep-best" else None
    if pipeline_t is not None:  # scored exactly: the store's own cut joins the sweep
        thresholds = np.unique(np.append(thresholds, round(pipeline_t["value"], 6)))
    # 2. score chunks in parallel and sum
    items = [(r.id, str(r.mask_path), str(r.image_path or "")) for r in ds.records]
    total, pred_ignored, empty, per_image = _score_all(cfg, kind, items, ds.meta.num_classes + 1, thresholds, missing)
    # 3. pick the threshold (seeds), summarise
    result = {"dataset": cfg.data.dataset, "split": cfg.data.split, "pred": str(cfg.pred), "num_images": len(items), "num_missing": len(missing)}
    result.update(root=str(cfg.data.root), split_file=_opt_str(cfg.data.split_file), classes_file=_opt_str(cfg.data.classes_file))
    result.update({"allow_unlabelled": True} if cfg.data.allow_unlabelled else {})
    result.update(data=data, **({"pairing": pairing} if pairing is not None else {}))
    if kind == "seeds" and mode != "power":
        mats = confusions_from_counts(total)
        ms = [metrics_from_confusion(m) for m in mats]
        curve = [m["miou"] for m in ms]
        best = int(np.nanargmax(curve))
        result.update(_summary(mats[best], pred_ignored, ds.meta.all_names))

        def as_curve(values) -> dict[str, float]:
            return {f"{t:.2f}": round(100 * v, 4) for t, v in zip(thresholds, values, strict=True)}

        result.update(threshold=float(thresholds[best]), threshold_mode=mode, curve=as_curve(curve))
        result.update(curve_fpr=as_curve([m["mfpr"] for m in ms]), curve_fnr=as_curve([m["mfnr"] for m in ms]))
        if pipeline_t is not None:  # the score a user without ground truth gets: at the store's own threshold
            i = int(np.flatnonzero(np.isclose(thresholds, pipeline_t["value"]))[0])
            at = _summary(mats[i], pred_ignored, ds.meta.all_names)
            result["pipeline"] = {"threshold": float(thresholds[i]), "rule": pipeline_t["rule"], **{k: at[k] for k in ("miou", "fpr", "fnr")}}
        per_image = {k: v[best] for k, v in per_image.items()}
    else:
        result.update(_summary(total, pred_ignored, ds.meta.all_names))
        result.update(threshold=None, threshold_mode=mode if kind == "seeds" else "labels", bg_power=cfg.bg_power)
    if kind == "seeds":
        result["empty_seeds"] = {"maps": int(empty[0]), "pairs": int(empty[1]), "images": int(empty[2])}
    result["metrics"] = list(cfg.metrics)
    result["per_image"] = {k: (None if np.isnan(v) else round(100 * float(v), 2)) for k, v in sorted(per_image.items())}
    if cfg.out is not None:
        write_metrics(cfg.out, result, _manifest(cfg))
    return result


def _manifest(cfg: EvaluateConfig) -> dict:
    """What made a metrics file: the options (no output path, workers, quiet) and the scored artifact,
    pinned like any stage input (a folder of PNGs made by hand, without a manifest, is not pinned)."""
    config = run_config(cfg, config_drop(cfg, ("out",)))
    return build_manifest("evaluate", config, inputs={"pred": cfg.pred}, paths=config_paths(cfg), unpinned_ok=True)


def _opt_str(p: Path | None) -> str | None:
    return None if p is None else str(p)

