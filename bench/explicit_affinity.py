"""The seed step's attention as gen-seeds computed it before issue 31, kept as the reference that the
bench and the tests compare the package against (the package no longer forms attention weights).

Each used layer ran an explicit attention (timm's ``Attention.forward`` with the softmax weights
returned, no fused kernel); MCTformer's patch affinity was the head-mean patch-to-patch block of the
last ``affinity_layers`` layers summed (B x N x N), times the ReLU'd maps; ``mct``'s class-to-patch
attention came from the whole weights of its last layers.

    explicit_forward_maps(net, views, opts)   # = usage_cli.algorithms.cam_infer._forward_maps
    before_forward_maps(net, views, opts)     # the same in forwards split to the 2 GB attention budget, as before

On the CPU the two are the same (one view a forward there, then and now).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from usage_cli.models.vit import _embed


def attention(attn_mod, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention.forward`` with the softmax weights returned (B x heads x T x T)."""
    B, N, _ = x.shape
    qkv = attn_mod.qkv(x).reshape(B, N, 3, attn_mod.num_heads, attn_mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attn = ((q * attn_mod.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn_mod.attn_drop(attn) @ v).transpose(1, 2).reshape(B, N, -1)
    return attn_mod.proj_drop(attn_mod.proj(attn_mod.norm(out))), attn


def explicit_vit_forward(model, x: torch.Tensor, layers: int, keep=lambda i, a: a) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Tokens after the final norm and ``keep(i, attn)`` of each of the last ``layers`` layers (their
    attention formed; the earlier layers run timm's own block)."""
    tokens, kept = _embed(model, x), []
    first = len(model.blocks) - layers
    for i, blk in enumerate(model.blocks):
        if i < first:
            tokens = blk(tokens)
            continue
        out, a = attention(blk.attn, blk.norm1(tokens))
        tokens = tokens + blk.drop_path1(blk.ls1(out))
        tokens = tokens + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(tokens))))
        kept.append(keep(i, a))
    return model.norm(tokens), kept


def patch_attention(attn: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """One layer's patch-to-patch attention averaged over heads: B x heads x T x T -> B x N x N."""
    return attn[:, :, num_prefix:, num_prefix:].mean(1)


def patch_affinity(attn: Sequence[torch.Tensor], num_prefix: int, layers: int = 12) -> torch.Tensor:
    """MCTformer's patch-to-patch affinity: attention averaged over heads, summed over the last
    ``layers`` layers, patch tokens only: B x N x N."""
    return sum(patch_attention(a, num_prefix) for a in list(attn)[-layers:])


def refine_with_affinity(cams: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Propagate activation maps (B x C x h x w) along the patch affinity (B x hw x hw)."""
    B, C, h, w = cams.shape
    return torch.bmm(affinity, cams.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, C, h, w)


def explicit_forward_maps(net, part: torch.Tensor, opts) -> torch.Tensor:
    """The float32 maps (V x C x h x w) of one forward of views, as ``cam_infer._forward_maps`` made
    them before issue 31 (same options: refine, source, affinity_layers, amp)."""
    bb, spec = net.backbone, net.mapping_spec
    prefix, affinity, attn_src = bb.num_prefix_tokens, opts.refine == "patch-affinity", opts.source == "attn"
    n_cls = spec.cls_attn_layers if spec.class_tokens and attn_src else 0
    layers = max(opts.affinity_layers if affinity else 0, n_cls)
    first = bb.attention_layers - opts.affinity_layers
    # without class rows only the head-mean patch block of each layer is kept, as before
    keep = (lambda i, a: a) if spec.class_tokens else (lambda i, a: patch_attention(a, prefix).float() if i >= first else None)
    with torch.autocast(part.device.type, dtype=torch.bfloat16, enabled=opts.amp):
        bb.check_size(part.shape[-2], part.shape[-1])
        tokens, attn = explicit_vit_forward(bb.model, part, layers, keep)
        h, w = part.shape[-2] // bb.stride, part.shape[-1] // bb.stride
        cams = net.head(tokens[:, prefix:].transpose(1, 2).reshape(part.shape[0], -1, h, w))
    cams = cams.float()
    z = cams
    if n_cls:
        C = net.num_classes
        cls_attn = sum(a[:, :, :C, C:].mean(1) for a in attn[-n_cls:]).reshape(part.shape[0], C, h, w)
        z = cls_attn.float() * torch.relu(cams)
    if not affinity:
        return z
    if spec.class_tokens:
        return refine_with_affinity(torch.relu(z), patch_affinity([a.float() for a in attn], prefix, opts.affinity_layers))
    return refine_with_affinity(torch.relu(z), sum(a for a in attn if a is not None))


ATTN_BUDGET_GB = 2.0  # the default of the retired --attn-budget-gb


def views_per_forward_before(net, size: tuple[int, int], opts, budget_gb: float = ATTN_BUDGET_GB) -> int:
    """How many views of ``size`` the old code put in one forward on a GPU: the attention it kept
    (the head-mean patch blocks of the last layers plus one layer's maps in flight, x3 for the
    softmax; ``mct``: the last layers' whole maps) within ``budget_gb``, in float32."""
    bb, spec = net.backbone, net.mapping_spec
    tokens = (size[0] // bb.stride) * (size[1] // bb.stride) + bb.num_prefix_tokens
    heads, layers = bb.model.blocks[0].attn.num_heads, bb.attention_layers
    if spec.class_tokens:
        kept = max(opts.affinity_layers, spec.cls_attn_layers) if opts.refine == "patch-affinity" else spec.cls_attn_layers
        per_view = min(kept, layers) * heads * tokens * tokens * 4
    elif opts.refine == "patch-affinity":
        per_view = (min(opts.affinity_layers, layers) + 3 * heads) * tokens * tokens * 4
    else:
        return 1 << 30
    return max(1, int(budget_gb * 2**30 // max(per_view, 1)))


def before_forward_maps(net, part: torch.Tensor, opts) -> torch.Tensor:
    """:func:`explicit_forward_maps` in the forwards the old attention budget allowed."""
    n = 1 if part.device.type == "cpu" else views_per_forward_before(net, tuple(part.shape[-2:]), opts)
    return torch.cat([explicit_forward_maps(net, p, opts) for p in part.split(n)])
