"""Random walk with AffinityNet affinities (PSA, Ahn & Kwak 2018, Sec. 3.3).

Affinities ``a_ij`` exist for pixel pairs within a radius of the feature grid. The transition
matrix is ``T = D^-1``-normalised ``a**beta`` (column-normalised: ``T[i, j] = a_ij^beta / sum_i
a_ij^beta``), and the seed maps ``v`` (C x N, background channel included) become ``v T^t`` with
``t = 2**logt``, computed by squaring ``T`` logt times.

Two equal ways to compute it:

* dense (:func:`transition_matrix` + :func:`random_walk`): N x N matrices, logt matrix products
  (PSA's ~15 lines). Fast on a GPU; N^2 memory (a 500 x 375 image at stride 8 has N = 2,961:
  35 MB a matrix, 26 GFLOP a squaring).
* local (:func:`local_weights` + :func:`local_random_walk`): the same ``T`` kept as one weight per
  neighbour in the radius window (a sparse CSR matrix, window-size entries a column), applied
  ``2**logt`` times to the maps. O(N * window) memory and work, the default on CPU.

Pair affinities come as ``B x P x h x w`` for the half-plane offsets of
:func:`usage_cli.algorithms.affinity.search_offsets` (``pair[:, p, y, x]`` links pixel (y, x) to
(y + dy_p, x + dx_p); zero where the partner is outside the grid).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

Offset = tuple[int, int]


def shift(x: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, ``fill`` where that falls outside the grid."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def transition_matrix(aff: torch.Tensor, beta: float) -> torch.Tensor:
    """Column-normalised ``aff ** beta`` (... x N x N): every column sums to 1."""
    # 1. sharpen: weak affinities fade; 2. normalise each column (D^-1 on the right)
    a = aff.pow(beta)
    return a / a.sum(dim=-2, keepdim=True)


def random_walk(seeds: torch.Tensor, trans: torch.Tensor, logt: int) -> torch.Tensor:
    """``seeds @ trans^(2**logt)`` for ... x C x N seeds and ... x N x N transitions."""
    # 1. T^(2^logt) by repeated squaring; 2. propagate the seed rows
    for _ in range(logt):
        trans = trans @ trans
    return seeds @ trans


def affinity_matrix(pair: torch.Tensor, offsets: Sequence[Offset]) -> torch.Tensor:
    """Dense symmetric B x N x N affinity (1 on the diagonal) from B x P x h x w pair affinities."""
    b, p, h, w = pair.shape
    n = h * w
    idx = torch.arange(n, device=pair.device).view(h, w)
    mat = torch.zeros(b, n, n, dtype=pair.dtype, device=pair.device)
    # 1. each in-grid pair (i -> i + offset) sets a_ij and a_ji; 2. a_ii = 1
    for k, (dy, dx) in enumerate(offsets):
        to = shift(idx, dy, dx, fill=-1)
        ok = to >= 0
        src, dst = idx[ok], to[ok]
        vals = pair[:, k][:, ok]
        mat[:, src, dst] = vals
        mat[:, dst, src] = vals
    mat.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return mat


def window_size(offsets: Sequence[Offset]) -> int:
    """Half-width r of the square window holding every offset and its opposite."""
    return max(max(abs(dy), abs(dx)) for dy, dx in offsets)


def local_weights(pair: torch.Tensor, offsets: Sequence[Offset], beta: float) -> torch.Tensor:
    """The transition matrix as B x K x h x w weights over the (2r+1)^2 window around each pixel.

    ``weights[:, k, j]`` is ``T[j + o_k, j]`` for window offset ``o_k`` (row-major, as ``F.unfold``
    orders them); weights over the window of every pixel sum to 1.
    """
    r = window_size(offsets)
    b, _, h, w = pair.shape
    side = 2 * r + 1
    win = pair.new_zeros(b, side, side, h, w)
    win[:, r, r] = 1.0  # a_jj
    # 1. a(j, j+o) = pair_o(j); a(j, j-o) = a(j-o, j) = pair_o(j - o)
    for k, (dy, dx) in enumerate(offsets):
        win[:, r + dy, r + dx] = pair[:, k]
        win[:, r - dy, r - dx] = shift(pair[:, k], -dy, -dx)
    # 2. sharpen and normalise over the window (the column of T)
    win = win.pow(beta).view(b, side * side, h, w)
    return win / win.sum(1, keepdim=True)


def local_random_walk(seeds: torch.Tensor, weights: torch.Tensor, steps: int) -> torch.Tensor:
    """Apply the local transition ``steps`` times to B x C x h x w seeds (``v <- v T``).

    The window weights become one sparse N x N matrix per image (``(2r+1)^2`` entries a column),
    so each step is a sparse-dense product instead of an unfold of every window.
    """
    b, c, h, w = seeds.shape
    k = weights.shape[1]
    side = int(round(k**0.5))
    r = side // 2
    n = h * w
    dev = seeds.device
    # 1. for pixel j and window offset o_k: the neighbour i = j + o_k, when inside the grid
    ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    oy, ox = (torch.arange(k, device=dev) // side - r), (torch.arange(k, device=dev) % side - r)
    ny, nx = ys[None] + oy[:, None, None], xs[None] + ox[:, None, None]  # K x h x w
    inside = ((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)).view(k, n)
    rows = torch.arange(n, device=dev).expand(k, n)[inside]
    cols = (ny * w + nx).view(k, n)[inside]
    out = []
    for i in range(b):
        # 2. v_new[:, j] = sum_k v[:, j + o_k] * T[j + o_k, j]: a sparse M (N x N) with M[j, i] = T[i, j]
        vals = weights[i].reshape(k, n)[inside]
        m = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR x dense is all we use
            warnings.simplefilter("ignore", UserWarning)
            m = m.to_sparse_csr()
        v = seeds[i].reshape(c, n).T.contiguous()
        for _ in range(steps):
            v = m @ v
        out.append(v.T.reshape(c, h, w))
    return torch.stack(out)


def walk(
    seeds: torch.Tensor,
    pair: torch.Tensor,
    offsets: Sequence[Offset],
    beta: float,
    logt: int,
    *,
    method: str = "auto",
    max_dense_bytes: int = 2 << 30,
) -> torch.Tensor:
    """Random-walk B x C x h x w seeds with B x P x h x w pair affinities; returns B x C x h x w.

    ``method``: "dense" (repeated squaring), "local" (2**logt window steps) or "auto" (dense on a
    GPU when three B x N x N float32 matrices fit in ``max_dense_bytes``, else local).
    """
    b, c, h, w = seeds.shape
    n = h * w
    if method == "auto":
        fits = 3 * b * n * n * 4 <= max_dense_bytes
        method = "dense" if seeds.device.type == "cuda" and fits else "local"
    if method == "dense":
        trans = transition_matrix(affinity_matrix(pair.float(), offsets), beta)
        return random_walk(seeds.float().reshape(b, c, n), trans, logt).view(b, c, h, w)
    if method == "local":
        return local_random_walk(seeds.float(), local_weights(pair.float(), offsets, beta), 2**logt)
    raise ValueError(f"method must be auto, dense or local, got {method!r}")
