"""Dense projections (``nn.Linear``'s maths) through the faster of the two CPU GEMMs torch ships.

Every projection of a transformer (q, k, v, output, the two MLP layers, patch merging, the head) is
``y = x Wᵀ + b``; in Swin-T they are 97% of the multiply-accumulates. On the CPU, torch's own
float32 matmul calls MKL's ``sgemm``; every x86 build of torch also carries oneDNN, reached through
``torch.ops.mkldnn._linear_pointwise`` (the op ``torch.compile``'s CPU backend uses for frozen
weights). On the development machine (AMD EPYC, Zen 5, AVX-512) MKL runs its AVX2 code on this
non-Intel processor, ≈ 48 GMAC/s per core on Swin-T's shapes, while oneDNN uses AVX-512 at
≈ 110 GMAC/s (``benchmarks/results/README.md``): the same IEEE float32 arithmetic, results equal
to rounding (about 1e-6 relative; no reduced-precision mode is involved).

oneDNN also applies an activation or a residual add to the GEMM's output tile while it is still in
cache ("post-ops"): ``linear(x, w, b, activation="gelu")`` is the MLP's first layer and its exact
(erf) GELU in one pass, ``linear(x, w, b, residual=r)`` is ``r + x Wᵀ + b``; in inference this
removes a full read and write of the MLP's 4C-wide hidden tensor (GELU: 7% of Swin-T's CPU time).

Backends, chosen with :func:`use_backend` (a context manager) or :func:`set_backend`:

* ``"torch"``: :func:`torch.nn.functional.linear` then the activation / add, on any device;
* ``"onednn"``: oneDNN, CPU float32 only, with its own backward (:class:`_OneDNNLinear`: both
  gradients are oneDNN GEMMs too), so training gains as well;
* ``"auto"`` (default): ``"onednn"`` for float32 CPU tensors on x86-64 where torch was built with
  oneDNN and outside ``torch.compile`` (inductor cannot lower the op with weights that are graph
  inputs; it fuses the torch form itself), ``"torch"`` everywhere else (CUDA: cuBLAS(Lt) already
  runs near the tensor-core peak; bfloat16 on the CPU: torch's matmul already calls oneDNN).
"""

from __future__ import annotations

import contextlib
import functools
import platform

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "torch", "onednn")
ACTIVATIONS = (None, "gelu")

_backend = "auto"


def set_backend(name: str) -> None:
    """Use ``name`` (one of :data:`BACKENDS`) for every swinlab linear layer from now on."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown linear backend {name!r}; choose one of {list(BACKENDS)}")
    if name == "onednn" and not onednn_available():
        raise RuntimeError("linear backend 'onednn' needs a torch built with oneDNN (mkldnn) on x86-64; "
                           "use 'auto' or 'torch'")
    _backend = name


def get_backend() -> str:
    """The backend set by :func:`set_backend` / :func:`use_backend` (``"auto"`` unless changed)."""
    return _backend


@contextlib.contextmanager
def use_backend(name: str):
    """``with use_backend("torch"): model(x)`` runs the linear layers on that backend, then restores."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@functools.cache
def onednn_available() -> bool:
    """Whether ``torch.ops.mkldnn._linear_pointwise`` exists here (an x86-64 torch built with oneDNN).

    Decided without running anything, so that the first call inside a profiler or a FLOP counter
    adds no operation of its own."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        return hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def _onednn_takes(x: torch.Tensor) -> bool:
    """float32 CPU maths that autocast does not lower (under autocast, F.linear runs in bfloat16)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def select_backend(x: torch.Tensor) -> str:
    """The backend a call on ``x`` runs: the set one, or for ``"auto"`` the rule of the module doc."""
    if _backend == "onednn" and not _onednn_takes(x):
        raise RuntimeError(
            f"linear backend 'onednn' takes float32 CPU tensors outside autocast and torch.compile, got "
            f"{x.dtype} on {x.device}; use swinlab.kernels.linear.set_backend('auto') (or 'torch')")
    if _backend != "auto":
        return _backend
    return "onednn" if _onednn_takes(x) and onednn_available() else "torch"


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, attr: str = "none",
            algorithm: str = "") -> torch.Tensor:
    """``x Wᵀ + b`` (then the post-op ``attr``) by oneDNN; ``x`` of any rank, either operand may be
    transposed (column-major: checked against float64 over 336 shapes, ``tests/test_linear.py``)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


class _OneDNNLinear(torch.autograd.Function):
    """``x Wᵀ + b`` by oneDNN, forward and backward: ``dx = dy W`` and ``dW = dyᵀ x`` are oneDNN GEMMs
    too (``dyᵀ`` and ``xᵀ`` handed over as transposed views, no copies), ``db = Σ dy``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])  # (M, N)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _onednn(dy2, weight.t().contiguous(), None).view(x.shape)  # (M, K): dy W
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])  # (M, K)
            # oneDNN copies its first operand when it is a transposed view (the second it reorders
            # anyway): transpose the narrower of dy and x, i.e. compute dWᵀ = xᵀ dy when K < N.
            if x2.shape[1] < dy2.shape[1]:
                dw = _onednn(x2.t(), dy2.t(), None).t().contiguous()  # (K, N) → (N, K)
            else:
                dw = _onednn(dy2.t(), x2.t(), None)  # (N, K): dyᵀ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy2.sum(0)
        return dx, dw, db


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           activation: str | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``act(x Wᵀ + b)`` or ``residual + x Wᵀ + b`` on the backend of :func:`select_backend`.

    Args:
        x: ``(..., K)`` inputs.
        weight: ``(N, K)``, as ``nn.Linear.weight``.
        bias: ``(N,)`` or ``None``.
        activation: ``None`` or ``"gelu"`` (exact, erf form: ``nn.GELU()``'s default).
        residual: ``(..., N)`` added to the output (not with ``activation``).

    Returns:
        ``(..., N)``. With the oneDNN backend in inference (no gradient needed) the activation or the
        add is fused into the GEMM; in training the GEMM runs on oneDNN with autograd and the
        activation / add is a separate torch op, so the backward is torch's own.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation is not None and residual is not None:
        raise ValueError("linear() takes an activation or a residual, not both")
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not fit: the last "
                         f"axis of x must equal the weight's second (in_features)")
    if select_backend(x) == "onednn":
        if not _needs_grad(x, weight, bias, residual):
            if activation == "gelu":
                return _onednn(x, weight, bias, "gelu", "none")
            if residual is not None and residual.is_contiguous() and residual.dtype == x.dtype:
                out_shape = (*x.shape[:-1], weight.shape[0])
                if tuple(residual.shape) == out_shape:
                    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
            y = _onednn(x, weight, bias)
        else:
            y = _OneDNNLinear.apply(x, weight, bias)
    else:
        y = F.linear(x, weight, bias)
    if activation == "gelu":
        return F.gelu(y)
    return y if residual is None else residual + y
