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


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny generated VOC-layout dataset (12 train / 6 val images of 64 px), made once per run."""
    from usage_cli.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, n_train=12, n_val=6, size=64, seed=0)
    return root
