"""Why does a DeiT trained from scratch stall near the class-prior loss? One candidate at a time.

Every variant trains the same DeiT-Ti on the same preloaded images (resize + flip, AdamW, constant
lr, batch 32, the same seed and batch order) and prints the mean training BCE per epoch, the
class-prior BCE (what a network that only learned the label frequencies gets), and the share of
(image, present class) pairs whose activation map has no positive value anywhere (an empty seed).

    python bench/diag_transformer.py --root R --epochs 20 [--variants std01+finalnorm,usage,...]

Variants:
  usage      the classifier as ``usage train-cls`` builds it from scratch: the last block's tokens
             (no final LayerNorm), 1x1 head without bias, PyTorch's default init U(+-1/sqrt(D))
  std01      the head initialised N(0, 0.01), as before the fix
  finalnorm  the patch tokens after the final LayerNorm, as before the fix
             (``std01+finalnorm`` = the classifier before the fix)
  bias       + a per-class bias on the scores, kept out of the activation map (Eq. 2 has none)
  aa         + the AA regulariser of the paper preset (EMA teacher, tau2 0.1, lambda 0.25); the
             loss printed is still the classification BCE; seeds from the teacher
  a+b        several of the above together (e.g. std01+bias)
  plain      an independent plain trainer: timm DeiT-Ti with its own token head (nn.Linear, bias),
             applied to every patch token, scores by the mean
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _data(root: str, split: str, size: int):
    import numpy as np
    import torch
    from PIL import Image

    from usage_cli.data import load_dataset
    from usage_cli.data.io import read_image
    from usage_cli.data.joint_transforms import IMAGENET_MEAN, IMAGENET_STD

    ds = load_dataset("voc", root, split)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    xs = []
    for r in ds.records:
        im = Image.fromarray(read_image(r.image_path)).resize((size, size), Image.BILINEAR)
        xs.append((torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 - mean) / std)
    y = torch.stack([torch.from_numpy(r.multi_hot(ds.meta.num_classes)) for r in ds.records]).float()
    return torch.stack(xs), y


def _model(variant: str, num_classes: int, size: int):
    import torch
    from torch import nn

    from usage_cli.models.classifier import build_classifier

    parts = set(variant.split("+"))
    if {"bias", "aa"} <= parts:  # the bias wraps this instance's forward, which the EMA teacher's copy would share
        raise SystemExit("the bias and aa variants cannot be combined")
    tokens = "final-norm" if "finalnorm" in parts else "last-block"
    net = build_classifier({"backbone": "deit_t", "num_classes": num_classes, "mapping": "cam", "img_size": size, "tokens": tokens})
    if "std01" in parts:  # the head init before the fix
        nn.init.normal_(net.head.weight, std=0.01)
    if "bias" in parts:  # a per-class score offset outside the map
        net.score_bias = nn.Parameter(torch.zeros(num_classes))
        forward = net.forward
        net.forward = lambda x, **kw: {**(o := forward(x, **kw)), "logits": o["logits"] + net.score_bias}
    if variant == "plain":
        import timm

        vit = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=size)

        class Plain(nn.Module):
            def forward(self, x):
                tok = vit.forward_features(x)[:, 1:]
                z = vit.head(tok)  # B x N x C
                h = w = size // 16
                return {"logits": z.mean(1), "cams": z.transpose(1, 2).reshape(x.shape[0], -1, h, w)}

        net = Plain()
        net.vit = vit
    return net


def run_variant(variant: str, x, y, epochs: int, batch: int, lr: float, seed: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = _model(variant, y.shape[1], x.shape[-1])
    task = None
    if "aa" in variant.split("+"):  # the USAGE regulariser as the paper preset sets it
        from usage_cli.tasks.classification import ClassificationTask, ClsTaskConfig

        task = ClassificationTask(net, ClsTaskConfig(reg="aa"))
    params = [p for p in (task or net).parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps, total_steps = 0, epochs * (len(x) // batch)
    g = torch.Generator().manual_seed(seed)
    losses = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        net.train()
        perm, total, n = torch.randperm(len(x), generator=g), 0.0, 0
        for i in range(0, len(x) - batch + 1, batch):
            idx = perm[i : i + batch]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], x[idx].flip(-1), x[idx])
            if task is None:
                loss = total_loss = F.binary_cross_entropy_with_logits(net(xb)["logits"], y[idx])
            else:
                out = task({"image": xb, "label": y[idx]})
                loss, total_loss = out["loss_cls"], out["loss"]
            opt.zero_grad()
            total_loss.backward()
            opt.step()
            steps += 1
            if task is not None:
                task.on_step_end(steps, total_steps)
            total, n = total + float(loss.detach()), n + 1
        losses.append(total / n)
    if task is not None:  # seeds come from the teacher, as train-cls saves it with aa
        net = task.seed_network("teacher")
    net.eval()
    with torch.no_grad():
        empty, pairs = 0, 0
        for i in range(0, len(x), 64):
            z = net(x[i : i + 64])["cams"].flatten(2).amax(-1)  # B x C
            present = y[i : i + 64] > 0.5
            empty += int(((z <= 0) & present).sum())
            pairs += int(present.sum())
    return {"variant": variant, "loss": losses, "empty_share": empty / max(pairs, 1), "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="std01+finalnorm,std01+finalnorm+bias,finalnorm,std01,usage,usage+bias,usage+aa,plain")
    a = p.parse_args()
    x, y = _data(a.root, a.split, a.size)
    prior = y.mean(0).clamp(1e-6, 1 - 1e-6)
    prior_bce = float(-(prior * prior.log() + (1 - prior) * (1 - prior).log()).mean())
    print(f"{len(x)} images, {y.shape[1]} classes; class-prior BCE {prior_bce:.4f}")
    print("| variant | loss epoch 1 | loss mid | loss last | last / prior | empty seeds | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for v in a.variants.split(","):
        r = run_variant(v, x, y, a.epochs, a.batch, a.lr, a.seed)
        L = r["loss"]
        print(f"| {v} | {L[0]:.4f} | {L[len(L) // 2]:.4f} | {L[-1]:.4f} | {L[-1] / prior_bce:.2f} | {100 * r['empty_share']:.1f} % | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
