"""Plain-torch window attention: the definition every other backend is tested against.

Implements W-MSA / SW-MSA of Liu et al. (2021), Eq. (4): ``Softmax(QKᵀ/√d + B)V`` inside each
window, with the cyclic shift, the region mask for shifted windows and the relative position bias
``B`` gathered from a ``(2M-1)²×heads`` table.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..functional.windows import (
    Pair,
    cyclic_shift,
    relative_bias,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from .spec import WindowSpec


@lru_cache(maxsize=128)
@torch.inference_mode(False)  # a cached tensor made under inference_mode could not be used in training
def _cached_mask(map_size: Pair, window: Pair, shift: Pair, device: torch.device, dtype: torch.dtype):
    return shifted_window_mask(map_size, window, shift, device=device, dtype=dtype)


def _mask(map_size: Pair, window: Pair, shift: Pair, device: torch.device, dtype: torch.dtype):
    """The region mask ``(nW, N, N)``, cached per resolution in eager mode. Under ``torch.compile``
    it is built in the graph instead (it depends on shapes only, so the compiler folds it into a
    constant): dynamo cannot consult a Python cache, and tracing through one warns."""
    if torch.compiler.is_compiling():
        return shifted_window_mask(map_size, window, shift, device=device, dtype=dtype)
    return _cached_mask(map_size, window, shift, device, dtype)


def window_attention(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec) -> torch.Tensor:
    """Multi-head self-attention inside (shifted) windows of a channels-last map.

    Args:
        qkv: ``(B, H, W, 3C)`` projected queries, keys and values of the padded map (H, W multiples
            of ``spec.window``), in the channel order ``[q | k | v]``, each ``heads × d``.
        table: relative position bias table ``((2Mh'-1)(2Mw'-1), heads)`` or ``None`` (no bias).
        spec: heads, window, shift, the table's window, scale and the ablation switches.

    Returns:
        ``(B, H, W, C)`` attention output, un-shifted, before the output projection.
    """
    return on_whole_map(attend_windows, qkv, table, spec)


def on_whole_map(attend, qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec) -> torch.Tensor:
    """Run a windowed attention core ``attend`` (signature of :func:`attend_windows`) on a whole map:
    roll ``(B, H, W, 3C)`` by ``-shift``, partition, attend, reverse, roll back → ``(B, H, W, C)``."""
    _, h, w, _ = qkv.shape
    x = window_partition(cyclic_shift(qkv, spec.shift), spec.window)  # (B*nW, N, 3C)
    out = attend(x, table, spec, map_size=(h, w))  # (B*nW, N, C)
    return cyclic_shift(window_reverse(out, spec.window, (h, w)), spec.shift, reverse=True)  # (B, H, W, C)


def attend_windows(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec, *,
                   map_size: Pair) -> torch.Tensor:
    """The attention of :func:`window_attention` on windows already shifted and partitioned.

    ``qkv`` is ``(B*nW, N, 3C)``: the projection of the windows of the (padded, rolled) map, in the
    order of :func:`~swinlab.functional.windows.window_partition`. Returns ``(B*nW, N, C)``. This is
    the form the model calls on CPU: rolling and partitioning the C-wide tokens *before* the q, k, v
    projection (as timm and torchvision do) moves a third of the bytes of doing it to the 3C-wide
    ``qkv`` (the per-token projection commutes with the token permutation). ``map_size`` is the
    padded ``(H, W)`` (for the region mask).
    """
    bnw, n, c3 = qkv.shape
    heads, window = spec.num_heads, spec.window
    c = c3 // 3
    d = c // heads
    q, k, v = qkv.view(bnw, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B*nW, h, N, d)
    # The logits, bias, mask and softmax in float32 at least, as CUDA's autocast runs softmax: CPU autocast
    # leaves softmax in bf16, whose CPU kernel is slower than float32's on Swin's short rows (measured on a
    # 2-core Xeon: 590 against 220 µs with the cast, (512, 2, 16, 16) logits), and less exact.
    dtype = torch.promote_types(q.dtype, torch.float32)
    if spec.use_qk:
        logits = ((q * spec.scale) @ k.transpose(-2, -1)).to(dtype)  # (B*nW, h, N, N)
    else:
        logits = torch.zeros(bnw, heads, n, n, dtype=dtype, device=q.device)
    if table is not None:
        logits = logits + relative_bias(table, window, spec.table_window).to(dtype)[None]
    if spec.masked:
        mask = _mask(tuple(map_size), window, spec.shift, logits.device, dtype)  # (nW, N, N)
        nw = mask.shape[0]
        logits = logits.view(bnw // nw, nw, heads, n, n) + mask[None, :, None]  # (B, nW, h, N, N)
        logits = logits.view(bnw, heads, n, n)
    attn = logits.softmax(dim=-1).to(v.dtype)
    return (attn @ v).transpose(1, 2).reshape(bnw, n, c)  # (B*nW, N, C)
