"""Patch affinity three ways, per view, against the bare forward (DeiT-S, random weights, a 500x375
image at scales 1 and 2): the cost of each way of computing MCTformer's refinement exactly.

* recompute: every layer through the fused attention kernel, the queries and keys kept (linear
  memory), the affinity's product by the fused kernel again with the maps as values, once per layer,
  after the forward (``cam_infer.affinity_pass`` "recompute", the package's pass on a GPU);
* single pass: each kept layer's attention formed a block of 128 query rows at a time (never whole),
  used for the forward and summed, averaged over heads, into one N x N patch affinity per view
  (quadratic memory, one matrix: 34 MB at scale 2), times the maps at the end (``affinity_pass``
  "single", the package's pass on the CPU: ``models/vit.py:summing_affinity``);
* explicit: the computation issue 31 replaced (``bench/explicit_affinity.py``).

    python bench/affinity_passes.py [--scales 1,2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from explicit_affinity import explicit_forward_maps

from usage_cli.algorithms.cam_infer import CamInference, _forward_maps


def main() -> None:
    from usage_cli.models.classifier import build_classifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    net = build_classifier({"backbone": "deit_s", "num_classes": 20, "img_size": 224}).eval()
    opts = CamInference(refine="patch-affinity")
    recompute, single = replace(opts, affinity_pass="recompute"), replace(opts, affinity_pass="single")
    print(f"DeiT-S, one view of a 500x375 image, {torch.get_num_threads()} CPU threads, best of {a.rounds} interleaved rounds")
    print("| scale | tokens | bare s | recompute s (vs bare) | single pass s (vs bare) | explicit s (vs bare) | max abs diff vs explicit: single, recompute |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with torch.no_grad():
        for s in (float(v) for v in a.scales.split(",")):
            x = torch.randn(1, 3, round(375 * s / 16) * 16, round(500 * s / 16) * 16)
            old = explicit_forward_maps(net, x, opts)
            diff = [float((_forward_maps(net, x, o) - old).abs().max()) for o in (single, recompute)]
            ways = {"bare": lambda x=x: net(x), "recompute": lambda x=x: _forward_maps(net, x, recompute), "single": lambda x=x: _forward_maps(net, x, single),
                    "explicit": lambda x=x: explicit_forward_maps(net, x, opts)}  # fmt: skip
            best = dict.fromkeys(ways, float("inf"))
            for _ in range(a.rounds):
                for k, fn in ways.items():
                    t0 = time.perf_counter()
                    fn()
                    best[k] = min(best[k], time.perf_counter() - t0)
            tokens = (x.shape[-2] // 16) * (x.shape[-1] // 16) + 1
            cells = " | ".join(f"{best[k]:.3f} ({best['bare'] / best[k]:.2f})" for k in ("recompute", "single", "explicit"))
            print(f"| {s:g} | {tokens} | {best['bare']:.3f} | {cells} | {diff[0]:.1e}, {diff[1]:.1e} |", flush=True)


if __name__ == "__main__":
    main()
