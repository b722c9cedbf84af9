"""The MLP's first layer and its GELU for bf16-mixed training on the CPU: the bias and the activation by
the native library, keeping GELU's derivative for the backward.

In a training step, torch runs ``fc1`` + GELU as ``addmm`` (the bias broadcast into the output, then the
product accumulated onto it), GELU's forward (an erf per element) and, in the backward, ``gelu_backward``
(an erf and an exp per element again) and the bias gradient's column sum. Here ``fc1`` is the same
``F.linear`` without its bias (autocast runs it in bfloat16), then one pass of the library
(``swinlab_bias_gelu_forward``) adds the float32 bias and writes both ``gelu(v)`` and ``gelu'(v)``
(bfloat16) from one exponential; the backward (``swinlab_gelu_backward``) is ``dh = dg · gelu'(v)``
with the bias gradient summed in float32 in the same pass. ``gelu'(v)`` is kept instead of ``fc1``'s
output, so the step holds no more memory than torch's.

Numerics: the same exact (erf) GELU, to float32 rounding (absolute error ≤ 3e-7 before the bf16 result
is rounded); the bias is added to the bf16-rounded product instead of inside the GEMM, and ``dh`` is
``dg`` times a bf16-rounded ``gelu'`` (two roundings where torch's has one: within 2^-8 of it); the bias
gradient is summed in float32 from the bf16 ``dh`` (torch rounds it to bf16 first). Checked at load
against float64 maths (:mod:`swinlab.kernels.native`).

Where it runs: a gradient through ``fc1`` under CPU autocast to bfloat16, float32 parameters,
``linear_backend="auto"``, the library built with AVX-512 (:func:`~swinlab.kernels.native.train_eligible`);
not while ``torch.compile`` or an export captures a graph, under a dispatch mode or for a tensor subclass.
Everywhere else :func:`swinlab.kernels.linear.linear_gelu` runs (inference: oneDNN with the GELU as a
post-op; torch's ops otherwise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import linear as linear_kernels
from . import native


def _route(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, backend: str) -> bool:
    """Whether this call runs the training kernels (the rule of the module doc)."""
    if backend != "auto" or x.device.type != "cpu" or type(x) is not torch.Tensor:
        return False
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad
                                           or (bias is not None and bias.requires_grad)):
        return False
    if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return False
    if weight.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32):
        return False
    if x.dtype not in (torch.float32, torch.bfloat16):
        return False
    if torch.compiler.is_compiling() or linear_kernels.exporting() or native._dispatch_mode_active():
        return False
    return native.train_eligible()


class _BiasGelu(torch.autograd.Function):
    """``(h, bias)`` → ``gelu(h + bias)``: ``h`` bfloat16, ``bias`` float32 or ``None``; keeps ``gelu'``."""

    @staticmethod
    def forward(ctx, h, bias):
        g, d = native.bias_gelu_forward(h, None if bias is None else bias.detach().contiguous())
        ctx.save_for_backward(d)
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dg):
        (d,) = ctx.saved_tensors
        dh, db = native.gelu_backward(dg.to(d.dtype).contiguous(), d, bias_grad=ctx.needs_input_grad[1])
        return dh if ctx.needs_input_grad[0] else None, db


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                backend: str = "auto") -> torch.Tensor:
    """``gelu(x Wᵀ + b)`` (exact GELU): the training kernels where they run (module doc), else
    :func:`swinlab.kernels.linear.linear_gelu`."""
    if not _route(x, weight, bias, backend):
        return linear_kernels.linear_gelu(x, weight, bias, backend=backend)
    linear_kernels._check_shapes(x, weight)
    h = F.linear(x, weight)  # bfloat16: _route asked for CPU bf16 autocast
    return _BiasGelu.apply(h.contiguous(), bias)
