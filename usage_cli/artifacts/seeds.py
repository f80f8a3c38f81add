"""The seed/CAM store: one versioned HDF5 file (spec in docs/artifacts.md).

Layout::

    seeds.h5                      attrs: encoding-type, encoding-version, producer, complete,
                                         num_classes, class_names, stride, config, config_hash,
                                         bg_threshold, bg_threshold_rule (optional: the cut
                                         gen-seeds chose without ground truth)
      /<image id>/                attrs: done = 1 (set last)
          keys   int16 [n]        mask label values (1..K) of the present classes
          cam    float16 [n,H,W]  one map per key, in [0, 1]
          size   int32 [2]        original (H, W)

The file is built under ``<name>.partial`` and renamed to its final name only when every image
is written (``complete`` = True), so an interrupted run never leaves a file that reads as
complete. The partial file is resumable: groups without ``done`` are rewritten; one of another config
or data set (root attribute ``data``, compared by its fingerprint) is refused, and one HDF5 cannot
open is discarded with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from usage_cli import __version__
from usage_cli.artifacts.disk import check_room, write_failed
from usage_cli.errors import ArtifactError
from usage_cli.heap import release_freed
from usage_cli.progress import log

ENCODING_TYPE = "usage-seeds"
ENCODING_VERSION = "1.0.0"
FILENAME = "seeds.h5"  # in gen-seeds' --out
SUFFIXES = (".h5", ".hdf5")
RESUME = "rerun the same command to resume (the images finished so far are kept)"  # after a failed write


def _group_name(image_id: str) -> str:
    return image_id.replace("%", "%25").replace("/", "%2F")


def _image_id(group: str) -> str:
    return group.replace("%2F", "/").replace("%25", "%")


def partial_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".partial")


def rank_part(out: str | Path, rank: int) -> Path:
    """The store one rank writes under torchrun, merged into ``out/seeds.h5`` by rank 0."""
    return Path(out) / f"seeds.rank{rank}.h5"


def is_seed_store(path: str | Path) -> bool:
    """Whether ``path`` names a seed store, finished or not (a file, its ``.partial``, or a seeds suffix)."""
    p = Path(path)
    return p.suffix in SUFFIXES or p.is_file() or partial_path(p).exists()


@dataclass(frozen=True)
class SeedEntry:
    keys: np.ndarray  # int, (n,)
    cam: np.ndarray  # float16, (n, H, W)
    size: tuple[int, int]

    @property
    def empty_keys(self) -> np.ndarray:
        """Keys whose map has no positive value ("empty seeds": such a class never beats background)."""
        # numpy compares float16 slowly (1 ms for two VOC maps); a positive float16's bits read as a positive int16
        positive = self.cam.view(np.int16) > 0 if self.cam.dtype == np.float16 else self.cam > 0
        return self.keys[~positive.any(axis=(1, 2))]


def _reason(e: Exception) -> str:
    """What an HDF5 error says went wrong, without its C call stack: the system's error message where
    it carries one (``errno = 28, error message = 'No space left on device'``), else its first line."""
    text = str(e)
    system = re.search(r"error message = '([^']+)'", text)
    if system:
        return system.group(1)
    return text.splitlines()[0] if text else type(e).__name__


def _fingerprint(value: Any) -> Any:
    """An attribute as compared on resume: the ``data`` JSON by its fingerprint, anything else as is."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value).get("fingerprint", value)
        except (json.JSONDecodeError, AttributeError):
            return value
    return value


def _differing(old: Any, new: Any) -> str:
    """`` (flip, scales differ)``: the options of two stored configs (JSON) that differ ('' if unknown)."""
    try:
        a, b = (json.loads(v.decode() if isinstance(v, bytes) else v) for v in (old, new))
    except (TypeError, ValueError, AttributeError):
        return ""
    names = sorted(k.removesuffix("_sha256") + " (its file changed)" if k.endswith("_sha256") else k
                   for k in set(a) | set(b) if a.get(k) != b.get(k))  # fmt: skip
    return f" ({', '.join(names)} differ{'s' if len(names) == 1 else ''})" if names else ""


def _entry(g: Any) -> SeedEntry:
    return SeedEntry(keys=g["keys"][()].astype(np.int64), cam=g["cam"][()], size=tuple(int(v) for v in g["size"][()]))


def _check_version(path: Path, attrs: Any) -> None:
    etype = attrs.get("encoding-type")
    version = str(attrs.get("encoding-version", "?"))
    producer = attrs.get("producer", "an unknown tool")
    if etype != ENCODING_TYPE:
        raise ArtifactError(
            f"{path}: not a usage seed store (encoding-type={etype!r}); produce one with `usage gen-seeds`"
        )
    if version.split(".")[0] != ENCODING_VERSION.split(".")[0]:
        raise ArtifactError(
            f"{path}: seed store version {version} (written by {producer}) cannot be read by "
            f"usage {__version__}, which reads {ENCODING_VERSION.split('.')[0]}.x; regenerate it "
            f"with `usage gen-seeds` or use the usage version that wrote it"
        )


class SeedWriter:
    """Writes a seed store incrementally into ``<path>.partial``; :meth:`commit` publishes it."""

    def __init__(self, path: str | Path, attrs: dict[str, Any], resume: bool = True):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        attrs = {k: (json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v) for k, v in attrs.items()}
        self._file = None
        if resume and self.partial.exists():
            try:
                f = h5py.File(self.partial, "a")
            except OSError as e:  # corrupt partial file (a run killed while HDF5 wrote it): not trusted, start over
                log(f"[yellow]warning: {self.partial}: the unfinished seed store here is unreadable ({_reason(e)}); "
                    f"it is discarded and every image is computed again[/]")  # fmt: skip
                self.partial.unlink()
            else:
                for key, what in (("config_hash", "another config"), ("data", "another data set")):
                    old = f.attrs.get(key)
                    if old is not None and key in attrs and _fingerprint(old) != _fingerprint(attrs[key]):
                        which = _differing(f.attrs.get("config"), attrs.get("config")) if key == "config_hash" else ""
                        f.close()
                        raise ArtifactError(
                            f"{self.partial}: an unfinished run with {what}{which} is here; "
                            f"rerun with the same options to resume it, or pass --force to start over"
                        )
                self._file = f
        elif self.partial.exists():
            self.partial.unlink()
        if self._file is None:
            self._file = h5py.File(self.partial, "w")
        f = self._file
        f.attrs["encoding-type"] = ENCODING_TYPE
        f.attrs["encoding-version"] = ENCODING_VERSION
        f.attrs["producer"] = f"usage {__version__}"
        f.attrs["complete"] = False
        for k, v in attrs.items():
            f.attrs[k] = v

    def done_ids(self) -> set[str]:
        return {_image_id(k) for k, g in self._file.items() if g.attrs.get("done", 0) == 1}

    def entries(self) -> Iterable[SeedEntry]:
        """Every finished image's entry, as written so far (for statistics before :meth:`commit`)."""
        for g in self._file.values():
            if g.attrs.get("done", 0) == 1:
                yield _entry(g)

    def write(self, image_id: str, keys: Iterable[int], cam: np.ndarray, size: tuple[int, int]) -> None:
        keys = np.asarray(list(keys), dtype=np.int16)
        cam = np.asarray(cam)
        if cam.ndim != 3 or cam.shape[0] != len(keys):
            raise ValueError(f"cam shape {cam.shape} does not match {len(keys)} keys")
        cam = cam.astype(np.float16)
        check_room(self.partial, cam.nbytes, RESUME)  # HDF5 meeting a full disk may crash the process
        with self._writing():
            name = _group_name(image_id)
            if name in self._file:
                del self._file[name]
            g = self._file.create_group(name)
            g.create_dataset("keys", data=keys)
            opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if cam.size else {}
            g.create_dataset("cam", data=cam, **opts)
            g.create_dataset("size", data=np.asarray(size, dtype=np.int32))
            g.attrs["done"] = 1

    @contextlib.contextmanager
    def _writing(self):
        """A write HDF5 fails (a full disk, a read-only mount) is one line naming the file, not its C stack."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            raise write_failed(self.partial, e, RESUME) from None

    def copy_from(self, reader: SeedReader) -> int:
        """Copy every image of another store as stored (compressed chunks are not decoded and
        re-encoded, which is what made a rank merge cost 12 ms an image); returns the count."""
        n = 0
        for name, g in reader._file.items():
            if name in self._file:
                del self._file[name]
            reader._file.copy(g, self._file, name=name)
            n += 1
        return n

    def flush(self) -> None:
        """Write what is buffered, and hand the heap the images' tensors freed back to the system
        (``usage_cli/heap.py``: without it gen-seeds grew by about 9.5 MB an image, 4.7 GB after 500)."""
        with self._writing():
            self._file.flush()
        release_freed()

    def commit(self, attrs: dict[str, Any] | None = None) -> Path:
        """Set ``attrs`` (figures of the finished store), mark complete, close and rename onto the final path."""
        with self._writing():
            for k, v in (attrs or {}).items():
                self._file.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
            self._file.attrs["complete"] = True
            self._file.close()
        self._file = None
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        """Close without publishing (the partial file stays for a resume). After a failed write HDF5 may
        fail to close too: the first error is the one said."""
        if self._file is not None:
            f, self._file = self._file, None
            with contextlib.suppress(OSError, RuntimeError):
                f.close()

    def __enter__(self) -> SeedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SeedReader:
    """Reads a complete seed store, refusing other formats, other major versions and partial files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            inside = self.path / FILENAME
            where = f"pass the one inside it, {inside}" if inside.is_file() else f"pass the {FILENAME} that `usage gen-seeds` wrote"
            raise ArtifactError(f"{self.path}: is a folder, not a seed store; {where}")
        if not self.path.exists():
            hint = " (an unfinished run left a .partial file: rerun `usage gen-seeds` to finish it)" if partial_path(self.path).exists() else ""
            raise ArtifactError(f"{self.path}: seed file not found{hint}; run `usage gen-seeds` first")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise ArtifactError(f"{self.path}: not a readable HDF5 file ({_reason(e)}); rerun `usage gen-seeds`") from e
        _check_version(self.path, self._file.attrs)
        if not bool(self._file.attrs.get("complete", False)):
            raise ArtifactError(f"{self.path}: seed store is incomplete; rerun `usage gen-seeds`")

    @property
    def attrs(self) -> dict[str, Any]:
        out = {}
        for k, v in self._file.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            out[k] = v.item() if isinstance(v, np.generic) else v
        return out

    def ids(self) -> list[str]:
        return sorted(_image_id(k) for k in self._file.keys())

    def __contains__(self, image_id: str) -> bool:
        return _group_name(image_id) in self._file

    def keys(self, image_id: str) -> np.ndarray:
        """The label values of an image's seed maps, without reading the maps."""
        name = _group_name(image_id)
        if name not in self._file:
            raise ArtifactError(f"{self.path}: no seeds for image '{image_id}'")
        return self._file[name]["keys"][()].astype(np.int64)

    def read(self, image_id: str) -> SeedEntry:
        name = _group_name(image_id)
        if name not in self._file:
            raise ArtifactError(f"{self.path}: no seeds for image '{image_id}'")
        return _entry(self._file[name])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SeedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
