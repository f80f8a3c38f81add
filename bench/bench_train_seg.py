"""Benchmark of the segmentation network: training and inference images/s and peak memory.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_train_seg.py --device cpu --iters 3
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_train_seg.py --device cuda --batch-size 8 --iters 20

Training: SGD steps of :class:`SegmentationTask` on random crop x crop batches (the model's cost,
no data loading), AMP on CUDA as in ``usage train-seg``. Inference: ``fuse_views`` on one
VOC-sized image (375 x 500), single scale and 3 scales x flip as in ``usage predict-seg``.
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS on CPU (this
includes everything loaded before, so the first backbone's figure is the fairest).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_train(net, device, batch: int, crop: int, iters: int, warmup: int = 1) -> float:
    from usage_cli.tasks.segmentation import SegmentationTask

    task = SegmentationTask(net).to(device).train()
    opt = torch.optim.SGD(task.param_groups(0.007), lr=0.007, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    data = {
        "image": torch.randn(batch, 3, crop, crop, device=device),
        "label": torch.randint(0, 21, (batch, crop, crop), device=device),
    }
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
            loss = task(data)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    return batch * iters / (time.perf_counter() - t0)


def bench_infer(net, device, scales, flip: bool, iters: int, size=(375, 500)) -> float:
    from usage_cli.algorithms.seg_infer import fuse_views

    net.eval()
    x = torch.randn(1, 3, *size, device=device)
    with torch.inference_mode(), torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        fuse_views(net, x, scales, flip)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            fuse_views(net, x, scales, flip).argmax(0).cpu()
        _sync(device)
    return iters / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="efficientnet_lite0,resnet50")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--crop", type=int, default=321)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--output-stride", type=int, default=16)
    ap.add_argument("--aspp-channels", type=int, default=256)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    from usage_cli.models.segnet import build_segnet

    device = torch.device(args.device)
    rows = []
    print(f"device {device}, torch threads {torch.get_num_threads()}, crop {args.crop}, batch {args.batch_size}, OS {args.output_stride}, ASPP {args.aspp_channels}")
    print(f"{'backbone':<20}{'train img/s':>12}{'infer img/s':>12}{'MS+flip img/s':>14}{'peak MiB':>10}")
    for name in args.backbones.split(","):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        net = build_segnet({"backbone": name, "num_classes": 21, "output_stride": args.output_stride, "aspp_channels": args.aspp_channels})
        net = net.to(device)
        row = {"backbone": name, "device": str(device), "crop": args.crop, "batch_size": args.batch_size}
        row["train_images_per_s"] = bench_train(net, device, args.batch_size, args.crop, args.iters)
        row["train_peak_mib"] = _peak_mib(device)
        row["infer_images_per_s"] = bench_infer(net, device, (1.0,), False, args.iters)
        row["infer_ms_flip_images_per_s"] = bench_infer(net, device, (0.5, 1.0, 1.5), True, max(args.iters // 2, 1))
        row["peak_mib"] = _peak_mib(device)
        rows.append(row)
        print(f"{name:<20}{row['train_images_per_s']:>12.2f}{row['infer_images_per_s']:>12.2f}"
              f"{row['infer_ms_flip_images_per_s']:>14.2f}{row['peak_mib']:>10.0f}")  # fmt: skip
        del net
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
