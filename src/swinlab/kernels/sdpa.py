"""Window attention through ``torch.nn.functional.scaled_dot_product_attention``.

The relative position bias and the shifted-window mask are merged into one additive
``(nW, heads, N, N)`` tensor handed to SDPA, which then runs the fused kernel of the device (flash
attention with a bias on CPU; memory-efficient attention on CUDA) instead of separate
matmul / add / add / softmax / matmul passes. The region mask depends only on the resolution and is
cached per resolution; the bias is gathered from the table once per call while the table can
change (training), and cached with the mask in inference, keyed by the table's version.

Same signature and semantics as :func:`swinlab.kernels.reference.window_attention`.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from ..functional.pair import static_zero
from ..functional.windows import Pair, relative_bias
from .reference import _mask, on_whole_map
from .spec import WindowSpec

# Inference cache of merged bias+mask per table tensor, keyed by the table's version. Tables are held
# weakly (an entry dies with its table; a new tensor with a recycled id never sees a stale bias).
# Keyed by id(): tensors are not usable as dict keys (== is element-wise).
_MERGED: dict[int, tuple[weakref.ref, dict]] = {}


def _entries_for(table: torch.Tensor) -> dict:
    slot = _MERGED.get(id(table))
    if slot is None or slot[0]() is not table:
        key = id(table)
        slot = (weakref.ref(table, lambda _, key=key: _MERGED.pop(key, None)), {})
        _MERGED[key] = slot
    return slot[1]


def _merged_bias(table, window, table_window, mask_key, dtype) -> torch.Tensor | None:
    """``(nW or 1, heads, N, N)`` additive logits term: relative bias (+ region mask)."""
    mask = _mask(*mask_key, dtype) if mask_key is not None else None  # (nW, N, N)
    if table is None:
        return None if mask is None else mask[:, None]
    # No Python-side cache under torch.compile (dynamo cannot key a dict on a tensor's version; the
    # compiled graph recomputes the bias, a gather and an add that the compiler fuses).
    # Nor for a table made under inference_mode (a model cast or copied there): such tensors keep no
    # version counter, so a cached bias could not notice the table changing.
    cacheable = (not (torch.is_grad_enabled() and table.requires_grad) and table.device.type != "meta"
                 and not torch.compiler.is_compiling() and not table.is_inference())
    entries = key = None
    if cacheable:
        entries = _entries_for(table)
        key = (table._version, tuple(window), tuple(table_window), mask_key, dtype)
        if key in entries:
            return entries[key]
    bias = relative_bias(table, window, table_window).to(dtype)[None]  # (1, h, N, N)
    if mask is not None:
        bias = bias + mask[:, None]  # (nW, h, N, N)
    if entries is not None:
        for stale in [k for k in entries if k[0] != table._version]:
            del entries[stale]  # the table changed since: drop its old biases
        entries[key] = bias
    return bias


def window_attention(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec) -> torch.Tensor:
    """See :func:`swinlab.kernels.reference.window_attention`."""
    return on_whole_map(attend_windows, qkv, table, spec)


def attend_windows(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec, *,
                   map_size: Pair) -> torch.Tensor:
    """See :func:`swinlab.kernels.reference.attend_windows`: ``(B*nW, N, 3C)`` → ``(B*nW, N, C)``."""
    bnw, n, c3 = qkv.shape
    heads = spec.num_heads
    c = c3 // 3
    d = c // heads
    # 4-D (batch, heads, N, d) operands: SDPA's fused CPU and CUDA kernels take 4-D only (5-D runs the
    # unfused maths path: 2.4× slower on Swin-T's stage 1 on the CPU).
    q, k, v = qkv.view(bnw, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B*nW, h, N, d)
    mask_key = (tuple(map_size), tuple(spec.window), tuple(spec.shift), qkv.device) if spec.masked else None
    bias = _merged_bias(table, spec.window, spec.table_window, mask_key, q.dtype)  # (nW|1, h|1, N, N) or None
    if bias is not None and not static_zero(bias.shape[0] - 1):  # per-window mask: repeat it per image
        nw = bias.shape[0]
        bias = bias.expand(bnw // nw, *bias.shape).reshape(bnw, bias.shape[1], n, n)  # (B*nW, h|1, N, N)
    if spec.use_qk:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=spec.scale)  # (B*nW, h, N, d)
    else:
        # "rel. pos. w/o app.": the logits are the bias (and mask) alone, the same for every image; with
        # neither, they are all zero and every window averages its values, as the reference does.
        logits = bias if bias is not None else q.new_zeros(1, 1, n, n)
        out = logits.softmax(dim=-1) @ v  # (B*nW, h, N, d)
    return out.transpose(1, 2).reshape(bnw, n, c)  # (B*nW, N, C)
