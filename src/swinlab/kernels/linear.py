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
* ``"onednn"``: oneDNN, CPU float32 only, as the custom operators ``torch.ops.swinlab.onednn_linear``
  and ``onednn_linear_add`` with their own backward (both gradients are oneDNN products too), so
  training gains as well, and ``torch.compile`` keeps them in its graph;
* ``"auto"`` (default): ``"onednn"`` for float32 CPU tensors outside autocast on x86-64 where torch
  was built with oneDNN, ``"torch"`` everywhere else (CUDA: cuBLAS(Lt) already runs near the
  tensor-core peak; bfloat16 on the CPU: torch's matmul already calls oneDNN). Measured on AMD
  only; on Intel processors MKL also runs AVX-512, and oneDNN (Intel's own) is expected to be on par
  there (not measured: ``swinlab bench --linear-backend auto torch`` tells on any machine).
"""

from __future__ import annotations

import contextlib
import platform

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "torch", "onednn")
ACTIVATIONS = (None, "gelu")

_backend = "auto"


def check_backend(name: str) -> None:
    """Raise a clear error unless ``name`` is a backend that can run here."""
    if name not in BACKENDS:
        raise ValueError(f"unknown linear backend {name!r}; choose one of {list(BACKENDS)}")
    if name == "onednn" and not onednn_available():
        raise RuntimeError("linear backend 'onednn' needs a torch built with oneDNN (mkldnn) on x86-64; "
                           "use 'auto' or 'torch'")


def set_backend(name: str) -> None:
    """Use ``name`` (one of :data:`BACKENDS`) for every swinlab linear layer from now on."""
    global _backend
    check_backend(name)
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


def _has_onednn() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        return hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_ONEDNN = _has_onednn()  # decided once, at import: a constant to torch.compile, and no op is run for it


def onednn_available() -> bool:
    """Whether ``torch.ops.mkldnn._linear_pointwise`` exists here (an x86-64 torch built with oneDNN)."""
    return _ONEDNN


def _onednn_takes(x: torch.Tensor) -> bool:
    """float32 CPU maths that autocast does not lower (under autocast, F.linear runs in bfloat16)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def select_backend(x: torch.Tensor) -> str:
    """The backend a call on ``x`` runs: the set one, or for ``"auto"`` the rule of the module doc."""
    if _backend == "onednn" and not _onednn_takes(x):
        raise RuntimeError(
            f"linear backend 'onednn' takes float32 CPU tensors outside autocast, got {x.dtype} on "
            f"{x.device}; use swinlab.kernels.linear.set_backend('auto') (or 'torch')")
    if _backend != "auto":
        return _backend
    return "onednn" if _onednn_takes(x) and onednn_available() else "torch"


# The oneDNN products as operators of their own (torch.library custom ops): eager mode calls them like
# any op, and torch.compile keeps them as opaque calls in its graph (inductor cannot lower oneDNN's op
# with weights that are graph inputs) and fuses the LayerNorms, softmaxes and adds around them.
_LINEAR_SCHEMA = "(Tensor x, Tensor weight, Tensor? bias, str attr) -> Tensor"
_LINEAR_ADD_SCHEMA = "(Tensor x, Tensor other, Tensor weight, Tensor? bias) -> Tensor"


def _onednn_linear(x, weight, bias, attr):
    """``attr(x Wᵀ + b)`` (``attr``: ``"none"`` or ``"gelu"``, exact erf form); ``x`` of any rank, either
    operand may be a transposed view (checked against float64 over many shapes, ``tests/test_linear.py``)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], "none" if attr == "gelu" else "")


def _onednn_linear_add(x, other, weight, bias):
    """``other + x Wᵀ + b``, the add done on the GEMM's output tile."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "add")


def _out_like(x, weight):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_setup(ctx, inputs, output):
    x, weight, bias, attr = inputs
    if attr != "none":
        ctx.mark_non_differentiable(output)  # fused activations are for inference only (see linear())
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _linear_backward(ctx, dy):
    """``dx = dy W`` and ``dW = dyᵀ x`` as oneDNN products too, ``db = Σ dy``."""
    x, weight = ctx.saved_tensors
    op = torch.ops.swinlab.onednn_linear
    dy2 = dy.reshape(-1, dy.shape[-1])  # (M, N)
    dx = dw = db = None
    if ctx.needs_input_grad[0]:
        dx = op(dy2, weight.t().contiguous(), None, "none").view(x.shape)  # (M, K): dy W
    if ctx.needs_input_grad[1]:
        x2 = x.reshape(-1, x.shape[-1])  # (M, K)
        # oneDNN copies its first operand when it is a transposed view (the second it reorders anyway):
        # transpose the narrower of dy and x, i.e. compute dWᵀ = xᵀ dy when K < N.
        if x2.shape[1] < dy2.shape[1]:
            dw = op(x2.t(), dy2.t(), None, "none").t().contiguous()  # (K, N) → (N, K)
        else:
            dw = op(dy2.t(), x2.t(), None, "none")  # (N, K): dyᵀ x
    if ctx.has_bias and ctx.needs_input_grad[2]:
        db = dy2.sum(0)
    return dx, dw, db, None


if onednn_available():
    _linear_op = torch.library.custom_op("swinlab::onednn_linear", _onednn_linear, mutates_args=(),
                                         device_types="cpu", schema=_LINEAR_SCHEMA)
    _linear_op.register_fake(lambda x, weight, bias, attr: _out_like(x, weight))
    _linear_op.register_autograd(_linear_backward, setup_context=_linear_setup)
    _add_op = torch.library.custom_op("swinlab::onednn_linear_add", _onednn_linear_add, mutates_args=(),
                                      device_types="cpu", schema=_LINEAR_ADD_SCHEMA)
    _add_op.register_fake(lambda x, other, weight, bias: _out_like(x, weight))


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
        ops = torch.ops.swinlab
        if not _needs_grad(x, weight, bias, residual):
            if activation == "gelu":
                return ops.onednn_linear(x, weight, bias, "gelu")
            fits = residual is not None and tuple(residual.shape) == (*x.shape[:-1], weight.shape[0])
            if fits and residual.is_contiguous() and residual.dtype == x.dtype:
                return ops.onednn_linear_add(x, residual, weight, bias)
        y = ops.onednn_linear(x, weight, bias, "none")
    else:
        y = F.linear(x, weight, bias)
    if activation == "gelu":
        return F.gelu(y)
    return y if residual is None else residual + y
