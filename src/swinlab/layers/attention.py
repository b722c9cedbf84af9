"""Attention layers.

* :class:`WindowAttention` - window attention (W-MSA / SW-MSA) of Swin (Liu et al., 2021, Sec. 3.2),
  and Swin V2's scaled cosine attention with the continuous position bias (Liu et al., 2022, Sec. 3.2-3.3).
  The maths of the attention itself lives in :mod:`swinlab.kernels` behind one signature, so faster
  backends can replace the reference without touching the model.
* :class:`Attention` - global multi-head self-attention over a token sequence, ``Softmax(QKᵀ/√d)V``
  (Vaswani et al., 2017; as used by ViT, Dosovitskiy et al., 2021, Eq. 2-4), computed by
  :func:`torch.nn.functional.scaled_dot_product_attention`.
* :class:`CrossAttention` - queries of one token set attending to a separate context (the
  cross-stage global context of :mod:`swinlab.layers.global_context`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..functional.pair import is_static, round_up, static_zero, to_pair
from ..functional.windows import (
    Pair,
    cyclic_shift,
    fit_window,
    pad_to_windows,
    padded_window_order,
    reverse_unshift,
    shift_partition,
    window_partition,
    window_reverse,
)
from ..kernels import WindowSpec, get_window_attention, get_windows_attention
from ..kernels import linear as linear_kernels
from .linear import Linear
from .position import ContinuousPositionBias, RelativePositionBias

ATTENTIONS = ("dot", "cosine")  # SwinConfig.attention: QKᵀ/√d (V1) | cos(q, k)·τ (V2)
#: Swin V2's bound on the learned temperature τ of cosine attention: τ ≤ 100 (log τ clamped at log 100)
MAX_LOGIT_SCALE = math.log(100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) M×M windows of a channels-last map.

    Args:
        dim: channels C.
        num_heads: heads h (C must divide by h).
        window_size: the configured window ``(Mh, Mw)``; it shrinks on maps smaller than it.
        shift_size: cyclic shift ``(Sh, Sw)``: ``(0, 0)`` for W-MSA, ``(⌊Mh/2⌋, ⌊Mw/2⌋)`` for SW-MSA.
        qkv_bias: learn biases of the q, k, v projection.
        k_bias: with ``qkv_bias``, a bias on k too (Swin V2 has biases on q and v only: ``q_bias``,
            ``v_bias``, as the official code, timm and transformers name them).
        rel_pos: add the relative position bias B.
        position: the bias B with ``rel_pos``: ``"table"`` (V1's learned table) or ``"cpb"`` (V2's
            continuous position bias, :class:`~swinlab.layers.position.ContinuousPositionBias`).
        attention: ``"dot"`` (``QKᵀ/√d``) or ``"cosine"`` (V2: ``cos(q, k)·τ`` with a learned per-head
            temperature ``τ = exp(logit_scale)``, clamped at 100). Cosine attention runs on every backend
            unchanged: q and k are normalized per head and τ folded into q, then the scale is 1.
        pretrained_window: the window the CPB was pretrained with (0: the window in use).
        built_map: the map this layer sees at the model's built image size (``window_fit="built"``).
        mask_shifted: mask token pairs from different regions in shifted windows.
        backend: the window-attention implementation (see :mod:`swinlab.kernels`).
        window_fit: how the shift is dropped on maps not larger than the window
            (:func:`~swinlab.functional.windows.fit_window`): ``"axis"``, ``"min-side"``, ``"pad"`` or
            ``"built"``.
        shift_order: on a map that is padded to the windows, ``"pad-roll"`` pads and then rolls (the
            paper's geometry: torchvision, the official code, transformers) and ``"roll-pad"`` rolls the
            unpadded map and then pads (timm), with the mask of the padded map either way.
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: Pair, shift_size: Pair = (0, 0),
                 qkv_bias: bool = True, rel_pos: bool = True, use_qk: bool = True,
                 mask_shifted: bool = True, backend: str = "auto", window_fit: str = "axis",
                 shift_order: str = "pad-roll", k_bias: bool = True, position: str = "table",
                 attention: str = "dot", pretrained_window: Pair = (0, 0), built_map: Pair | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if not (rel_pos or use_qk):
            raise ValueError("window attention needs QKᵀ or the relative bias (or both) in its logits")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if position not in ("table", "cpb"):
            raise ValueError(f"position must be 'table' or 'cpb', got {position!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size)
        self.use_qk = use_qk
        self.mask_shifted = mask_shifted
        self.window_fit = window_fit
        self.built_map = None if built_map is None else tuple(built_map)
        self.shift_order = shift_order
        self.cosine = attention == "cosine"
        self.scale = 1.0 if self.cosine else (dim // num_heads) ** -0.5  # cosine: τ is folded into q
        self.backend = backend
        self._attend = get_window_attention(backend)
        self._attend_windows = get_windows_attention(backend)
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias and k_bias)
        if qkv_bias and not k_bias:  # V2: q and v biases; k's is zero
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        if self.cosine:
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))  # log τ, per head
        self.proj = Linear(dim, dim)
        if not rel_pos:
            self.rel_pos = None
        elif position == "cpb":
            self.rel_pos = ContinuousPositionBias(num_heads=num_heads,
                                                  pretrained_window=to_pair(pretrained_window))
        else:
            self.rel_pos = RelativePositionBias(window_size=window_size, num_heads=num_heads)

    def set_backend(self, backend: str) -> None:
        """Switch the window-attention implementation (weights are unchanged)."""
        self._attend = get_window_attention(backend)
        self._attend_windows = get_windows_attention(backend)
        self.backend = backend

    def windows_for(self, map_size: Pair) -> tuple[Pair, Pair]:
        """The effective ``(window, shift)`` on a map of ``map_size``."""
        return fit_window(map_size, self.window_size, self.shift_size, self.window_fit, self.built_map)

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` tokens → ``(..., 3C)`` ``[q | k | v]`` as the attention backends take them: with
        cosine attention, q and k unit-norm per head and q times τ, so the logits are ``q·kᵀ`` (scale 1)."""
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = linear_kernels.linear(x, self.qkv.weight, bias, backend=self.qkv.backend)
        if not self.cosine:
            return qkv
        *lead, c3 = qkv.shape
        q, k, v = qkv.view(*lead, 3, self.num_heads, c3 // 3 // self.num_heads).unbind(-3)  # 3 × (..., h, d)
        tau = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp().view(self.num_heads, 1).to(q.dtype)  # (h, 1)
        q = F.normalize(q, dim=-1) * tau
        return torch.stack([q, F.normalize(k, dim=-1), v], dim=-3).view(*lead, c3)

    def bias_table(self, window: Pair) -> tuple[torch.Tensor | None, Pair]:
        """The bias table for ``window`` and the window it is laid out for (V1's learned table: the
        configured window, of which a smaller one uses the centre; the CPB: ``window`` itself)."""
        if self.rel_pos is None:
            return None, self.window_size
        if isinstance(self.rel_pos, ContinuousPositionBias):
            return self.rel_pos.table_for(window), tuple(window)
        return self.rel_pos.table, self.window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` normalized tokens → ``(B, H, W, C)`` attention output."""
        _, h, w, _ = x.shape
        window, shift = self.windows_for((h, w))
        table, table_window = self.bias_table(window)
        spec = WindowSpec(num_heads=self.num_heads, window=window, shift=shift, table_window=table_window,
                          scale=self.scale, mask_shifted=self.mask_shifted, use_qk=self.use_qk)
        if self._attend_windows is not None and not is_static(h, w):  # a dynamic export: gathers
            return self._dynamic_windows(x, table, spec, window, shift)
        if self.shift_order == "roll-pad" and not static_zero(*shift):
            return self._roll_then_pad(x, table, spec, window, shift)
        x = pad_to_windows(x, window)  # (B, Hp, Wp, C)
        if self._attend_windows is None:  # a fused kernel that shifts and partitions by index
            out = self._attend(self.project_qkv(x), table, spec)  # (B, Hp, Wp, C)
            return self.proj(out[:, :h, :w])  # (B, H, W, C)
        # Roll and partition the C-wide tokens, not the 3C-wide qkv (a third of the bytes); the per-token
        # projections commute with the permutation, so qkv and proj run on windows.
        hp, wp = x.shape[1:3]
        windows = shift_partition(x, window, shift)  # (B*nW, N, C): roll + partition, one gather
        out = self._attend_windows(self.project_qkv(windows), table, spec, map_size=(hp, wp))  # (B*nW, N, C)
        out = reverse_unshift(self.proj(out), window, shift, (hp, wp))  # (B, Hp, Wp, C)
        return out[:, :h, :w]  # (B, H, W, C)

    def _roll_then_pad(self, x, table, spec: WindowSpec, window: Pair, shift: Pair) -> torch.Tensor:
        """``shift_order="roll-pad"`` (timm's order): roll the unpadded map, pad, partition; back: reverse,
        crop, roll back. The mask is the padded map's, as timm builds it."""
        if self._attend_windows is None:
            raise ConfigError(f"attention backend {self.backend!r} shifts after padding inside its kernel; "
                              "shift_order='roll-pad' needs one that takes windows (reference, sdpa, native)")
        _, h, w, _ = x.shape
        x = pad_to_windows(cyclic_shift(x, shift), window)  # (B, Hp, Wp, C)
        hp, wp = x.shape[1:3]
        windows = window_partition(x, window)  # (B*nW, N, C)
        out = self._attend_windows(self.project_qkv(windows), table, spec, map_size=(hp, wp))
        out = window_reverse(self.proj(out), window, (hp, wp))[:, :h, :w]  # (B, H, W, C)
        return cyclic_shift(out, shift, reverse=True)

    def _dynamic_windows(self, x, table, spec: WindowSpec, window: Pair, shift: Pair) -> torch.Tensor:
        """The forward for a ``SymInt`` height or width (``torch.export`` with dynamic sizes): the same
        maths, with the padding, shift, partition and their inverse as two gathers
        (:func:`~swinlab.functional.windows.padded_window_order`) instead of pads and slices."""
        b, h, w, c = x.shape
        hp, wp = round_up(h, window[0]), round_up(w, window[1])
        gather, scatter = padded_window_order((h, w), window, shift, x.device)
        tokens = torch.cat([x.reshape(b, h * w, c), x.new_zeros(b, 1, c)], dim=1)  # (B, H*W+1, C)
        windows = tokens.index_select(1, gather).view(-1, window[0] * window[1], c)  # (B*nW, N, C)
        out = self._attend_windows(self.project_qkv(windows), table, spec, map_size=(hp, wp))  # (B*nW, N, C)
        out = self.proj(out).reshape(b, hp * wp, c).index_select(1, scatter)  # (B, H*W, C)
        return out.view(b, h, w, c)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.num_heads}, window={self.window_size}, "
                f"shift={self.shift_size}, {'cosine, ' if self.cosine else ''}backend={self.backend!r}")


class Attention(nn.Module):
    """Multi-head self-attention of every token to every token of a ``(B, N, C)`` sequence.

    Parameter names (``qkv``, ``proj``) are timm's, so its ViT weights load by name.

    Args:
        dim: channels C.
        num_heads: heads h (C must divide by h); each head has ``d = C/h`` channels.
        qkv_bias: learn biases of the q, k, v projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` normalized tokens → ``(B, N, C)`` attention output."""
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, h·d)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}"


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``(B, N, C_q)`` to a separate context ``(B, K, C_kv)``,
    ``Softmax(QKᵀ/√d)V`` by :func:`torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(self, *, dim: int, context_dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, d = self.num_heads, c // self.num_heads
        q = self.q(x).view(b, n, h, d).transpose(1, 2)  # (B, h, N, d)
        k, v = self.kv(context).view(b, -1, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # 2 × (B, h, K, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d): Softmax(QKᵀ/√d)V
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj(out)
