"""The run-time options of every stage, as one frozen dataclass nested in each stage config.

:class:`Runtime` holds how a stage runs — device, mixed precision, SyncBatchNorm, the torchrun
timeout, worker processes, the random seed, ``--resume`` / ``--force``, ``--quiet`` and the training
stages' ``--tensorboard`` — with one
default each. A stage takes the subset listed in :data:`OPTIONS` (its command shows exactly those
flags, ``commands/_options.py:runtime_options``), its config nests them as ``cfg.runtime``, and
``engine.loop.loop_config`` turns them into the training loop's settings.

Which of them enter a stage's manifest ``config`` (and so its hash, which ``--force``, reruns and
``--resume`` compare): :data:`IN_CONFIG`, the ones that change what a run computes; never those of
:data:`HOW_ONLY`, the one list of options that only change how it goes. Torch-free, so
that ``usage --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Any

from usage_cli.blocks import nest_flat, unset_later_options
from usage_cli.errors import check_options
from usage_cli.registry import ALL, STAGES


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"  # auto: CUDA when PyTorch sees a GPU, else the CPU
    amp: bool | None = None  # None: on for CUDA (float16 + loss scaling), off on the CPU
    sync_bn: bool = False  # SyncBatchNorm under torchrun (CUDA)
    timeout: float = 60.0  # process-group timeout (minutes) under torchrun
    workers: int | None = None  # None: by device (engine.distributed.default_workers)
    seed: int = 0
    resume: bool = False
    force: bool = False
    quiet: bool = False
    out_in_root: bool = False  # an output inside the data set's root (artifacts/claims.py refuses it otherwise)
    tensorboard: bool = False  # also write the training log as TensorBoard events (the `tensorboard` extra)


FIELDS = tuple(f.name for f in dataclasses.fields(Runtime))
DEFAULTS = Runtime()

TENSORBOARD_HINT = "pip install 'usage-wsss[tensorboard]' (or pip install tensorboard)"

# the one exclusion list: run-time options that change how a run goes, never what it computes — out of
# every key a rerun or resume compares (the manifest config, the loop's resume key in last.pt)
HOW_ONLY = ("timeout", "workers", "resume", "force", "quiet", "out_in_root", "tensorboard")
# the options that change what a run computes: in the manifest's config (when the stage takes them).
# The device is in the loop's resume key (a run resumes where it began) but not in a manifest config
# (train-cls keeps it there: its manifests always had it)
IN_CONFIG = tuple(n for n in FIELDS if n not in HOW_ONLY and n != "device")

MAX_SEED = 2**32 - 1  # --seed: numpy's legacy seeds are 32 bits, and the loop derives per-epoch seeds from it
MAX_WORKERS_PER_CPU = 4  # --workers beyond this many processes per CPU only exhaust memory
MIN_WORKERS_CAP = 32  # ... but a setting usual elsewhere (a config file from a larger machine) is never refused
MAX_TIMEOUT_MIN = 10**6  # --timeout (minutes): about two years; Python's timedelta overflows far beyond
MAX_INT = 2**31 - 1  # no count, size or number of epochs of any option goes beyond it (number_checks)
MAX_SCALE = 8.0  # --scales of multi-scale inference: an image 8 times its size already fills a GPU
MAX_SIZE = 8192  # pixels (--img-size, --crop) and channels (--aspp-channels): beyond, no network fits in memory

# stage -> the run-time options it takes (its command's flags, in this order), as the registry declares them
OPTIONS: dict[str, tuple[str, ...]] = {s.name: FIELDS if s.runtime == ALL else s.runtime for s in STAGES if s.runtime is not None}


def takes_runtime(stage: str):
    """Class decorator of a stage config (a frozen dataclass with a ``runtime: Runtime`` field): the
    config records ``OPTIONS[stage]`` as ``RUNTIME_OPTIONS``, and its constructor also takes those
    options flat (``TrainSegConfig(masks=..., device="cpu", quiet=True)``), folding them into
    ``runtime`` (``usage_cli/blocks.py``); another run-time option is a TypeError, as any unknown argument."""
    options = OPTIONS[stage]

    def decorate(cls):
        nest_flat(cls, "runtime", options, every=FIELDS)
        _check_numbers_when_made(cls)
        cls.RUNTIME_OPTIONS = options
        cls.STAGE = stage
        return cls

    return decorate


def config_drop(cfg: Any, also: tuple[str, ...] = (), keep: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names ``artifacts.manifest.run_config`` leaves out of ``cfg``'s manifest config: ``also`` (the
    stage's own, such as ``out``), the run-time options it takes but :data:`IN_CONFIG` (plus ``keep``)
    does not list, and the options its blocks gained later, where unset (``blocks.unset_later_options``)."""
    return tuple(also) + unset_later_options(cfg) + tuple(n for n in cfg.RUNTIME_OPTIONS if n not in IN_CONFIG and n not in keep)


def _check_numbers_when_made(cls: type) -> None:
    """Every number of a ``cls`` config checked as the config is made (:func:`number_checks`): from flags,
    a --config file, ``dataclasses.replace`` or Python alike, before anything reads it."""
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        check_options(number_checks(self))

    __init__.__doc__ = init.__doc__
    cls.__init__ = __init__


def number_checks(cfg: Any) -> list[tuple[bool, str]]:
    """What every number a stage config holds must be, whatever its option's own range (the stage's
    check): a float finite (no NaN, no infinity), an integer within :data:`MAX_INT` (a count, a size or
    a number of epochs beyond it is a typo, and would overflow later). The run-time block: :func:`runtime_checks`."""
    rows = []
    for f in dataclasses.fields(cfg):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(cfg, f.name)
        for x in value if isinstance(value, tuple) else (value,):
            if isinstance(x, float):
                rows.append((math.isfinite(x), f"{flag} must be a finite number, got {x}"))
            elif isinstance(x, int) and not isinstance(x, bool):
                rows.append((abs(x) <= MAX_INT, f"{flag} must be at most {MAX_INT}, got {x}"))
    return rows


def runtime_checks(runtime: Runtime) -> list[tuple[bool, str]]:
    """The run-time options' ranges, as ``errors.check_options`` rows (each stage checks them first)."""
    most = max(MIN_WORKERS_CAP, MAX_WORKERS_PER_CPU * (os.cpu_count() or 1))
    return [
        (0 <= runtime.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED} (32 bits), got {runtime.seed}"),
        (runtime.workers is None or 0 <= runtime.workers <= most,
         f"--workers must be in 0..{most} on this machine ({os.cpu_count()} CPUs), got {runtime.workers}"),
        (0 < runtime.timeout <= MAX_TIMEOUT_MIN, f"--timeout must be in (0, {MAX_TIMEOUT_MIN}] minutes, got {runtime.timeout}"),
        (not (runtime.resume and runtime.force), "--resume continues a run and --force starts it over: pass one of them"),
        (not runtime.tensorboard or importlib.util.find_spec("tensorboard") is not None,
         f"--tensorboard writes TensorBoard event files and needs tensorboard: {TENSORBOARD_HINT}"),
    ]


def default_workers(gpu: bool) -> int:
    """Worker processes when ``--workers`` is unset: on a GPU 4 per process (at most the CPUs per process
    of this node, less one), on the CPU 0: the work stays in the stage's own process (loader workers
    would compete with the model)."""
    if not gpu:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(4, cpus // max(per_node, 1) - 1))


def cpu_worker_count(runtime: Runtime) -> int:
    """``--workers`` of a stage whose workers do CPU work only and which has no ``--device`` (evaluate)."""
    return default_workers(gpu=False) if runtime.workers is None else runtime.workers
