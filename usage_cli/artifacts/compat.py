"""Does an artifact belong to this dataset? Its class names, compared one by one (not only counted);
a seed store's ids and classes against a split's records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from usage_cli.errors import ArtifactError


def check_class_names(path: str | Path, names: Sequence[str] | None, dataset_names: Sequence[str], rerun: str) -> None:
    """One line naming the first differing class when ``names`` (an artifact's) are not the dataset's.

    ``rerun`` says what to do, e.g. "rerun `usage gen-seeds` on this dataset". Artifacts that record
    no names (``None``) are checked by their count elsewhere."""
    if names is None:
        return
    names, dataset_names = [str(n) for n in names], [str(n) for n in dataset_names]
    if len(names) != len(dataset_names):
        raise ArtifactError(f"{path}: made for {len(names)} classes but the dataset has {len(dataset_names)}; {rerun}")
    diff = [(a, b) for a, b in zip(names, dataset_names, strict=True) if a != b]
    if diff:
        more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
        raise ArtifactError(
            f"{path}: made for other classes than the dataset's (class '{diff[0][0]}' where the dataset has "
            f"'{diff[0][1]}'{more}); {rerun}"
        )


def check_seeds_cover(reader, path: str | Path, ds) -> None:
    """A seed store (an open ``SeedReader``) fits dataset split ``ds``: made for its classes, holding
    every id of the split, and seeds only for the classes each image's labels list."""
    attrs = reader.attrs
    k = attrs.get("num_classes")
    if k is not None and int(k) != ds.meta.num_classes:
        raise ArtifactError(f"{path}: seeds are of {k} classes but dataset {ds.meta.name} has {ds.meta.num_classes}; rerun `usage gen-seeds` on this dataset")
    check_class_names(path, attrs.get("class_names"), ds.meta.class_names, "rerun `usage gen-seeds` on this dataset")
    have = set(reader.ids())
    missing = [r.id for r in ds.records if r.id not in have]
    if missing:
        raise ArtifactError(
            f"{path}: no seeds for {len(missing)} of {len(ds)} ids of split '{ds.split}' (first: {missing[0]}); "
            f"the seeds were made for another split — run `usage gen-seeds --split {ds.split}`"
        )
    for r in ds.records:
        extra = sorted(set(int(x) for x in reader.keys(r.id)) - set(r.labels))
        if extra:
            raise ArtifactError(
                f"{path}: the seeds of {r.id} are for classes {extra} its image labels do not list ({list(r.labels)}); "
                f"the seeds were made with other labels — rerun `usage gen-seeds` with this dataset's labels"
            )
