"""LayerNorm, and the residual add before it, as one pass in CPU inference.

A pre-norm transformer block is ``x = x + F(LN₁(x))``, then ``x = x + MLP(LN₂(x))``: between the two
branches the residual sum is written and read back by the LayerNorm. :func:`add_layer_norm` returns both
``s = x + y`` and ``LN(s)`` from one read of ``x`` and ``y``; :func:`layer_norm` is ``LN(x)``.

Where the native library (:mod:`swinlab.kernels.native`) built and the CPU has AVX-512 (its
``auto_eligible``), eager bfloat16 inference calls its kernel: a row held in registers, its mean and (biased)
variance in float32 from the rounded sum, the sum rounded to the dtype as torch's add rounds it (so ``s``
is bitwise ``x + y``; ``LN(s)`` equals torch's to float32 rounding, which in bfloat16 output is the same
value but for rare last-bit ties). torch's CPU LayerNorm is a generic row reduction: on a 2-core Xeon with
AMX, Swin-T's stage-1 rows (25,088 × 96 bfloat16) take 0.98 ms there and 0.38 ms in the kernel, the sum
and the norm together 1.35 ms against 0.65; the whole bf16-true Swin-T forward at batch 8, 99.0 → 93.4 ms
(``benchmarks/results/README.md``). In float32 the kernel measured no faster in the whole model (306.4
against 309.8 ms), so float32 keeps torch's (the library's float32 path is there and checked).

Everything else runs torch's own ``x + y`` and ``F.layer_norm``, exactly as before: a gradient (training),
``torch.compile`` (inductor fuses these itself), an export or trace, tensor subclasses and dispatch modes,
other devices, float32 and other dtypes, mixed dtypes (under CPU autocast LayerNorm runs in float32 from
any input, as torch does), a LayerNorm without both affine parameters, more than ``MAX_CHANNELS``
channels, and a norm that is not a plain ``nn.LayerNorm`` without hooks (a replaced or hooked module is
always called as a module, as :class:`~swinlab.layers.Mlp` treats its ``fc1``).
"""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .linear import exporting

MAX_CHANNELS = 4096  # the kernel's row limit (LN_MAXC)


def _native(x: torch.Tensor, y: torch.Tensor | None, norm: nn.LayerNorm) -> bool:
    """Whether this call runs the native kernel (the rule of the module doc)."""
    if type(norm) is not nn.LayerNorm or norm._forward_hooks or norm._forward_pre_hooks:
        return False  # a replaced or hooked norm is always called as a module
    w, b = norm.weight, norm.bias
    if (w is None or b is None or x.device.type != "cpu" or x.dtype != torch.bfloat16
            or w.dtype != x.dtype or b.dtype != x.dtype or len(norm.normalized_shape) != 1
            or not 1 <= x.shape[-1] <= MAX_CHANNELS or type(x) is not torch.Tensor):
        return False
    if y is not None and (y.dtype != x.dtype or y.shape != x.shape or y.device != x.device
                          or type(y) is not torch.Tensor):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b.requires_grad
                                    or (y is not None and y.requires_grad)):
        return False
    if torch.compiler.is_compiling() or exporting() or native._dispatch_mode_active():
        return False
    return native.auto_eligible()


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(x)``: the native kernel in CPU inference where it runs (module doc), else the module."""
    if not _native(x, None, norm):
        return norm(x)
    return native.add_layer_norm(x.contiguous(), None, norm.weight, norm.bias, norm.eps)[1]


def add_layer_norm(x: torch.Tensor, y: torch.Tensor, norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, norm(s))`` with ``s = x + y``: one pass in CPU inference where the kernel runs, else torch's
    add and the module (same shapes: ``y`` is not broadcast)."""
    if not _native(x, y, norm):
        s = x + y
        return s, norm(s)
    s, out = native.add_layer_norm(x.contiguous(), y.contiguous(), norm.weight, norm.bias, norm.eps)
    return s, out

