"""Statistics over runs, as docs/results.md reports them: mean and sample standard deviation over
training seeds, paired differences (same seed) to a baseline, and their one-cell format
(``52.3 ± 1.2``, ``+4.0 ± 0.8``, ``47.3 (n=1)``). The bench scripts (paper tables, the chain study,
the seed step, the walk grid) all count and print with these."""

from __future__ import annotations

import math
import statistics


def finite(values) -> list[float]:
    """The values that are numbers (unfinished runs' None and undefined NaN left out)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(values) -> dict:
    """mean and sample std (ddof=1) of the finite values; std is None below two values."""
    v = finite(values)
    return {
        "mean": statistics.fmean(v) if v else None,
        "std": statistics.stdev(v) if len(v) > 1 else None,
        "n": len(v),
    }


def paired_diffs(row: dict[int, float | None], base: dict[int, float | None]) -> dict[int, float]:
    """row - base per seed, over the seeds where both are finite."""
    out = {}
    for s in sorted(set(row) & set(base)):
        a, b = row[s], base[s]
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            out[s] = float(a) - float(b)
    return out


def fmt_stat(st: dict, digits: int = 1, signed: bool = False) -> str:
    """``mean ± std`` to ``digits`` (``+`` shown with ``signed``; never ``-0.0``), ``mean (n=1)``, or ``-``."""
    if not st or st.get("n", 0) == 0 or st.get("mean") is None:
        return "-"
    sign = "+" if signed else ""
    m = f"{round(st['mean'], digits) or 0.0:{sign}.{digits}f}"  # no "-0.0"
    return f"{m} (n=1)" if st["n"] == 1 else f"{m} ± {st['std']:.{digits}f}"


def fmt_num(x: float) -> str:
    """A number as a flag or a table prints it: ``50``, ``0.25``, ``1e-05``."""
    return f"{x:g}"
