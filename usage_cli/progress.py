"""One progress factory for every stage, on stderr: a rich bar on a terminal, plain log lines
otherwise (a file, a pipe, a batch job), nothing with ``--quiet``.

Streams: status lines and progress go to stderr, results (tables, ``--print-config``) to stdout.
"""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(quiet: bool = False) -> Progress | PlainProgress:
    """Used as ``with make_progress(q) as p: t = p.add_task(desc, total=n, info=""); p.update(t, advance=k)``.
    Optional task fields for the plain lines: ``every`` (items between lines; 0: only at the end) and
    ``after`` (items of later tasks of the same run, for the ETA; e.g. the remaining epochs)."""
    if not quiet and not sys.stderr.isatty():
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        disable=quiet,
        transient=False,
    )


class PlainProgress:
    """Progress as plain lines on stderr, for logs: one when a task ends, and in between every
    ``every`` items (default: a tenth of the total) or ``interval`` seconds, whichever comes first,
    each with the count, the rate and the ETA. Takes the calls of rich's ``Progress`` that stages use."""

    def __init__(self, interval: float = 60.0):
        self.interval = interval
        self.tasks: list[dict] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        every = fields.get("every")
        now = time.monotonic()
        self.tasks.append({
            "description": description, "total": total, "done": 0, "start": now, "shown_at": now, "shown": 0,
            "every": max(1, math.ceil((total or 0) / 10)) if every is None else every, "after": fields.get("after", 0),
            "info": fields.get("info", ""), "ended": False,
        })  # fmt: skip
        return len(self.tasks) - 1

    def update(self, task_id: int, *, advance: float = 0, completed: float | None = None, info: str | None = None, **_) -> None:
        t = self.tasks[task_id]
        t["done"] = completed if completed is not None else t["done"] + advance
        t["info"] = t["info"] if info is None else info
        now = time.monotonic()
        ended = t["total"] is not None and t["done"] >= t["total"]
        due = (t["every"] and t["done"] - t["shown"] >= t["every"]) or now - t["shown_at"] >= self.interval
        if (ended and not t["ended"]) or (due and not ended):
            t.update(shown=t["done"], shown_at=now, ended=ended)
            print(self._line(t, now), file=sys.stderr, flush=True)

    @staticmethod
    def _line(t: dict, now: float) -> str:
        elapsed = now - t["start"]
        rate = t["done"] / elapsed if elapsed > 0 else 0.0
        total = f"/{t['total']:g}" if t["total"] is not None else ""
        line = f"{t['description']}: {t['done']:g}{total}, {rate:.{2 if rate < 100 else 0}f}/s, {_clock(elapsed)} elapsed"
        if t["total"] is not None and rate > 0:
            left = t["total"] - t["done"] + t["after"]
            line += f", ETA {_clock(left / rate)}" if left > 0 else ""
        return f"{line}  {t['info']}".rstrip()


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def log(msg: str, quiet: bool = False) -> None:
    """A status line on stderr (stdout stays for results)."""
    if not quiet:
        Console(stderr=True, highlight=False, soft_wrap=True).print(msg)  # a log line never wraps
