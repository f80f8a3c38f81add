"""The paper's seed path on a GPU (issue 31): DeiT-S, MCTformer's patch affinity, 500x375 inputs.

Prints, at scale 1 and at 4 scales x flip, images/s of
* bare:   the classifier's forward alone on prepared views (every view of a scale in one forward);
* plain:  gen-seeds' views (``cam_infer.view_maps``: normalise, resize, forward) with ``--refine none``;
* recompute: the same with ``--refine patch-affinity`` as gen-seeds computes it on a GPU
          (``cam_infer.affinity_pass`` auto there: fused attention everywhere, the affinity's
          product from the kept queries and keys);
* single: the same with the pass gen-seeds uses on the CPU (each kept layer's attention formed a
          block of query rows at a time, summed into one N x N affinity per view in the forward);
* before: the same with the explicit computation it replaced (``bench/explicit_affinity.py``: the
          attention formed, head-mean patch blocks kept, forwards split to the old 2 GB budget),
each as a ratio to bare, and the peak CUDA memory of each (and its ratio to bare's); then the largest
difference between each pass and before on the same images in float32 (TF32 off) and under
bfloat16 autocast (gen-seeds' default on CUDA). Whether auto should pick single on a GPU too is
what the recompute and single rows say. Random weights: speed does not depend on them.

Needs only torch and timm (and numpy): run from the repository root with ``PYTHONPATH=.:bench``
(``bench/gpu_seed_path.sh`` does). When the package's own classifier cannot be imported (its data
modules want rich / pycocotools), a stand-in with the same transformer path is built from
``usage_cli.models.vit``, which the script says.

    bash bench/gpu_seed_path.sh            # CUDA: DeiT-S, 500x375, 16 images in batches of 8
    bash bench/gpu_seed_path.sh --tiny     # any device: DeiT-Ti, 2 images of 64x96 (a check of the script)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from types import SimpleNamespace

import explicit_affinity as ref
import torch
from torch import nn

from usage_cli.algorithms import cam_infer
from usage_cli.algorithms.cam_infer import CamInference, view_maps
from usage_cli.models.vit import summing_affinity, vit_forward

SETTINGS = {"scale 1": ((1.0,), False), "4 scales x flip": ((1.0, 0.5, 1.5, 2.0), True)}


class StandIn(nn.Module):
    """The classifier's transformer path (models/classifier.py, mapping cm) without the package's
    data modules: timm ViT -> patch tokens after the final norm -> 1x1 head."""

    def __init__(self, name: str, classes: int):
        import timm

        super().__init__()
        model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
        stride = int(model.patch_embed.patch_size[0])
        self.head = nn.Conv2d(model.embed_dim, classes, 1, bias=False)
        self.num_classes = classes
        self.model = model
        self.mapping_spec = SimpleNamespace(class_tokens=False, cls_attn_layers=0)
        self.backbone = SimpleNamespace(model=model, num_prefix_tokens=int(model.num_prefix_tokens), attention_layers=len(model.blocks),
                                        stride=stride, size_multiple=stride, check_size=lambda h, w: None)  # fmt: skip

    def input_norm(self):
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def forward(self, x, keep_qk: int = 0, cls_attn: bool = False, affinity: int = 0):
        with summing_affinity(self.model, affinity) as got:
            tokens, qk = vit_forward(self.model, x, keep_qk=keep_qk)
        h, w = x.shape[-2] // self.backbone.stride, x.shape[-1] // self.backbone.stride
        cams = self.head(tokens[:, self.backbone.num_prefix_tokens :].transpose(1, 2).reshape(x.shape[0], -1, h, w))
        return {"cams": cams, **({"qk": qk} if keep_qk else {}), **({"affinity": got.total} if affinity else {})}


def classifier(backbone: str, device: torch.device):
    torch.manual_seed(0)
    try:
        from usage_cli.models.classifier import build_classifier

        net, kind = build_classifier({"backbone": backbone, "num_classes": 20, "img_size": 224}), "usage_cli's classifier"
    except ImportError as e:
        name = {"deit_s": "deit_small_patch16_224", "deit_t": "deit_tiny_patch16_224"}[backbone]
        net, kind = StandIn(name, 20), f"a stand-in built from usage_cli.models.vit ({e.name} is not installed)"
    return net.to(device).eval(), kind


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device, repeats: int) -> tuple[float, float]:
    """Seconds per call (best of ``repeats`` after a warm-up) and peak CUDA memory in MB (0 on the CPU)."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    return best, peak


@torch.no_grad()
def bare_views(net, images: torch.Tensor, opts: CamInference) -> list[torch.Tensor]:
    """The normalised, resized views of every scale (and flip), as gen-seeds makes them."""
    mean, std = (torch.tensor(s, device=images.device).view(1, 3, 1, 1) for s in net.input_norm())
    x0 = (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    out = []
    for s in opts.scales:
        size = cam_infer.scaled_size(*x0.shape[-2:], s, net.backbone.size_multiple)
        x = torch.nn.functional.interpolate(x0, size=size, mode="bilinear", align_corners=False)
        out.append(torch.cat([x, x.flip(-1)]) if opts.flip else x)
    return out


@torch.no_grad()
def row(net, batches: list[torch.Tensor], opts: CamInference, mode: str, repeats: int) -> tuple[float, float]:
    device = batches[0].device
    if mode == "bare":
        views = [bare_views(net, b, opts) for b in batches]

        def fn():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.amp):
                for per_scale in views:
                    for v in per_scale:
                        net(v)
    else:
        o = replace(opts, refine="none") if mode == "plain" else replace(opts, affinity_pass="single" if mode == "single" else "recompute")
        forward = ref.before_forward_maps if mode == "before" else FORWARD

        def fn():
            cam_infer._forward_maps = forward
            try:
                for b in batches:
                    view_maps(net, b, o)
            finally:
                cam_infer._forward_maps = FORWARD

    seconds, peak = measure(fn, device, repeats)
    return sum(len(b) for b in batches) / seconds, peak


FORWARD = cam_infer._forward_maps


@torch.no_grad()
def max_difference(net, images: torch.Tensor, opts: CamInference) -> tuple[float, float]:
    """The largest |pass - before| over every view's maps (``opts.affinity_pass``), and the largest |before|."""
    new = view_maps(net, images, opts)[0]
    cam_infer._forward_maps = ref.before_forward_maps
    try:
        old = view_maps(net, images, opts)[0]
    finally:
        cam_infer._forward_maps = FORWARD
    return max(float((a - b).abs().max()) for a, b in zip(new, old, strict=True)), max(float(b.abs().max()) for b in old)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="DeiT-Ti, 2 images of 64x96, any device: a check of the script")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8, help="images a batch, as gen-seeds' --batch-size")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone, (h, w), n, bs = ("deit_t", (64, 96), 2, 2) if a.tiny else ("deit_s", (375, 500), a.images, a.batch_size)
    net, kind = classifier(backbone, device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g).to(device)
    batches = list(images.split(bs))
    amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as gen-seeds on CUDA
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; {backbone} ({kind}), random weights; {n} images of {w}x{h} in batches of {bs}; "
          f"bfloat16 autocast {'on' if amp else 'off'}, TF32 {'on' if device.type == 'cuda' else 'n/a'} (gen-seeds' defaults here)")  # fmt: skip
    print("| views | mode | images/s | vs bare | peak CUDA MB | vs bare |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setting, (scales, flip) in SETTINGS.items():
        opts = CamInference(scales=scales, flip=flip, refine="patch-affinity", source="cam", affinity_layers=12, amp=amp)
        res = {m: row(net, batches, opts, m, a.repeats) for m in ("bare", "plain", "before", "recompute", "single")}
        for m, (ips, peak) in res.items():
            rel = f"{peak / res['bare'][1]:.2f}" if res["bare"][1] else ""
            print(f"| {setting} | {m} | {ips:.2f} | {ips / res['bare'][0]:.2f} | {peak:.0f} | {rel} |", flush=True)
    # exactness on this device: float32 (TF32 off) and bfloat16 autocast, 4 scales x flip, one batch
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    opts = CamInference(scales=SETTINGS["4 scales x flip"][0], flip=True, refine="patch-affinity", source="cam", affinity_layers=12)
    for way in ("recompute", "single"):
        for label, o in (("float32", replace(opts, affinity_pass=way)), ("bfloat16 autocast", replace(opts, amp=True, affinity_pass=way))):
            diff, top = max_difference(net, batches[0], o)
            print(f"max |{way} - before| over every view's maps, {label}: {diff:.3g} (largest map value {top:.3g}, relative {diff / top:.2g})")


if __name__ == "__main__":
    main()
