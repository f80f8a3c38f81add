"""Thresholds a user without masks can compute: from the seed maps themselves, never from ground truth.

A seed store's foreground / background cut ``t`` turns maps into labels (background where the
highest present-class map is <= t, as ``usage evaluate`` scores a threshold). The field picks ``t``
on the ground truth of the split it reports; a user with their own photos has none. The rules here
look only at the distribution of the per-pixel highest seed value ``m`` over the images that have at
least one labelled class, accumulated as a histogram (one pass over a store, any size):

* ``otsu``: the cut that maximises the between-class variance of ``m`` (Otsu 1979): seeds that
  separate object from background have two modes, and the cut falls in the valley between them;
* ``mean``: the mean of ``m``;
* a number: a fixed constant (the anchors' habit, e.g. MCTformer's 0.39).

Pure functions of arrays, except :func:`auto_constants`, which reads a seed store (once per version).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

BINS = 100  # histogram resolution on [0, 1]: 0.01, the step of usage evaluate's sweep
METHODS = ("otsu", "mean")
AUTO_RULE = "mean"  # what --bg-threshold auto means: chosen on the synthetic sets by bench/seed_step.py (docs/results.md)


def fg_histogram(cam: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Counts (``bins``,) of the per-pixel maximum of an image's n x H x W seed maps in [0, 1]
    (nothing for an image without maps)."""
    if cam.shape[0] == 0:
        return np.zeros(bins, np.int64)
    m = np.asarray(cam, np.float32).max(0)
    idx = np.clip((m * bins).astype(np.int64), 0, bins - 1)
    return np.bincount(idx.ravel(), minlength=bins).astype(np.int64)


def otsu(hist: np.ndarray) -> float:
    """Otsu's cut of a histogram on [0, 1]: the bin edge maximising the between-class variance."""
    hist = np.asarray(hist, np.float64)
    if hist.sum() <= 0:
        raise ValueError("empty histogram")
    bins = len(hist)
    p = hist / hist.sum()
    centres = (np.arange(bins) + 0.5) / bins
    # 1. class weights and cumulative means for a cut after each bin
    w0 = np.cumsum(p)
    mu0 = np.cumsum(p * centres)
    mu = mu0[-1]
    # 2. between-class variance (mu * w0 - mu0)^2 / (w0 (1 - w0)); undefined where one class is empty
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu * w0 - mu0) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = -1.0
    # 3. the upper edge of the best bin
    return float((int(np.argmax(between)) + 1) / bins)


def hist_mean(hist: np.ndarray) -> float:
    hist = np.asarray(hist, np.float64)
    if hist.sum() <= 0:
        raise ValueError("empty histogram")
    centres = (np.arange(len(hist)) + 0.5) / len(hist)
    return float((hist * centres).sum() / hist.sum())


def threshold_from_histogram(hist: np.ndarray, method: str | float) -> float:
    """The cut of ``method`` (``otsu``, ``mean`` or a constant in [0, 1]) for a seed-value histogram."""
    if isinstance(method, int | float) and not isinstance(method, bool):
        if not 0 <= float(method) <= 1:
            raise ValueError(f"a fixed threshold must lie in [0, 1], got {method}")
        return float(method)
    if method == "otsu":
        return otsu(hist)
    if method == "mean":
        return hist_mean(hist)
    raise ValueError(f"unknown threshold rule '{method}'; choose from {', '.join(METHODS)} or a number in [0, 1]")


def rule_ok(rule: str) -> bool:
    """``auto``, a rule of :data:`METHODS` or a number in [0, 1]."""
    if rule == "auto" or rule in METHODS:
        return True
    try:
        return 0 <= float(rule) <= 1
    except (TypeError, ValueError):
        return False


def seed_statistics(entries, rule: str) -> dict:
    """From every entry of a store (images written before a resume and by other ranks too): the empty
    seeds (present-class maps that are all zero: no positive activation) and the background
    threshold of ``rule`` from the seed values alone."""
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


def power_for_cut(t: float) -> float:
    """PSA's background power alpha whose score ``(1 - m)^alpha`` equals ``m`` at ``m = t``: seeds with
    that background are foreground exactly above ``t`` (PSA's 4 / 32 / 16 cut at 0.28 / 0.077 / 0.123)."""
    t = min(max(float(t), 0.01), 0.99)
    return math.log(t) / math.log(1.0 - t)


def psa_constants(t: float, fg: float, bg: float) -> dict[str, float]:
    """refine-psa's constants from the seeds' threshold ``t``: confident foreground above ``fg * t``
    (``crf_la``), confident background below ``bg * t`` (``crf_ha``), the walk's background at ``t``."""
    fg_cut, bg_cut = _cuts(t, fg, bg)
    return {"crf_la": round(power_for_cut(fg_cut), 4), "crf_ha": round(power_for_cut(bg_cut), 4), "bg_const": round(float(t), 4)}


def _cuts(t: float, fg: float, bg: float) -> tuple[float, float]:
    """The confident-foreground and confident-background cuts at ``fg * t`` and ``bg * t``, kept inside (0, 1)."""
    return min(fg * t, 0.95), max(bg * t, 0.01)


def recorded_threshold(attrs) -> tuple[float, str] | None:
    """The background threshold a seed store's attributes record and how it was chosen (None: none recorded)."""
    if attrs.get("bg_threshold") is None:
        return None
    return float(attrs["bg_threshold"]), str(attrs.get("bg_threshold_rule", "recorded"))


def store_threshold(reader) -> tuple[float, str]:
    """A seed store's own background threshold and how it was chosen: what gen-seeds recorded, or, for a
    store that records none (another tool's, an older one), the ``auto`` rule over its maps now."""
    recorded = recorded_threshold(reader.attrs)
    if recorded is not None:
        return recorded
    st = seed_statistics((reader.read(i) for i in reader.ids()), "auto")["attrs"]
    return st["bg_threshold"], f"{st['bg_threshold_rule']} (the store records none: computed now)"


def auto_psa_constants(reader, cuts: dict[str, float]) -> dict:
    """refine-psa's ``auto`` preset for a seed store (``reader``): its threshold, how it was chosen, the
    confident-label cuts and the constants they give (:func:`psa_constants`)."""
    t, rule = store_threshold(reader)
    fg_cut, bg_cut = _cuts(t, cuts["fg"], cuts["bg"])
    return {"seed_threshold": t, "seed_threshold_rule": rule, "fg_cut": round(fg_cut, 4), "bg_cut": round(bg_cut, 4), **psa_constants(t, **cuts)}


def auto_constants(path: str | Path, cuts: dict[str, float]) -> dict:
    """refine-psa's ``auto`` constants for the seed store at ``path`` (:func:`auto_psa_constants`), for
    psa-labels, psa-walk and refine-psa. Remembered per file version (its resolved path, inode, size and
    modification time: gen-seeds writes a new store by renaming, so a new inode), so the stages of one
    run, each resolving its config and writing its manifest, scan a store that records no threshold
    once, not once per call."""
    p = Path(path).resolve()
    st = p.stat()
    return dict(_auto_constants(str(p), (st.st_ino, st.st_size, st.st_mtime_ns), tuple(sorted(cuts.items()))))


@functools.lru_cache(maxsize=8)
def _auto_constants(path: str, version: tuple[int, int, int], cuts: tuple[tuple[str, float], ...]) -> dict:
    from usage_cli.artifacts.seeds import SeedReader  # the store's format; the rest reads arrays

    with SeedReader(path) as reader:
        return auto_psa_constants(reader, dict(cuts))
