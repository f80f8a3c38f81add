"""Resuming a training run: the key a run is written under, ``last.pt`` and ``log.jsonl``.

:func:`check_resume` refuses, before any work, to delete an unfinished run silently; :func:`restore`
loads a ``last.pt`` whose key matches this run's (only ``--epochs`` and ``--warmup-epochs`` may change)
and trims the log to the epochs kept; :func:`record_epoch` writes the state after every epoch. The key:
the loop's settings but :data:`runtime.HOW_ONLY`, and the stage's run config.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.last_checkpoint import last_path, log_path, read_last, save_last
from usage_cli.artifacts.manifest import config_hash
from usage_cli.artifacts.option_diff import differing, resolved_paths, same_place
from usage_cli.errors import ConfigError
from usage_cli.progress import log
from usage_cli.runtime import HOW_ONLY

Sources = dict[str, tuple[Path | str, str]]  # what a training reads: name -> (where, its digest)


def check_resume(out_dir: Path, *, resume: bool, force: bool, epochs: int, sources: Sources | None = None) -> None:
    """Before any work: an unfinished run in ``out_dir`` is never deleted silently, nor continued on
    inputs that changed since it stopped.

    Without ``--resume`` or ``--force`` a ``last.pt`` of a run that stopped early is an error that
    says how to continue it; ``--resume`` with fewer epochs than already done is an error too, and so is
    ``--resume`` when one of ``sources`` (name -> (path, digest): the masks' manifest, the data set's
    fingerprint) differs from what ``last.pt`` recorded. A finished run's ``last.pt`` is replaced (the
    stage's ``--force`` rules cover its artifact)."""
    last = last_path(out_dir)
    if force or not last.exists():
        return
    state = read_last(last)
    done, total = int(state.get("epoch", -1)) + 1, state.get("epochs")
    recorded = state.get("inputs") or {}  # a last.pt written before inputs were recorded: not compared
    changed = [name for name, (_, digest) in (sources or {}).items() if name in recorded and recorded[name] != digest]
    if changed and (resume or total is None or done < int(total)):
        where = ", ".join(f"{n} {sources[n][0]}" for n in changed)
        raise ConfigError(
            f"{last}: the run stopped after epoch {done} trained on {where} as it was then, and it has changed since; "
            f"pass --force to train from scratch on it (a resumed run would mix both)"
        )
    if resume:
        if epochs < done:
            raise ConfigError(f"{last}: {done} epochs are already done; --resume needs --epochs {done} or more")
        return
    if total is None or done < int(total):
        raise ConfigError(
            f"{last}: a run stopped after epoch {done}{f' of {total}' if total else ''} is here; pass --resume to "
            f"continue it, or --force to start over"
        )


def _resume(path: Path, run_key: dict, task, optimizer, scheduler, scaler) -> int:
    ckpt = read_last(path)
    old = ckpt.get("run_key", {})
    # a path option spelled another way (relative / absolute) naming the same place is no change
    where = ckpt.get("run_paths") or {}
    as_before = {**run_key, "run": {k: old["run"][k] if same_place(v, where.get(k)) else v for k, v in run_key["run"].items()}} if old else run_key
    if ckpt.get("run_key_hash") != config_hash(as_before):
        changed = sorted(set(differing(old.get("run", {}), run_key["run"], old_paths=where) + differing(old.get("loop", {}), run_key["loop"]))) if old else []
        which = f" ({', '.join(changed)})" if changed else ""
        raise ConfigError(f"{path}: was written by a run with another config{which}; only --epochs (and --warmup-epochs) may change on --resume: rerun with the same options, or pass --force to start over")
    task.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    return int(ckpt["epoch"]) + 1


def _keep_log(log_path: Path, start_epoch: int) -> None:
    if not log_path.exists():
        return
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] < start_epoch]
    write_text_atomic(log_path, "".join(ln + "\n" for ln in lines))


def run_key(cfg, stage_config: dict | None) -> dict:
    """What a resumed run must share with the run that wrote ``last.pt``: the loop's settings but the
    run-time ones of :data:`HOW_ONLY`, and the stage's manifest config; --epochs may grow on --resume (the
    schedule is then recomputed for the new length, docs/pipeline.md), so the schedule's length is left out."""
    loop_key = {k: v for k, v in asdict(cfg).items() if k not in HOW_ONLY}
    schedule_free = {"epochs": None, "warmup_epochs": None}
    return {"loop": {**loop_key, **schedule_free}, "run": {**(stage_config or {}), **schedule_free}}


def restore(out_dir: Path, key: dict, task, optimizer, scheduler, scaler, *, resume: bool, main: bool, quiet: bool) -> int:
    """The first epoch to train: after the last one ``out_dir``'s ``last.pt`` holds (its state loaded
    into ``task``, ``optimizer``, ``scheduler``, ``scaler``) with ``--resume``, else 0. The main
    process keeps the log lines of the epochs kept (none when starting over)."""
    last, log_file = last_path(out_dir), log_path(out_dir)
    start = _resume(last, key, task, optimizer, scheduler, scaler) if resume and last.exists() else 0
    if resume and not last.exists() and main:
        log(f"[yellow]--resume: no {last}, starting from scratch[/]", quiet)
    if main:
        _keep_log(log_file, start) if start else log_file.unlink(missing_ok=True)
    return start


def digests(sources: Sources | None) -> dict[str, str]:
    """name -> digest of ``sources``, as ``last.pt`` records them (:func:`check_resume` compares them)."""
    return {name: digest for name, (_, digest) in (sources or {}).items()}


def record_epoch(out_dir: Path, key: dict, logs: dict, task, optimizer, scheduler, scaler, epoch: int, epochs: int, inputs: dict | None = None) -> None:
    """After an epoch (main process): ``last.pt`` holds the state to resume from (and ``inputs``, the
    digests of what the run reads) and ``log.jsonl`` gains the epoch's line."""
    _save_last(last_path(out_dir), task, optimizer, scheduler, scaler, epoch, epochs, key, inputs or {})
    with open(log_path(out_dir), "a") as f:
        f.write(json.dumps({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in logs.items()}) + "\n")


def _save_last(path, task, optimizer, scheduler, scaler, epoch, epochs, run_key, inputs) -> None:
    save_last(
        path, epoch=epoch, epochs=epochs, run_key=json.loads(json.dumps(run_key, default=str)), run_key_hash=config_hash(run_key),
        run_paths=resolved_paths(json.loads(json.dumps(run_key["run"], default=str))), inputs=inputs,
        model=task.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict() if scaler.is_enabled() else {},
    )  # fmt: skip
