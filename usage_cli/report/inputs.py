"""What a report is about: metrics files, the artifacts they scored, their manifests, the dataset.

A positional argument is a ``metrics.json`` file or a RUN_DIR. A RUN_DIR (a folder like ``demo/``,
the Makefile's ``OUT``) expands to

* every metrics file in ``RUN_DIR/metrics/*.json`` (or ``RUN_DIR/*.json`` when it has no
  ``metrics/``); JSON files there that are not metrics (e.g. ``usage report --out`` rows) are skipped;
* every artifact in ``RUN_DIR/*/`` that no metrics file scored: a ``seeds.h5``, or a label-PNG folder
  whose ``manifest.json`` names a stage that writes one (``usage_cli/registry.py``: psa-labels'
  confident labels, refine-psa's and psa-walk's pseudo masks, predict-seg's predictions; a split
  without ground truth still gets its gallery);

in the order seeds (by name, so ``seeds-cam-*`` before ``seeds-usage-*``), confident labels and pseudo
masks, predictions. Explicit files keep the order given. An artifact's kind is the one the registry
gives the stage its manifest names.

A positional argument may also be such a folder itself (``usage report preds/``: the predictions of
``predict-seg --images``, shown as a gallery; their data set names no classes, so the manifest's do).

``metrics.json`` records the paths as ``usage evaluate`` was given them (relative to where it ran). A
recorded path that does not exist from here is looked up under the RUN_DIR (or the folder above
``metrics/``) by its trailing components, so a run folder that moved still finds its artifacts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from usage_cli.artifacts.labels import label_ids
from usage_cli.artifacts.manifest import read_manifest
from usage_cli.artifacts.seeds import SeedReader
from usage_cli.data import DataSpec
from usage_cli.data.identity import check_pairing, recorded_data
from usage_cli.data.records import Dataset
from usage_cli.errors import ArtifactError, UsageError
from usage_cli.registry import LABEL_FOLDERS, SEEDS, kind_of

SHOWN = (SEEDS, *LABEL_FOLDERS)  # the kinds of artifact the report shows (the registry's), besides "labels"
_RANK = {SEEDS: 0, "preds": 2}  # others (confident labels, masks, labels) between the two


@dataclass(frozen=True)
class Entry:
    """One evaluated (or, in a RUN_DIR, found) artifact."""

    name: str  # unique display name: the metrics file's stem, or the artifact folder's name
    kind: str  # "seeds" | "confident" | "masks" | "preds" | "labels" (label PNGs of unknown origin)
    split: str
    metrics: dict | None  # the metrics.json content; None for an artifact without one
    metrics_path: Path | None
    recorded: str | None  # the artifact path as metrics.json recorded it
    artifact: Path | None  # seeds.h5 or label-PNG folder; None when it is not found from here
    manifest: dict | None
    dataset: DataSpec | None
    upstream: tuple[tuple[str, dict], ...] = ()  # (input name, the manifest of the stage that made it)


def read_metrics(path: Path) -> dict:
    """A ``usage evaluate`` metrics file, or an :class:`ArtifactError` saying what it is not."""
    p = Path(path)
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise ArtifactError(f"{p}: metrics file not found; run `usage evaluate --out {p}` first") from e
    except IsADirectoryError as e:
        raise ArtifactError(f"{p}: is a folder with neither metrics/*.json nor *.json metrics files") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{p}: not a metrics.json ({e})") from e
    if not isinstance(m, dict) or not {"miou", "fpr", "fnr"} <= m.keys():
        raise ArtifactError(f"{p}: not a usage metrics.json (no miou/fpr/fnr keys)")
    return m


def locate(recorded: str | None, bases: list[Path]) -> Path | None:
    """``recorded`` if it exists from here, else the first ``base/<trailing components>`` that does."""
    if not recorded:
        return None
    p = Path(recorded).expanduser()
    if p.exists():
        return p
    parts = p.parts[1:] if p.is_absolute() else p.parts
    for base in bases:
        for i in range(len(parts)):
            cand = base.joinpath(*parts[i:])
            if cand.exists():
                return cand
    return None


def load_entries(paths: tuple[Path, ...]) -> list[Entry]:
    """Expand RUN_DIRs and load every metrics file and artifact, in report order."""
    entries: list[Entry] = []
    for p in map(Path, paths):
        if p.is_dir() and kind_of(_manifest(p).get("stage")) in LABEL_FOLDERS:
            entries.append(_entry_from_artifact(p, p.parent))  # one mask folder (new photos' predictions)
        elif p.is_dir():
            entries += _expand_run_dir(p)
        else:
            entries.append(_entry_from_metrics(p, read_metrics(p), run_dir=None))
    return _unique_names(entries)


def _expand_run_dir(run_dir: Path) -> list[Entry]:
    folder = run_dir / "metrics" if (run_dir / "metrics").is_dir() else run_dir
    found = []
    for f in sorted(folder.glob("*.json")):
        try:
            found.append(_entry_from_metrics(f, read_metrics(f), run_dir))
        except ArtifactError:
            continue  # not a metrics file (e.g. `usage report --out` rows)
    scored = {e.artifact.resolve() for e in found if e.artifact is not None}
    for art in _artifacts_in(run_dir):
        if art.resolve() not in scored:
            found.append(_entry_from_artifact(art, run_dir))
    if not found:
        raise ArtifactError(
            f"{run_dir}: no metrics files ({folder}/*.json) and no seeds.h5 / mask folders inside; "
            f"run `make eval OUT={run_dir}` or `usage evaluate --out {run_dir}/metrics/NAME.json` first"
        )
    return sorted(found, key=lambda e: (_RANK.get(e.kind, 1), e.name))


def _artifacts_in(run_dir: Path) -> list[Path]:
    out = []
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if (sub / "seeds.h5").exists():
            out.append(sub / "seeds.h5")
        elif (sub / "manifest.json").exists() and kind_of(_manifest(sub).get("stage")) in LABEL_FOLDERS:
            out.append(sub)
    return out


def _manifest(artifact: Path | None) -> dict:
    if artifact is None:
        return {}
    try:
        return read_manifest(artifact)
    except UsageError:
        return {}


def _bases(metrics_path: Path | None, run_dir: Path | None) -> list[Path]:
    bases = [run_dir] if run_dir is not None else []
    if metrics_path is not None:
        bases += [metrics_path.parent.parent, metrics_path.parent]
    return list(dict.fromkeys(bases))


def _upstream(manifest: dict, bases: list[Path]) -> tuple[tuple[str, dict], ...]:
    """The manifests of an artifact's inputs (e.g. the train-cls run behind a seed store's checkpoint)."""
    out = []
    for name, info in manifest.get("inputs", {}).items():
        m = _manifest(locate(info.get("path"), bases))
        if m:
            out.append((name, m))
    return tuple(out)


def _kind(artifact: Path | None, manifest: dict, metrics: dict | None) -> str:
    if kind_of(manifest.get("stage")) in SHOWN:
        return kind_of(manifest["stage"])
    if (artifact is not None and artifact.suffix in (".h5", ".hdf5")) or (metrics or {}).get("threshold_mode", "labels") != "labels":
        return "seeds"
    return "labels"


def _dataset_ref(metrics: dict | None, manifest: dict, bases: list[Path], run_dir: Path | None) -> DataSpec | None:
    cfg = manifest.get("config", {})
    m = metrics or {}
    name = m.get("dataset") or cfg.get("dataset")
    split = m.get("split") or cfg.get("split")
    root = locate(m.get("root") or cfg.get("root"), bases)
    if root is None and run_dir is not None and (run_dir / "data").is_dir():
        root = run_dir / "data"
    if not (name and split and root):
        return None

    def opt(key: str) -> Path | None:
        return locate(m.get(key) or cfg.get(key), bases)

    unlabelled = bool(m.get("allow_unlabelled") or cfg.get("allow_unlabelled"))
    return DataSpec(dataset=name, root=root, split=split, split_file=opt("split_file"), classes_file=opt("classes_file"), allow_unlabelled=unlabelled)


def _entry_from_metrics(path: Path, metrics: dict, run_dir: Path | None) -> Entry:
    bases = _bases(path, run_dir)
    artifact = locate(metrics.get("pred"), bases)
    manifest = _manifest(artifact)
    return Entry(
        name=path.stem,
        kind=_kind(artifact, manifest, metrics),
        split=str(metrics.get("split", "?")),
        metrics=metrics,
        metrics_path=path,
        recorded=metrics.get("pred"),
        artifact=artifact,
        manifest=manifest or None,
        dataset=_dataset_ref(metrics, manifest, bases, run_dir),
        upstream=_upstream(manifest, bases),
    )


def _entry_from_artifact(artifact: Path, run_dir: Path) -> Entry:
    manifest = _manifest(artifact)
    folder = artifact.parent if artifact.is_file() else artifact
    cfg = manifest.get("config", {})
    return Entry(
        name=folder.name,
        kind=_kind(artifact, manifest, None),
        split=str(cfg.get("split", "?")),
        metrics=None,
        metrics_path=None,
        recorded=str(artifact),
        artifact=artifact,
        manifest=manifest or None,
        dataset=_dataset_ref(None, manifest, [run_dir], run_dir),
        upstream=_upstream(manifest, [run_dir]),
    )


def _unique_names(entries: list[Entry]) -> list[Entry]:
    """Two runs' ``seeds-usage-val.json`` become ``runA/seeds-usage-val`` and ``runB/seeds-usage-val``."""

    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    out, seen = [], set()
    for e in entries:
        name = e.name
        if counts[name] > 1:
            where = e.metrics_path or e.artifact
            run = where.parent.parent if where is not None and where.parent.name == "metrics" else (where.parent if where else None)
            name = f"{run.name}/{name}" if run is not None and run.name else name
        base, i = name, 2
        while name in seen:
            name, i = f"{base} ({i})", i + 1
        seen.add(name)
        out.append(replace(e, name=name))
    return out


def open_datasets(by_split: dict[str, list[Entry]]) -> tuple[dict[str, Dataset], list[str]]:
    """The dataset of each split that has artifacts to show (from the first entry that names one),
    and a note for each split that gets no gallery, saying why."""

    datasets, notes, cache = {}, [], {}
    for split, entries in by_split.items():
        if not any(e.artifact is not None for e in entries):
            notes.append(f"{split}: no artifact found from here ({', '.join(e.recorded or e.name for e in entries)}): no gallery")
            continue
        ref: DataSpec | None = next((e.dataset for e in entries if e.dataset is not None), None)
        if ref is None:
            notes.append(f"{split}: no dataset root recorded or found (RUN_DIR/data): no gallery")
            continue
        try:
            if ref not in cache:
                cache[ref] = _named(ref.load(require_images=False), entries)
            datasets[split] = cache[ref]
        except UsageError as e:
            notes.append(f"{split}: dataset not readable ({e}): no gallery")
    return datasets, notes


def _named(ds: Dataset, entries: list[Entry]) -> Dataset:
    """A data set without class names (new photos, ``--dataset images``) named by its artifacts' manifests."""
    names = next((m["class_names"] for e in entries if isinstance(m := e.manifest or {}, dict) and m.get("class_names")), None)
    if ds.meta.class_names or not names:
        return ds
    return replace(ds, meta=replace(ds.meta, class_names=tuple(names)))


def check_datasets(by_split: dict[str, list[Entry]], datasets: dict[str, Dataset], force: bool) -> list[str]:
    """Every entry drawn over a split's data set was made (or scored) on that data set: its recorded
    fingerprint (the metrics file's ``data``, else the artifact manifest's) against the data set the
    gallery shows. A mismatch is one line naming both, or with ``force`` a note on the page."""
    notes = []
    for split, ds in datasets.items():
        for e in by_split[split]:
            if recorded_data(e.metrics) is not None:  # the scored split: the metrics' ids
                recorded, ids = recorded_data(e.metrics), set(e.metrics.get("per_image") or ()) or None
            else:  # the split the artifact was made from: the artifact's ids
                recorded, ids = recorded_data(e.manifest), _artifact_ids(e.artifact)
            pairing = check_pairing(e.metrics_path or e.artifact or e.name, recorded, ds, force=force, ids=ids, use="show it")
            if pairing is not None and pairing["forced"]:
                notes.append(f"{split}: {e.name} was made from {recorded.get('root')} split '{recorded.get('split')}', not from the data set shown (--force)")
    return notes


def _artifact_ids(artifact: Path | None) -> set[str] | None:
    """The image ids of a seed store or a folder of label PNGs."""
    if artifact is None:
        return None
    if artifact.is_dir():
        return label_ids(artifact)
    try:
        with SeedReader(artifact) as r:
            return set(r.ids())
    except UsageError:
        return None


def sample_key(image_id: str) -> str:
    """A reproducible pseudo-random order of ids (the same on every machine and for every split size)."""
    return hashlib.sha1(image_id.encode()).hexdigest()
