"""The one training loop of every stage (classifier, AffinityNet, segmentation network).

A *task* is an ``nn.Module`` whose ``forward(batch)`` returns ``{"loss": scalar, **parts}``; optional
hooks: ``param_groups(lr)``, ``on_step_end(step, total_steps)``, ``on_epoch_end()``, ``epoch_log()``.
``fit`` owns the data loading, optimiser and schedule, mixed precision (``--amp``), DDP under
torchrun (optionally with SyncBatchNorm) and rich progress; its data loading is ``engine/sampling.py``'s
and its ``last.pt`` / ``log.jsonl`` bookkeeping ``engine/resume.py``'s. The stage writes its final artifact.

On a GPU the loop never waits for the device inside an epoch, except where the work needs it (loss
scaling, a self-adaptive AA schedule): logged figures stay tensors on the device, summed over the
ranks and read once an epoch; the loss is checked for NaN every ``SYNC_EVERY`` steps (every step on
the CPU, where reading it costs nothing).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

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
from usage_cli.engine.events import EventLog
from usage_cli.engine.optim import build_optimizer, build_scheduler
from usage_cli.engine.resume import Sources, digests, record_epoch, restore, run_key
from usage_cli.engine.sampling import epoch_loaders, seed_everything
from usage_cli.errors import ConfigError
from usage_cli.progress import make_progress
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
    tensorboard: bool = False  # also write log.jsonl's figures as TensorBoard events (engine/events.py)


SYNC_EVERY = 50  # steps between host reads of the loss on a GPU (NaN check, progress text)


def loop_config(runtime: Runtime, **training) -> LoopConfig:
    """The one place a stage's run-time block becomes the loop's settings (``training``: epochs,
    batch size, optimiser, schedule ...; ``--workers`` unset: by device)."""
    return LoopConfig(
        **training, workers=worker_count(runtime), device=runtime.device, amp=runtime.amp, sync_bn=runtime.sync_bn,
        timeout=runtime.timeout, seed=runtime.seed, quiet=runtime.quiet, tensorboard=runtime.tensorboard,
    )  # fmt: skip


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True) if torch.is_tensor(batch) else batch


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
    stage_config: dict | None = None,
    collate_fn=None,
    evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
    sources: Sources | None = None,
) -> torch.nn.Module:
    """Train ``task`` (module doc); ``sources``: what the run reads, name -> (path, digest), recorded in
    ``last.pt`` so that a ``--resume`` on changed inputs is refused (``engine.resume.check_resume``)."""
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
    loaders = epoch_loaders(train_set, cfg, info, collate_fn, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loaders(0))
    total = max(steps_per_epoch * cfg.epochs, 1)
    scheduler = build_scheduler(optimizer, total, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.schedule, cfg.poly_power)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp(cfg.amp, device) and device.type == "cuda")
    # 3. resume
    key = run_key(cfg, stage_config)
    start = restore(out_dir, key, task, optimizer, scheduler, scaler, resume=resume, main=info.is_main, quiet=cfg.quiet)
    state = {"step": start * steps_per_epoch, "total": total}
    events = EventLog(out_dir, start) if cfg.tensorboard and info.is_main else None
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
                record_epoch(out_dir, key, logs, task, optimizer, scheduler, scaler, epoch, cfg.epochs, digests(sources))
                if events is not None:
                    events.write(logs)
    if events is not None:
        events.close()
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

