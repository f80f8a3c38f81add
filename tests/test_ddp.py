"""Distributed training: two CPU processes (gloo) under torchrun end with identical weights."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from pathlib import Path
    from usage_cli.stages.train_cls import TrainClsConfig, run
    import usage_cli.engine.loop as loop

    out = Path(sys.argv[2])
    seen = {}
    original = loop.fit
    def fit_and_dump(task, *a, **k):
        task = original(task, *a, **k)
        torch.save(task.student.state_dict(), out / f"rank{os.environ['RANK']}.pt")
        return task
    loop.fit = fit_and_dump
    cfg = TrainClsConfig(dataset="voc", root=Path(sys.argv[1]), out=out, split="train", backbone="deit_t", epochs=1,
                         batch_size=3, img_size=32, aug="light", lr=1e-3, val_split=None, quiet=True)
    run(cfg)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_end_with_identical_weights(synth_root, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(script), str(synth_root), str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert (out / "checkpoint.pt").exists() and (out / "manifest.json").exists()  # rank 0 published
