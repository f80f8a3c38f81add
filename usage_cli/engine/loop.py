"""The one training loop of every stage (classifier, AffinityNet, segmentation network).

A *task* is an ``nn.Module`` whose ``forward(batch)`` returns ``{"loss": scalar, **parts}``; optional
hooks: ``param_groups(lr)``, ``on_step_end(step, total_steps)``, ``on_epoch_end()``, ``epoch_log()``.
``fit`` owns the data loading, optimiser and schedule, mixed precision (``--amp``), DDP under
torchrun (optionally with SyncBatchNorm), rich progress, ``log.jsonl`` and the resumable ``last.pt``;
the stage writes its final artifact.

On a GPU the loop never waits for the device inside an epoch, except where the work needs it (loss
scaling, a self-adaptive AA schedule): logged figures stay tensors on the device, summed over the
ranks and read once an epoch; the loss is checked for NaN every ``SYNC_EVERY`` steps (every step on
the CPU, where reading it costs nothing).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from usage_cli.artifacts.atomic import write_text_atomic
from usage_cli.artifacts.last_checkpoint import last_path, log_path, read_last, save_last
from usage_cli.artifacts.manifest import config_hash
from usage_cli.artifacts.outdir import differing, resolved_paths, same_place
from usage_cli.engine.distributed import (
    DEFAULT_TIMEOUT_MIN,
    DistInfo,
    all_reduce_sum,
    enable_tf32,
    init_distributed,
    resolve_device,
    use_amp,
    worker_count,
)
from usage_cli.engine.optim import build_optimizer, build_scheduler
from usage_cli.errors import ConfigError
from usage_cli.progress import log, make_progress
from usage_cli.runtime import Runtime


@dataclass(frozen=True)
class LoopConfig:
    """The loop's settings. A stage builds it with :func:`loop_config` from its run-time block; the
    defaults of ``device`` and ``workers`` here serve a direct call (tests, benchmarks) on the CPU."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    poly_power: float = 0.9
    workers: int = 0
    device: str = "cpu"
    amp: bool | None = None  # None: on for CUDA (float16 + loss scaling), off on the CPU; True on the CPU: bfloat16
    sync_bn: bool = False  # SyncBatchNorm under torchrun (CUDA only)
    timeout: float = DEFAULT_TIMEOUT_MIN  # process-group timeout, minutes
    seed: int = 0
    grad_clip: float | None = None
    quiet: bool = False


RUNTIME = ("workers", "quiet", "timeout")  # settings that do not change what is trained (not in the resume key)
SYNC_EVERY = 50  # steps between host reads of the loss on a GPU (NaN check, progress text)


def loop_config(runtime: Runtime, **training) -> LoopConfig:
    """The one place a stage's run-time block becomes the loop's settings (``training``: epochs,
    batch size, optimiser, schedule ...; ``--workers`` unset: by device)."""
    return LoopConfig(
        **training, workers=worker_count(runtime), device=runtime.device, amp=runtime.amp, sync_bn=runtime.sync_bn,
        timeout=runtime.timeout, seed=runtime.seed, quiet=runtime.quiet,
    )  # fmt: skip


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True) if torch.is_tensor(batch) else batch


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's data-loading streams in one epoch (each worker adds its id)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class _Keyed(torch.utils.data.Dataset):
    """Items asked for as (epoch seed, index). A worker process that meets a new epoch seed reseeds its
    random streams with it plus its id: persistent workers then draw per (seed, epoch, rank, worker),
    so ranks augment differently and a resumed run draws as an uninterrupted one. Without workers the
    items draw from the main process's streams, which :func:`fit` seeds per epoch and rank."""

    def __init__(self, dataset):
        self.dataset, self._seed = dataset, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        seed, i = key
        worker = torch.utils.data.get_worker_info()
        if worker is not None and seed != self._seed:
            s = seed + worker.id
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)
            self._seed = seed
        return self.dataset[i]


class _EpochBatches(torch.utils.data.Sampler):
    """The one sampler of the loop: batches of (epoch seed, index), this rank's share (DistributedSampler)
    or a permutation drawn from (seed, epoch); the last short batch is dropped when every process can
    fill one. Call :meth:`set_epoch` before each epoch."""

    def __init__(self, train_set, cfg: LoopConfig, info: DistInfo):
        self.n, self.batch_size, self.seed, self.rank = len(train_set), cfg.batch_size, cfg.seed, info.rank
        self.drop_last = self.n >= cfg.batch_size * info.world_size
        self.dist = DistributedSampler(train_set, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True) if info.enabled else None
        # without worker processes the permutation is the (seed, epoch) generator's second draw: the first
        # was the base seed torch's DataLoader(shuffle=True) took from it, which drew these runs' order
        # before the loop had one loader path; kept, so that they draw as before
        self.skip = int(cfg.workers == 0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.dist is not None:
            self.dist.set_epoch(epoch)

    def __iter__(self):
        if self.dist is not None:
            order = list(self.dist)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            for _ in range(self.skip):
                torch.empty((), dtype=torch.int64).random_(generator=g)
            order = torch.randperm(self.n, generator=g).tolist()
        key = epoch_seed(self.seed, self.epoch, self.rank)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield [(key, i) for i in order[start:start + self.batch_size]]

    def __len__(self) -> int:
        m = len(self.dist) if self.dist is not None else self.n
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)


def _epoch_loaders(train_set, cfg: LoopConfig, info: DistInfo, collate_fn, pin_memory: bool) -> Callable[[int], DataLoader]:
    """``epoch -> loader``: one loader for the whole run, its batches drawn per epoch by
    :class:`_EpochBatches` and its items keyed by the epoch's seed; with workers, their processes live
    across epochs (``persistent_workers``)."""
    batches = _EpochBatches(train_set, cfg, info)
    loader = DataLoader(
        _Keyed(train_set), batch_sampler=batches, num_workers=cfg.workers, collate_fn=collate_fn, worker_init_fn=_worker_init,
        persistent_workers=cfg.workers > 0, pin_memory=pin_memory, generator=torch.Generator().manual_seed(cfg.seed),
    )  # fmt: skip

    def for_epoch(epoch: int) -> DataLoader:
        batches.set_epoch(epoch)
        return loader

    return for_epoch


def check_resume(out_dir: Path, *, resume: bool, force: bool, epochs: int) -> None:
    """Before any work: an unfinished run in ``out_dir`` is never deleted silently.

    Without ``--resume`` or ``--force`` a ``last.pt`` of a run that stopped early is an error that
    says how to continue it; ``--resume`` with fewer epochs than already done is an error too. A
    finished run's ``last.pt`` is replaced (the stage's ``--force`` rules cover its artifact)."""
    last = last_path(out_dir)
    if force or not last.exists():
        return
    state = read_last(last)
    done, total = int(state.get("epoch", -1)) + 1, state.get("epochs")
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
    old = ckpt.get("run_config", {})
    # a path option spelled another way (relative / absolute) naming the same place is no change
    where = ckpt.get("run_paths") or {}
    as_before = {**run_key, "run": {k: old["run"][k] if same_place(v, where.get(k)) else v for k, v in run_key["run"].items()}} if old else run_key
    if ckpt.get("run_config_hash") != config_hash(as_before):
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


def _train_epoch(model, task, loader, optimizer, scheduler, scaler, cfg, device, state, progress, bar, world: int = 1) -> dict:
    sums: dict[str, torch.Tensor] = {}  # on the device: no host sync per step
    n_images, t0 = 0, time.perf_counter()
    amp = use_amp(cfg.amp, device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16  # float16 with loss scaling on CUDA
    sync_every = 1 if device.type == "cpu" else SYNC_EVERY
    for batch in loader:
        batch = _to(batch, device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp):
            out = model(batch)
        loss = out["loss"]
        read = state["step"] % sync_every == 0  # read the loss on the host (a sync on a GPU) now
        if read and not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {state['step']}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(task.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        state["step"] += 1
        if hasattr(task, "on_step_end"):
            task.on_step_end(state["step"], state["total"])
        for k, v in out.items():
            if torch.is_tensor(v) and v.ndim == 0:
                v = v.detach().double()
                sums[k] = sums[k] + v if k in sums else v
        n_images += len(next(iter(batch.values())))
        progress.update(bar, advance=1, **({"info": f"loss {float(loss.detach()):.4f}"} if read else {}))
    # one host read an epoch: every figure summed over the ranks (means over all processes' steps)
    steps = max(len(loader), 1)
    keys = list(sums)  # the task's order: the same on every rank
    totals = torch.stack([*(sums[k] for k in keys), torch.tensor(float(n_images), dtype=torch.float64, device=device)])
    totals = all_reduce_sum(totals).tolist()
    logs = {k: v / (steps * world) for k, v in zip(keys, totals, strict=False)}
    if "loss" in logs and not math.isfinite(logs["loss"]):
        raise FloatingPointError(f"loss became {logs['loss']} before step {state['step']}; lower --lr")
    logs["images_per_s"] = totals[-1] / max(time.perf_counter() - t0, 1e-9)  # of all processes
    logs["lr"] = optimizer.param_groups[0]["lr"]
    return logs


def fit(
    task: torch.nn.Module,
    train_set: torch.utils.data.Dataset,
    cfg: LoopConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    run_config: dict | None = None,
    collate_fn=None,
    evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
) -> torch.nn.Module:
    # 1. processes, device, seeds
    info = init_distributed(cfg.device, cfg.timeout)
    device = resolve_device(cfg.device, info)
    enable_tf32(device)
    seed_everything(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = sync_batchnorm(task, cfg.sync_bn, info, device)
    task.to(device)
    model = torch.nn.parallel.DistributedDataParallel(task, find_unused_parameters=False) if info.enabled else task
    # 2. optimiser, schedule, scaler
    groups = task.param_groups(cfg.lr) if hasattr(task, "param_groups") else [{"params": [p for p in task.parameters() if p.requires_grad]}]
    optimizer = build_optimizer(cfg.optimizer, groups, cfg.lr, cfg.weight_decay, cfg.momentum)
    loaders = _epoch_loaders(train_set, cfg, info, collate_fn, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loaders(0))
    total = max(steps_per_epoch * cfg.epochs, 1)
    scheduler = build_scheduler(optimizer, total, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.schedule, cfg.poly_power)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp(cfg.amp, device) and device.type == "cuda")
    # 3. resume
    # --epochs may grow on --resume: the schedule is then recomputed for the new length (docs/pipeline.md)
    loop_key = {k: v for k, v in asdict(cfg).items() if k not in RUNTIME}
    schedule_free = {"epochs": None, "warmup_epochs": None}  # the schedule's length, recomputed on --resume
    run_key = {"loop": {**loop_key, **schedule_free}, "run": {**(run_config or {}), **schedule_free}}
    last, log_file = last_path(out_dir), log_path(out_dir)
    start = _resume(last, run_key, task, optimizer, scheduler, scaler) if resume and last.exists() else 0
    if resume and not last.exists() and info.is_main:
        log(f"[yellow]--resume: no {last}, starting from scratch[/]", cfg.quiet)
    if info.is_main:
        _keep_log(log_file, start) if start else log_file.unlink(missing_ok=True)
    state = {"step": start * steps_per_epoch, "total": total}
    # 4. epochs
    with make_progress(cfg.quiet or not info.is_main) as progress:
        for epoch in range(start, cfg.epochs):
            seed_everything(cfg.seed * 1_000_003 + epoch * 1009 + info.rank)
            loader = loaders(epoch)
            # off a terminal: one line an epoch (steps, rate, ETA of the run, loss)
            bar = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(loader), info="", every=0, after=(cfg.epochs - epoch - 1) * len(loader))
            task.train()
            logs = {"epoch": epoch, **_train_epoch(model, task, loader, optimizer, scheduler, scaler, cfg, device, state, progress, bar, info.world_size)}
            if hasattr(task, "on_epoch_end"):
                task.on_epoch_end()
            if hasattr(task, "epoch_log"):
                logs.update(task.epoch_log())
            if evaluate is not None:  # on every rank: the evaluator shares the work out
                logs.update(evaluate(task, epoch))
            if info.is_main:
                _save_last(last, task, optimizer, scheduler, scaler, epoch, cfg.epochs, run_key)
                with open(log_file, "a") as f:
                    f.write(json.dumps({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in logs.items()}) + "\n")
    if info.enabled:
        torch.distributed.barrier()
    return task


def sync_batchnorm(task: torch.nn.Module, sync_bn: bool, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``--sync-bn``: BatchNorm layers as SyncBatchNorm (statistics over every process's batch) when
    several processes train; the state-dict keys stay those of BatchNorm. One process: unchanged."""
    if not (sync_bn and info.enabled):
        return task
    if device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA: SyncBatchNorm does not run on the CPU; drop --sync-bn")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(task)


def _save_last(path, task, optimizer, scheduler, scaler, epoch, epochs, run_key) -> None:
    save_last(
        path, epoch=epoch, epochs=epochs, run_key=json.loads(json.dumps(run_key, default=str)), run_key_hash=config_hash(run_key),
        run_paths=resolved_paths(json.loads(json.dumps(run_key["run"], default=str))),
        model=task.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict() if scaler.is_enabled() else {},
    )  # fmt: skip
