"""ViT forward passes that timm does not offer: explicit attention weights (for seeds and the
patch-affinity refinement) and several class tokens (MCTformer's ``mct`` mapping)."""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn


def _attention(attn_mod: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention.forward`` with the softmax weights returned (B x heads x T x T)."""
    B, N, _ = x.shape
    qkv = attn_mod.qkv(x).reshape(B, N, 3, attn_mod.num_heads, attn_mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attn = ((q * attn_mod.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn_mod.attn_drop(attn) @ v).transpose(1, 2).reshape(B, N, -1)
    out = attn_mod.proj_drop(attn_mod.proj(attn_mod.norm(out)))
    return out, attn


def _block(blk: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, attn = _attention(blk.attn, blk.norm1(x))
    x = x + blk.drop_path1(blk.ls1(out))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, attn


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class token(s) + position embedding (class-token positions shared)."""
    n_cls = getattr(model, "usage_num_class_tokens", 0)
    if n_cls <= 1:
        return model.norm_pre(model._pos_embed(model.patch_embed(x)))
    patches = model.patch_embed(x)  # B x H x W x D (dynamic_img_size)
    B, H, W, D = patches.shape
    pos = resample_abs_pos_embed(model.pos_embed, new_size=(H, W), old_size=model.patch_embed.grid_size, num_prefix_tokens=1)
    cls = model.cls_token.expand(B, -1, -1) + pos[:, :1]
    tokens = torch.cat([cls, patches.reshape(B, H * W, D) + pos[:, 1:]], dim=1)
    return model.norm_pre(model.pos_drop(tokens))


def vit_forward(
    model: nn.Module, x: torch.Tensor, return_attn: bool = False, keep_attn=None, attn_layers: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Tokens after the final norm (B x T x D) and, if asked, each layer's attention.

    ``keep_attn(layer_index, attn)``, when given, says what to keep of each layer's B x heads x T x T
    attention (``None``: nothing), so a caller that needs a reduction never holds every layer whole.
    ``attn_layers``: only the last that many layers' attention is needed; the others run timm's own
    block (a fused attention kernel that never forms the weights).
    """
    tokens = _embed(model, x)
    attns = []
    first = 0 if attn_layers is None else max(len(model.blocks) - attn_layers, 0)
    for i, blk in enumerate(model.blocks):
        if return_attn and i >= first:
            tokens, a = _block(blk, tokens)
            a = keep_attn(i, a) if keep_attn is not None else a
            if a is not None:
                attns.append(a)
        else:
            tokens = blk(tokens)
    return model.norm(tokens), attns


def expand_class_tokens(model: nn.Module, n: int) -> None:
    """Replace the single class token by ``n`` (MCTformer): each starts as a copy of the original
    (plus a little noise so they can diverge) and all share the class-token position embedding."""
    with torch.no_grad():
        base = model.cls_token.data
        tokens = base.repeat(1, n, 1) + 0.02 * torch.randn(1, n, base.shape[-1], generator=torch.Generator().manual_seed(0))
    model.cls_token = nn.Parameter(tokens)
    model.num_prefix_tokens = n
    model.usage_num_class_tokens = n
