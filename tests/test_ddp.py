"""Distributed training: two CPU processes (gloo) under torchrun end with identical weights."""

from __future__ import annotations

import textwrap

import torch
from conftest import torchrun

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


def test_two_gloo_ranks_end_with_identical_weights(synth_root, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    torchrun(script, synth_root, out, timeout=300)
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert (out / "checkpoint.pt").exists() and (out / "manifest.json").exists()  # rank 0 published
