"""The one training loop of every stage (classifier, AffinityNet, segmentation network).

A *task* is an ``nn.Module`` whose ``forward(batch)`` returns ``{"loss": scalar, **parts}``; optional
hooks: ``param_groups(lr)``, ``on_step_end(step, total_steps)``, ``epoch_log()``. ``fit`` owns the
data loading, optimiser and schedule, mixed precision (CUDA), DDP under torchrun, rich progress,
``log.jsonl`` and the resumable ``last.pt``; the stage writes its final artifact.
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
from usage_cli.artifacts.checkpoint import load_checkpoint, save_checkpoint
from usage_cli.artifacts.manifest import config_hash
from usage_cli.engine.distributed import DistInfo, init_distributed, resolve_device
from usage_cli.engine.optim import build_optimizer, build_scheduler
from usage_cli.errors import ConfigError
from usage_cli.progress import make_progress


@dataclass(frozen=True)
class LoopConfig:
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
    amp: bool = True
    seed: int = 0
    grad_clip: float | None = None
    quiet: bool = False


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


def _loader(train_set, cfg: LoopConfig, info: DistInfo, epoch: int, collate_fn) -> DataLoader:
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    sampler = DistributedSampler(train_set, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True) if info.enabled else None
    if sampler is not None:
        sampler.set_epoch(epoch)
    return DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=cfg.workers,
        drop_last=len(train_set) >= cfg.batch_size * info.world_size, generator=g, collate_fn=collate_fn,
        worker_init_fn=_worker_init, persistent_workers=False, pin_memory=False,
    )  # fmt: skip


def _resume(path: Path, run_hash: str, task, optimizer, scheduler, scaler) -> int:
    ckpt = load_checkpoint(path)
    if ckpt.get("run_config_hash") != run_hash:
        raise ConfigError(f"{path}: was written by a run with another config; rerun with the same options, or without --resume to start over")
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


def _train_epoch(model, task, loader, optimizer, scheduler, scaler, cfg, device, state, progress, bar) -> dict:
    sums: dict[str, float] = {}
    n_images, t0 = 0, time.perf_counter()
    use_amp = cfg.amp and device.type == "cuda"
    for batch in loader:
        batch = _to(batch, device)
        with torch.autocast(device_type=device.type, enabled=use_amp):
            out = model(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
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
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_images += len(next(iter(batch.values())))
        progress.update(bar, advance=1, info=f"loss {float(loss.detach()):.4f}")
    steps = max(len(loader), 1)
    logs = {k: v / steps for k, v in sums.items()}
    logs["images_per_s"] = n_images / max(time.perf_counter() - t0, 1e-9)
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
    info = init_distributed(cfg.device)
    device = resolve_device(cfg.device, info)
    seed_everything(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task.to(device)
    model = torch.nn.parallel.DistributedDataParallel(task, find_unused_parameters=False) if info.enabled else task
    # 2. optimiser, schedule, scaler
    groups = task.param_groups(cfg.lr) if hasattr(task, "param_groups") else [{"params": [p for p in task.parameters() if p.requires_grad]}]
    optimizer = build_optimizer(cfg.optimizer, groups, cfg.lr, cfg.weight_decay, cfg.momentum)
    steps_per_epoch = len(_loader(train_set, cfg, info, 0, collate_fn))
    total = max(steps_per_epoch * cfg.epochs, 1)
    scheduler = build_scheduler(optimizer, total, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.schedule, cfg.poly_power)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    # 3. resume
    run_hash = config_hash({"loop": asdict(cfg), "run": run_config or {}})
    last, log_path = out_dir / "last.pt", out_dir / "log.jsonl"
    start = _resume(last, run_hash, task, optimizer, scheduler, scaler) if resume and last.exists() else 0
    if resume and not last.exists() and info.is_main:
        from usage_cli.progress import log

        log(f"[yellow]--resume: no {last}, starting from scratch[/]", cfg.quiet)
    if info.is_main:
        _keep_log(log_path, start) if start else log_path.unlink(missing_ok=True)
    state = {"step": start * steps_per_epoch, "total": total}
    # 4. epochs
    with make_progress(cfg.quiet or not info.is_main) as progress:
        for epoch in range(start, cfg.epochs):
            seed_everything(cfg.seed * 1_000_003 + epoch * 1009 + info.rank)
            loader = _loader(train_set, cfg, info, epoch, collate_fn)
            bar = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(loader), info="")
            task.train()
            logs = {"epoch": epoch, **_train_epoch(model, task, loader, optimizer, scheduler, scaler, cfg, device, state, progress, bar)}
            if hasattr(task, "epoch_log"):
                logs.update(task.epoch_log())
            if evaluate is not None and info.is_main:
                logs.update(evaluate(task, epoch))
            if info.is_main:
                _save_last(last, task, optimizer, scheduler, scaler, epoch, run_hash)
                with open(log_path, "a") as f:
                    f.write(json.dumps({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in logs.items()}) + "\n")
    if info.enabled:
        torch.distributed.barrier()
    return task


def _save_last(path, task, optimizer, scheduler, scaler, epoch, run_hash) -> None:
    save_checkpoint(
        path,
        {
            "format": "usage-last", "version": "1.0.0", "epoch": epoch, "run_config_hash": run_hash,
            "model": task.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        },
    )  # fmt: skip
