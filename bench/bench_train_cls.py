"""Benchmark of `usage train-cls`: training speed.

Training images/s and peak memory of deit_t / deit_s / efficientnet_lite0 at 224 px through the real
loop (``usage_cli.engine.loop.fit`` with the USAGE task), against a bare forward+backward of the same
network at the same batch. Each configuration runs in its own process so peak RSS is its own.
Seed quality (the paper's Tables 1, 5, 7, 8 over several seeds) is ``bench/paper_tables.py``.

    python bench/bench_train_cls.py speed --batch 8 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- speed
def _speed_one(backbone: str, batch: int, steps: int, size: int, mode: str) -> dict:
    import torch

    from usage_cli.engine.loop import LoopConfig, fit
    from usage_cli.models.classifier import build_classifier
    from usage_cli.tasks.classification import ClassificationTask, ClsTaskConfig

    torch.manual_seed(0)
    family_tau = 1.0 if backbone.startswith("deit") else 50.0
    net = build_classifier({"backbone": backbone, "num_classes": 20, "mapping": "cm", "tau1": family_tau, "img_size": size})
    x = torch.randn(batch * steps, 3, size, size)
    y = (torch.rand(batch * steps, 20) < 0.1).float()
    if mode == "bare":
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        net.train()
        rates = []
        for _rep in range(3):  # pass 0 warms up; the best of the two timed passes counts (noise only slows)
            t0 = time.perf_counter()
            for i in range(steps):
                xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xb)["logits"], yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            rates.append(batch * steps / (time.perf_counter() - t0))
        ips = max(rates[1:])
    else:
        reg = "aa" if mode == "loop-aa" else "none"
        task = ClassificationTask(net, ClsTaskConfig(reg=reg, num_images=len(x)))
        data = [{"image": x[i], "label": y[i], "index": torch.tensor(i), "flip": torch.tensor(False)} for i in range(len(x))]
        cfg = LoopConfig(epochs=3, batch_size=batch, lr=1e-4, quiet=True)
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_cls_{os.getpid()}"
        fit(task, data, cfg, out)
        log = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
        ips = max(e["images_per_s"] for e in log[1:])  # epoch 0 warms up, as above
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"backbone": backbone, "mode": mode, "images_per_s": ips, "peak_rss_mb": rss}


def speed(args) -> None:
    rows = []
    for backbone in args.backbones.split(","):
        for mode in ("bare", "loop-none", "loop-aa"):
            cmd = [sys.executable, __file__, "_one", backbone, str(args.batch), str(args.steps), str(args.size), mode]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
    print(f"train-cls speed, batch {args.batch}, {args.size}px, {os.cpu_count()} CPU threads, torch threads default")
    print("| backbone | bare fwd+bwd img/s | loop (no reg) img/s | ratio | loop USAGE cm+aa img/s | peak RSS MB (loop aa) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for b in args.backbones.split(","):
        r = {x["mode"]: x for x in rows if x["backbone"] == b}
        print(f"| {b} | {r['bare']['images_per_s']:.1f} | {r['loop-none']['images_per_s']:.1f} | "
              f"{r['loop-none']['images_per_s'] / r['bare']['images_per_s']:.2f} | {r['loop-aa']['images_per_s']:.1f} | {r['loop-aa']['peak_rss_mb']:.0f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        b, batch, steps, size, mode = sys.argv[2:7]
        print(json.dumps(_speed_one(b, int(batch), int(steps), int(size), mode)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what")
    s = sub.add_parser("speed")
    s.add_argument("--backbones", default="deit_t,deit_s,efficientnet_lite0")
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--steps", type=int, default=8)
    s.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    speed(args if args.what else p.parse_args(["speed"]))


if __name__ == "__main__":
    main()
