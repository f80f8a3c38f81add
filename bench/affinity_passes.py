"""Patch affinity three ways, per view, against the bare forward (DeiT-S, random weights, a 500x375
image at scales 1 and 2): the cost of each way of computing MCTformer's refinement exactly.

* recompute: the package (``cam_infer._forward_maps``): every layer through the fused attention
  kernel, the queries and keys kept (linear memory), the affinity's product by the fused kernel again
  with the maps as values, once per layer, after the forward;
* single pass: each layer's attention formed in chunks of query rows (never whole), used for the
  forward and summed, averaged over heads, into one N x N patch affinity per view (quadratic memory,
  one matrix: 34 MB at scale 2), times the maps at the end; not used by the package;
* explicit: the computation issue 31 replaced (``bench/explicit_affinity.py``).

    python bench/affinity_passes.py [--scales 1,2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from explicit_affinity import explicit_forward_maps

from usage_cli.algorithms.cam_infer import CamInference, _forward_maps
from usage_cli.models.vit import _embed


def _attention_summed(attn, x: torch.Tensor, acc: torch.Tensor, prefix: int, rows: int) -> torch.Tensor:
    """One layer's attention output, its weights formed ``rows`` query rows at a time; their
    head-mean patch-to-patch block added to ``acc`` (B x N x N)."""
    B, T, _ = x.shape
    q, k, v = attn.qkv(x).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out, kt = torch.empty_like(v), k.transpose(-2, -1)
    for i in range(0, T, rows):
        a = ((q[:, :, i : i + rows] * attn.scale) @ kt).softmax(-1)
        out[:, :, i : i + rows] = a @ v
        lo = max(i, prefix)
        if lo < i + rows:
            acc[:, lo - prefix : i + rows - prefix] += a[:, :, lo - i :, prefix:].mean(1).float()
    return attn.proj(attn.norm(out.transpose(1, 2).reshape(B, T, -1)))


def single_pass_maps(net, x: torch.Tensor, rows: int = 64) -> torch.Tensor:
    """The refined maps of ``_forward_maps`` (cm, ``--affinity-layers 12``, float32) in one pass."""
    bb, p = net.backbone, net.backbone.num_prefix_tokens
    m = bb.model
    tokens = _embed(m, x)
    acc = torch.zeros(x.shape[0], tokens.shape[1] - p, tokens.shape[1] - p, device=x.device)
    for blk in m.blocks:
        tokens = tokens + blk.ls1(_attention_summed(blk.attn, blk.norm1(tokens), acc, p, rows))
        tokens = tokens + blk.ls2(blk.mlp(blk.norm2(tokens)))
    h, w = x.shape[-2] // bb.stride, x.shape[-1] // bb.stride
    cams = torch.relu(net.head(m.norm(tokens)[:, p:].transpose(1, 2).reshape(x.shape[0], -1, h, w)).float())
    return torch.bmm(acc, cams.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(cams.shape)


def main() -> None:
    from usage_cli.models.classifier import build_classifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    net = build_classifier({"backbone": "deit_s", "num_classes": 20, "img_size": 224}).eval()
    opts = CamInference(refine="patch-affinity")
    print(f"DeiT-S, one view of a 500x375 image, {torch.get_num_threads()} CPU threads, best of {a.rounds} interleaved rounds")
    print("| scale | tokens | bare s | recompute s (vs bare) | single pass s (vs bare) | explicit s (vs bare) | single pass max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with torch.no_grad():
        for s in (float(v) for v in a.scales.split(",")):
            x = torch.randn(1, 3, round(375 * s / 16) * 16, round(500 * s / 16) * 16)
            diff = float((single_pass_maps(net, x) - explicit_forward_maps(net, x, opts)).abs().max())
            ways = {"bare": lambda x=x: net(x), "recompute": lambda x=x: _forward_maps(net, x, opts), "single": lambda x=x: single_pass_maps(net, x),
                    "explicit": lambda x=x: explicit_forward_maps(net, x, opts)}  # fmt: skip
            best = dict.fromkeys(ways, float("inf"))
            for _ in range(a.rounds):
                for k, fn in ways.items():
                    t0 = time.perf_counter()
                    fn()
                    best[k] = min(best[k], time.perf_counter() - t0)
            tokens = (x.shape[-2] // 16) * (x.shape[-1] // 16) + 1
            cells = " | ".join(f"{best[k]:.3f} ({best['bare'] / best[k]:.2f})" for k in ("recompute", "single", "explicit"))
            print(f"| {s:g} | {tokens} | {best['bare']:.3f} | {cells} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
