"""Benchmark of `usage train-cls`.

Two parts:

* ``speed`` (default): training images/s and peak memory of deit_t / deit_s / efficientnet_lite0 at
  224 px through the real loop (``usage_cli.engine.loop.fit`` with the USAGE task), against a bare
  forward+backward of the same network at the same batch. Each configuration runs in its own process
  so peak RSS is its own.
* ``table1``: the shape of the paper's Table 1 on the built-in synth data (and ``--msrc`` on the real
  MSRC photos): seed mIoU / FPR / FNR of cam+none, cm+none, cm+aa, through the real commands
  (train-cls -> gen-seeds -> evaluate), same seed and budget.

    python bench/bench_train_cls.py speed --batch 8 --steps 8
    python bench/bench_train_cls.py table1 --out bench/out/table1
    python bench/bench_train_cls.py table1 --msrc --out bench/out/msrc
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
SHARED = REPO.parent / "shared" / "data"


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


# ---------------------------------------------------------------------------------------- table1
def _usage(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "usage"), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def table1(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.msrc:
        root, split = SHARED / "msrc-objects", "train"
        if not root.exists():
            sys.exit(f"skipped: {root} is absent (the ../shared folder beside the checkout)")
        configs = [("efficientnet_lite0", m, r) for m, r in (("cam", "none"), ("cm", "none"), ("cm", "aa"))]
    else:
        root, split = out / "data", "train"
        _usage("synth", "--out", str(root), "--train", str(args.train), "--val", "32", "--size", str(args.synth_size), "--seed", "0")
        configs = [(b, m, r) for b in ("deit_t", "efficientnet_lite0") for m, r in (("cam", "none"), ("cm", "none"), ("cm", "aa"))]
    rows = []
    for backbone, mapping, reg in configs:
        name = f"{backbone}-{mapping}-{reg}"
        cnn = backbone == "efficientnet_lite0"
        common = ["--root", str(root), "--split", split, "--backbone", backbone, "--mapping", mapping, "--reg", reg,
                  "--epochs", str(args.epochs), "--batch-size", "16", "--img-size", str(args.img_size), "--aug", "light",
                  "--seed", "0", "--val-split", "", "--quiet"]  # fmt: skip
        common += ["--pretrained", "--lr", str(args.cnn_lr)] if cnn else ["--lr", str(args.vit_lr), "--warmup-epochs", "1"]
        if not (out / name / "cls" / "checkpoint.pt").exists():
            _usage("train-cls", *common, "--out", str(out / name / "cls"))
        if not (out / name / "seeds" / "seeds.h5").exists():
            _usage("gen-seeds", "--ckpt", str(out / name / "cls" / "checkpoint.pt"), "--root", str(root), "--split", split,
                   "--out", str(out / name / "seeds"), "--scales", args.scales, "--quiet", "--overlays", "4")  # fmt: skip
        _usage("evaluate", "--root", str(root), "--split", split, "--pred", str(out / name / "seeds" / "seeds.h5"),
               "--out", str(out / name / "metrics.json"), "--quiet")  # fmt: skip
        m = json.loads((out / name / "metrics.json").read_text())
        rows.append((backbone, mapping, reg, m["miou"], m["fpr"], m["fnr"], m["threshold"]))
    print(f"\nseed quality on {root.name} / {split} (threshold chosen on ground truth, sweep 0.00-0.95)")
    print("| backbone | mapping | reg | mIoU | FPR | FNR | bg threshold |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.2f} |")
    (out / "table.json").write_text(json.dumps(rows, indent=2))


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
    t = sub.add_parser("table1")
    t.add_argument("--out", default="bench/out/table1")
    t.add_argument("--msrc", action="store_true")
    t.add_argument("--train", type=int, default=96)
    t.add_argument("--synth-size", type=int, default=128)
    t.add_argument("--img-size", type=int, default=128)
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--scales", default="1.0,0.5,1.5")
    t.add_argument("--cnn-lr", type=float, default=0.01)
    t.add_argument("--vit-lr", type=float, default=5e-4)
    args = p.parse_args()
    {"speed": speed, "table1": table1}.get(args.what or "speed", speed)(args if args.what else p.parse_args(["speed"]))


if __name__ == "__main__":
    main()
