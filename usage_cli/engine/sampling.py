"""The loop's data loading: one loader for a whole run, its batches drawn per (seed, epoch, rank).

:func:`epoch_loaders` builds it; :class:`_EpochBatches` is its one sampler (this rank's share under
torchrun, or a permutation drawn from (seed, epoch)), and :class:`_Keyed` reseeds each worker
process's random streams per epoch, so ranks augment differently and a resumed run draws as an
uninterrupted one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from usage_cli.engine.distributed import DistInfo

if TYPE_CHECKING:  # the loop's settings; the loop imports this module
    from usage_cli.engine.loop import LoopConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


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


def epoch_loaders(train_set, cfg: LoopConfig, info: DistInfo, collate_fn, pin_memory: bool) -> Callable[[int], DataLoader]:
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
