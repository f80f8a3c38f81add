"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE is set before timm is imported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a clear reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the ../shared folder beside the checkout is absent in a user's clone)")
    return p


def torchrun(*args, nproc: int = 2, timeout: int = 600) -> None:
    """Run ``args`` (a script, or ``-m module ...``) in ``nproc`` gloo processes on the CPU under
    torchrun, on a free local port; fail the test with the tail of stderr unless all exit 0."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
        "--master_port", str(port), *(str(a) for a in args),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="session", autouse=True)
def _mask_cache(tmp_path_factory):
    """usage's cache (COCO masks rendered from JSON) in a temporary folder, never the user's ~/.cache."""
    os.environ["USAGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("usage-cache"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny generated VOC-layout dataset (12 train / 6 val images of 64 px), made once per run."""
    from usage_cli.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, n_train=12, n_val=6, size=64, seed=0)
    return root


# Ops that CUDA autocast refuses to run (torch.amp docs, "CUDA Ops that can't autocast":
# binary_cross_entropy, which nn.BCELoss calls too). CPU autocast runs them, so a loss that calls one
# inside the training autocast passes every CPU test and crashes on the first GPU step.
CUDA_AUTOCAST_REFUSES = frozenset({"binary_cross_entropy"})


def refused_under_autocast():
    """A context (TorchFunctionMode) whose ``calls`` lists every op of CUDA_AUTOCAST_REFUSES that ran
    while autocast was on (CPU or CUDA); ops inside ``torch.autocast(..., enabled=False)`` are fine."""
    import torch
    from torch.overrides import TorchFunctionMode

    class Guard(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in CUDA_AUTOCAST_REFUSES and (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
                self.calls.append(name)
            return func(*args, **(kwargs or {}))

    return Guard()
