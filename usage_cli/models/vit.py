"""ViT forward passes that timm does not offer: the queries and keys of the last layers kept (for the
seeds' class-to-patch attention and patch-affinity refinement, computed from them without ever forming
a layer's T x T attention), the patch affinity summed in the forward itself (its attention formed a
block of query rows at a time), and several class tokens (MCTformer's ``mct`` mapping)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from usage_cli.errors import ConfigError


class QK(NamedTuple):
    """One attention layer's queries and keys (B x heads x T x head_dim, after its q / k norms) and its
    softmax scale: its attention is ``softmax(scale * q @ k^T)``, never formed here."""

    q: torch.Tensor
    k: torch.Tensor
    scale: float


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


@contextmanager
def _recording(attn: nn.Module, kept: list[QK]):
    """While timm's own ``Attention.forward`` runs (its fused kernel), record the queries and keys it
    computes: the outputs of its ``q_norm`` / ``k_norm`` (identities unless the model normalises them)."""
    if not (isinstance(getattr(attn, "q_norm", None), nn.Module) and isinstance(getattr(attn, "k_norm", None), nn.Module) and hasattr(attn, "scale")):
        raise ConfigError(f"{type(attn).__name__}: not timm's ViT attention (no q_norm / k_norm); its attention cannot be read")
    got: dict[str, torch.Tensor] = {}
    hooks = [getattr(attn, f"{n}_norm").register_forward_hook(lambda _m, _i, out, n=n: got.__setitem__(n, out.contiguous())) for n in "qk"]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
    kept.append(QK(got["q"], got["k"], float(attn.scale)))


def vit_forward(model: nn.Module, x: torch.Tensor, keep_qk: int = 0) -> tuple[torch.Tensor, list[QK]]:
    """Tokens after the final norm (B x T x D) and the queries and keys of the last ``keep_qk`` layers
    (:class:`QK`, oldest first; linear in the tokens). Every layer runs timm's own block, so its fused
    attention kernel: no layer's attention weights are ever formed."""
    tokens = _embed(model, x)
    kept: list[QK] = []
    first = len(model.blocks) - keep_qk
    for i, blk in enumerate(model.blocks):
        if i >= first:
            with _recording(blk.attn, kept):
                tokens = blk(tokens)
        else:
            tokens = blk(tokens)
    return model.norm(tokens), kept


ROWS = 128  # query rows whose attention weights :func:`summing_affinity` forms at once


class Affinity:
    """What :func:`summing_affinity` adds up: the head-mean patch-to-patch attention of the layers it
    wraps, summed (B x N x N float32, N patches), or None before the first of them has run."""

    total: torch.Tensor | None = None


def _attention_summing(attn: nn.Module, x: torch.Tensor, got: Affinity, prefix: int, rows: int) -> torch.Tensor:
    """timm ``Attention.forward`` (eval) with its weights formed ``rows`` query rows at a time (B x heads
    x rows x T, never T x T); their patch-to-patch block, summed over heads, added to ``got.total``."""
    B, T, _ = x.shape
    # 1. queries, keys and values as timm's attention makes them (its q / k norms: hooks see them)
    q, k, v = attn.qkv(x).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if got.total is None:
        got.total = torch.zeros(B, T - prefix, T - prefix, device=x.device)
    out, kt = torch.empty_like(v), k.transpose(-2, -1)
    for i in range(0, T, rows):
        # 2. a block of query rows: its attention weights, its output, and (patch rows, patch columns) the sum over heads
        a = ((q[:, :, i : i + rows] * attn.scale) @ kt).softmax(dim=-1)
        out[:, :, i : i + rows] = a @ v
        lo = max(i, prefix)
        if lo < i + rows:
            got.total[:, lo - prefix : i + rows - prefix] += a[:, :, lo - i :, prefix:].sum(1, dtype=torch.float32)
    # 3. timm's output projection
    return attn.proj(attn.norm(out.transpose(1, 2).reshape(B, T, -1)))


@contextmanager
def summing_affinity(model: nn.Module, layers: int, rows: int | None = None):
    """While active, the last ``layers`` attention layers of ``model`` form their attention weights a
    block of ``rows`` (:data:`ROWS`) query rows at a time and add its head-mean patch-to-patch block to the yielded
    :class:`Affinity`: after one forward, MCTformer's patch affinity ``sum_l mean_h A_lh[patch, patch]``
    (B x N x N) of that forward, made in the forward itself (the other layers keep the fused kernel)."""
    got, prefix, rows = Affinity(), int(model.num_prefix_tokens), rows or ROWS
    wrapped = [blk.attn for blk in list(model.blocks)[len(model.blocks) - layers :]]
    for attn in wrapped:
        if not (isinstance(getattr(attn, "q_norm", None), nn.Module) and hasattr(attn, "qkv") and hasattr(attn, "scale")):
            raise ConfigError(f"{type(attn).__name__}: not timm's ViT attention (no qkv / q_norm); its attention cannot be read")
        attn.forward = lambda x, *_a, attn=attn, **_k: _attention_summing(attn, x, got, prefix, rows)
    try:
        yield got
    finally:
        for attn in wrapped:
            del attn.forward
        if got.total is not None:
            got.total /= wrapped[0].num_heads  # the sum over heads -> their mean


def rows_attention(qk: QK, rows: int) -> torch.Tensor:
    """The attention of the first ``rows`` tokens (MCTformer's class tokens) to the tokens after them,
    averaged over heads: B x rows x (T - rows). Only those rows are formed (B x heads x rows x T)."""
    attn = ((qk.q[:, :, :rows] * qk.scale) @ qk.k.transpose(-2, -1)).softmax(dim=-1)
    return attn[..., rows:].mean(1)


def expand_class_tokens(model: nn.Module, n: int) -> None:
    """Replace the single class token by ``n`` (MCTformer): each starts as a copy of the original
    (plus a little noise so they can diverge) and all share the class-token position embedding."""
    with torch.no_grad():
        base = model.cls_token.data
        tokens = base.repeat(1, n, 1) + 0.02 * torch.randn(1, n, base.shape[-1], generator=torch.Generator().manual_seed(0))
    model.cls_token = nn.Parameter(tokens)
    model.num_prefix_tokens = n
    model.usage_num_class_tokens = n
