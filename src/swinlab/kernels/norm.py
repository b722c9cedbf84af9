"""LayerNorm on the CPU by the native library: the residual add and the norm as one pass in inference,
and a forward/backward pair for training.

A pre-norm transformer block is ``x = x + F(LN₁(x))``, then ``x = x + MLP(LN₂(x))``: between the two
branches the residual sum is written and read back by the LayerNorm. :func:`add_layer_norm` returns both
``s = x + y`` and ``LN(s)``; :func:`layer_norm` is ``LN(x)``. Both take the ``nn.LayerNorm`` module (its
parameters and ``eps``), so models keep their modules and state-dict names.

Where the native library (:mod:`swinlab.kernels.native`) built and the CPU has AVX-512:

* **inference, bfloat16 weights** (bf16-true): one pass over ``x`` and ``y``, a row held in registers,
  its mean and (biased) variance in float32 from the rounded sum; ``s`` is bitwise torch's ``x + y``,
  ``LN(s)`` equal to torch's to float32 rounding (the same bf16 value but for rare last-bit ties). On a
  2-core Xeon with AMX, Swin-T's stage-1 rows (25,088 × 96 bf16): 0.99 ms by torch, 0.44 ms here; add
  and norm 1.40 against 0.71 ms; the bf16-true Swin-T forward at batch 8, 101.2 → 95.1 ms. In float32
  inference the kernel measured no faster in the whole model (306.4 against 309.8 ms): torch's there.
* **training, a bfloat16 input with float32 parameters** (bf16-mixed: CPU autocast leaves LayerNorm in
  its input's dtype, torch's mixed-type kernel): one autograd node, the forward keeping each row's float32
  mean and 1/std, the backward giving dx in the input's dtype and float32 dγ, dβ. Both sum in float32,
  so dγ and dβ of a bf16 input are near float64's where torch's CPU backward is not (on 25,088 random
  rows of 96, torch 2.14's dγ was off by 13% of its largest value, this kernel's by 2e-6). bf16-mixed
  steps: swin_micro_28 at batch 128 242.2 → 226.1 ms, Swin-T at batch 8 485.7 → 465.4 ms
  (``benchmarks/results/README.md``). In float32 training the kernels measured slower in the whole step
  (swin_micro_28: 455.1 against 442.1 ms): torch's there (the library's float32 path is checked at load).

torch's own ``x + y`` and the module run everywhere else: ``torch.compile`` (inductor fuses these
itself), an export or trace, tensor subclasses and dispatch modes, other devices and dtypes, float32
inference and training, bf16 training parameters, a LayerNorm without both affine parameters, more than
``MAX_CHANNELS`` channels, and a norm that is not a plain ``nn.LayerNorm`` without hooks (a replaced or
hooked module is always called as a module, as :class:`~swinlab.layers.Mlp` treats its ``fc1``; an
``nn.Identity`` passed as the norm is just called).
"""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .linear import exporting

MAX_CHANNELS = 4096  # the kernel's row limit (LN_MAXC)


def _route(x: torch.Tensor, y: torch.Tensor | None, norm: nn.Module) -> str:
    """Where this call runs (the rule of the module doc): ``"inference"`` (the one-pass kernel),
    ``"train"`` (the training kernels, one autograd node) or ``"torch"``."""
    if type(norm) is not nn.LayerNorm or norm._forward_hooks or norm._forward_pre_hooks:
        return "torch"  # a replaced or hooked norm is always called as a module
    w, b = norm.weight, norm.bias
    if (w is None or b is None or x.device.type != "cpu" or len(norm.normalized_shape) != 1
            or not 1 <= x.shape[-1] <= MAX_CHANNELS or type(x) is not torch.Tensor or b.dtype != w.dtype
            or x.dtype not in (torch.float32, torch.bfloat16)):
        return "torch"
    if y is not None and (y.dtype != x.dtype or y.shape != x.shape or y.device != x.device
                          or type(y) is not torch.Tensor):
        return "torch"
    if torch.compiler.is_compiling() or exporting() or native._dispatch_mode_active():
        return "torch"
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b.requires_grad
                                    or (y is not None and y.requires_grad)):
        train = x.dtype == torch.bfloat16 and w.dtype == torch.float32 and y is None  # bf16-mixed's LayerNorm
        return "train" if train and native.train_eligible() else "torch"
    return "inference" if x.dtype == w.dtype == torch.bfloat16 and native.auto_eligible() else "torch"


class _LayerNorm(torch.autograd.Function):
    """The training kernels as one autograd node: ``x`` (float32 or bfloat16), float32 ``weight``, ``bias``
    → ``LN(x)`` in ``x``'s dtype, keeping the rows' mean and 1/std for the backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        y, mean, rstd = native.layer_norm_forward(x, weight.detach(), bias.detach(), eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = native.layer_norm_backward(x, weight.detach(), mean, rstd, dy.to(x.dtype).contiguous())
        needs = ctx.needs_input_grad
        return dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None, None


def layer_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """``norm(x)``: a native kernel on the CPU where one runs (module doc), else the module (any module)."""
    route = _route(x, None, norm)
    if route == "inference":
        return native.add_layer_norm(x.contiguous(), None, norm.weight, norm.bias, norm.eps)[1]
    if route == "train":
        return _LayerNorm.apply(x.contiguous(), norm.weight, norm.bias, norm.eps)
    return norm(x)


def add_layer_norm(x: torch.Tensor, y: torch.Tensor, norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, norm(s))`` with ``s = x + y``: one pass in CPU inference where the kernel runs; else torch's
    add and :func:`layer_norm` of it (same shapes: ``y`` is not broadcast)."""
    if _route(x, y, norm) != "inference":
        s = x + y
        return s, layer_norm(s, norm)
    return native.add_layer_norm(x.contiguous(), y.contiguous(), norm.weight, norm.bias, norm.eps)
