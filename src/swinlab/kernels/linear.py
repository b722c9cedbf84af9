"""Dense projections (``nn.Linear``'s maths) through the faster of the two CPU GEMMs torch ships.

Every projection of a transformer (q, k, v, output, the two MLP layers, patch merging, the head) is
``y = x Wᵀ + b``; in Swin-T they are 97% of the multiply-accumulates. On the CPU, torch's own
float32 matmul calls MKL's ``sgemm``; every x86 build of torch also carries oneDNN, reached through
``torch.ops.mkldnn._linear_pointwise`` (the op ``torch.compile``'s CPU backend uses for frozen
weights). On an AMD EPYC with AVX-512 (Zen 5) MKL runs its AVX2 code on this non-Intel processor,
≈ 48 GMAC/s per core on Swin-T's shapes, while oneDNN uses AVX-512 at ≈ 110 GMAC/s
(``benchmarks/results/README.md``): the same IEEE float32 arithmetic, results equal to rounding
(about 1e-6 relative; no reduced-precision mode is involved).

oneDNN also applies an activation to the GEMM's output tile while it is still in cache (a
"post-op"): :func:`linear_gelu` is the MLP's first layer and its exact (erf) GELU in one pass, which
in inference removes a full read and write of the MLP's 4C-wide hidden tensor.

Backends, named per call (a model records its choice in its config as ``linear_backend``; there is
no process-wide switch):

* ``"torch"``: :func:`torch.nn.functional.linear` (then the activation), on any device;
* ``"onednn"``: oneDNN, CPU float32 and bfloat16, as the custom operator ``torch.ops.swinlab.onednn_linear``
  with its own backward (both gradients are oneDNN products too), so ``torch.compile`` keeps it in its
  graph; under bf16 autocast its operands are cast to bfloat16 as autocast casts them for ``F.linear``;
* ``"auto"``:

  - float32 (outside autocast): ``"onednn"`` on CPUs that torch runs at AVX-512
    (``torch.backends.cpu.get_cpu_capability()``), except where a gradient is taken on an Intel CPU
    (MKL runs AVX-512 there, and F.linear measured faster in a training step); ``"torch"`` on AVX2-only
    CPUs (both libraries run AVX2 there, and oneDNN measured slower: ×0.97 in inference, ×0.90 in
    training on a Zen 3 EPYC);
  - bfloat16 (bf16-true weights, or float32 under bf16 autocast): ``"onednn"`` in inference on CPUs
    that multiply bf16 natively (AVX-512 BF16 / AMX): torch's bf16 ``addmm`` calls oneDNN too but writes
    through a temporary it then copies, and the MLP's GELU becomes a post-op; ``"torch"`` where a
    gradient is taken (in a bf16 training step F.linear measured faster: 523 against 612 ms for Swin-T
    at batch 8 on a 2-core Xeon with AMX) and where bf16 is emulated;
  - ``"torch"`` everywhere else: CUDA (cuBLAS(Lt) already runs near the tensor-core peak), other
    dtypes, float16 autocast, and while a graph is captured by ``torch.export``, the ONNX exporter or
    ``torch.jit.trace``, so an exported program holds the standard ``aten.linear`` only (see
    :func:`exporting`).

``torch.ops.mkldnn._linear_pointwise`` is a private operator of torch. It is checked once, when this
module is imported, against ``F.linear`` on a small product; if it is missing, raises, or disagrees,
swinlab warns once and every ``"auto"`` call runs ``F.linear`` (``"onednn"`` named explicitly then
fails with the reason), so a torch upgrade that changes it costs speed, never a wrong or failing
forward.
"""

from __future__ import annotations

import platform
import warnings

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..precision import native_bf16

BACKENDS = ("auto", "torch", "onednn")

_SCHEMA = "(Tensor x, Tensor weight, Tensor? bias, str attr) -> Tensor"


def _onednn_present() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        return hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def _onednn_linear(x, weight, bias, attr):
    """``attr(x Wᵀ + b)`` (``attr``: ``"none"`` or ``"gelu"``, exact erf form); ``x`` of any rank, either
    operand may be a transposed view (checked against float64 over many shapes, ``tests/test_linear.py``)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], "none" if attr == "gelu" else "")


def _linear_setup(ctx, inputs, output):
    x, weight, bias, attr = inputs
    if attr != "none":
        ctx.mark_non_differentiable(output)  # fused activations are for inference only (see linear_gelu)
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


# The oneDNN product as an operator of its own (a torch.library custom op): eager mode calls it like any
# op, and torch.compile keeps it as an opaque call in its graph (inductor cannot lower oneDNN's op with
# weights that are graph inputs) and fuses the LayerNorms, softmaxes and adds around it.
if _onednn_present():
    _op = torch.library.custom_op("swinlab::onednn_linear", _onednn_linear, mutates_args=(),
                                  device_types="cpu", schema=_SCHEMA)
    _op.register_fake(lambda x, weight, bias, attr: x.new_empty((*x.shape[:-1], weight.shape[0])))
    _op.register_autograd(_linear_backward, setup_context=_linear_setup)


def self_check(op=None, dtype: torch.dtype = torch.float32) -> str | None:
    """Run oneDNN's product (``op``, default the registered one) on a small problem in ``dtype`` and
    compare it with ``F.linear`` (and ``F.gelu`` of it) in float32. Returns ``None`` when it agrees,
    else why it cannot be used."""
    if op is None:
        if not _onednn_present():
            return "this torch has no oneDNN linear operator (x86-64 builds with mkldnn have one)"
        op = torch.ops.swinlab.onednn_linear
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g) for s in ((2, 3, 24), (40, 24), (40,)))
    tol = 1e-4 if dtype == torch.float32 else 5e-2  # bf16: 8 bits of mantissa in and out
    try:
        with torch.inference_mode():
            xd, wd, bd = x.to(dtype), w.to(dtype), b.to(dtype)
            y, y_gelu = op(xd, wd, bd, "none"), op(xd, wd, bd, "gelu")
    except Exception as e:  # a changed private op fails in many ways: report it, whatever it is
        return f"oneDNN's linear operator failed in {dtype}: {type(e).__name__}: {e}"
    ref = F.linear(xd.float(), wd.float(), bd.float())
    for got, want, what in ((y, ref, "x Wᵀ + b"), (y_gelu, F.gelu(ref), "gelu(x Wᵀ + b)")):
        if got.shape != want.shape or got.dtype != dtype or not torch.allclose(got.float(), want, rtol=tol,
                                                                              atol=tol):
            return f"oneDNN's linear operator disagrees with F.linear on {what} in {dtype}"
    return None


def _check_once(dtype: torch.dtype = torch.float32) -> bool:
    """Run :func:`self_check` in ``dtype`` and warn if oneDNN is here but unusable in it."""
    if not _onednn_present():
        return False
    problem = self_check(dtype=dtype)
    if problem is not None:
        warnings.warn(f"{problem}; swinlab's 'auto' linear layers use F.linear instead (slower on some "
                      f"CPUs, same results)", RuntimeWarning, stacklevel=2)
    return problem is None


# Checked once, at import (a 2×3×24 product per dtype, a few ms): constants to torch.compile, which must not
# trace a check, and the same answer for every model of the process. bfloat16 is checked only where the
# CPU multiplies it natively, the one place ``auto`` would use it.
_ONEDNN = _check_once()
_ONEDNN_BF16 = _ONEDNN and native_bf16("cpu") and _check_once(torch.bfloat16)


# ``auto`` takes oneDNN only where it was measured faster. float32: on CPUs whose vector unit torch runs at
# AVX-512. On a 2-core AMD EPYC Zen 5 (AVX-512) MKL runs AVX2 there and oneDNN AVX-512: Swin-T float32
# ×1.88 inference, ×1.59 training step. On a 2-core AMD EPYC Zen 3 (AVX2 only) both run AVX2 and
# oneDNN lost: ×0.97 inference, ×0.90 training step (benchmarks/results/README.md). bfloat16: on CPUs
# with native bf16 (AVX-512 BF16 / AMX), where torch's own bf16 ``addmm`` also calls oneDNN but writes
# through a temporary and copies it out (measured on a 2-core Xeon with AMX: 25088×96 → 384 in
# 1.78 ms by F.linear, 1.13 ms by the operator), and the MLP's GELU becomes a post-op of the GEMM.
_AUTO_ONEDNN = _ONEDNN and torch.backends.cpu.get_cpu_capability() == "AVX512"
_AUTO_ONEDNN_BF16 = _ONEDNN_BF16


def _cpu_vendor() -> str:
    """``/proc/cpuinfo``'s ``vendor_id`` (``GenuineIntel``, ``AuthenticAMD``), or ``""``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# float32 training: MKL runs its AVX-512 code on Intel processors, and there torch's own F.linear (MKL's
# sgemm, and its backward) measured faster in a training step than oneDNN's (Swin-T, batch 8, 2-core Xeon
# with AMX: 1296 against 1552 ms), equal in inference (338 against 330 ms, where the GELU post-op still
# saves a pass). On AMD (Zen 5) MKL runs AVX2 and oneDNN won both (×1.75 in training).
_AUTO_ONEDNN_TRAIN = _AUTO_ONEDNN and _cpu_vendor() != "GenuineIntel"


def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the ``"onednn"`` backend can run here in ``dtype`` (float32 or bfloat16): an x86-64
    torch built with oneDNN whose operator passed :func:`self_check` at import (bfloat16: on CPUs
    that multiply it natively only)."""
    return _ONEDNN_BF16 if dtype == torch.bfloat16 else _ONEDNN


def check_backend(name: str) -> None:
    """Raise a :class:`~swinlab.errors.ConfigError` unless ``name`` is a backend that can run here."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown linear backend {name!r}; choose one of {list(BACKENDS)}")
    if name == "onednn" and not onednn_available():
        why = self_check() or "it is not available"
        raise ConfigError(f"linear backend 'onednn' cannot run here: {why}; use 'auto' or 'torch'")


def exporting() -> bool:
    """Whether a graph is being captured for export (``torch.export``, the ONNX exporter, or
    ``torch.jit.trace``): ``"auto"`` then runs ``F.linear``, so the graph holds standard ops only."""
    return bool(torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def onednn_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype oneDNN's product runs in for the input ``x`` (``None``: oneDNN does not take it).

    float32 or bfloat16 CPU tensors; under CPU autocast to bfloat16 the product runs in bfloat16, its
    operands cast as autocast casts them for ``F.linear`` (float16 autocast is left to ``F.linear``)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return x.dtype


def select_backend(backend: str, x: torch.Tensor, grad: bool = False) -> str:
    """The backend (``"torch"`` or ``"onednn"``) a call with ``backend`` runs on ``x`` (``grad``: a
    gradient will be taken through it): the rule of the module doc for ``"auto"``; a named backend
    that cannot take ``x`` is an error."""
    if backend == "torch":
        return "torch"
    dtype = onednn_dtype(x)
    if backend == "onednn":
        if dtype is None or not onednn_available(dtype):
            raise RuntimeError(
                f"linear backend 'onednn' takes float32 CPU tensors (bfloat16 too on CPUs with native "
                f"bf16), outside autocast or under bfloat16 autocast; got {x.dtype} on {x.device}; "
                f"build the model with linear_backend='auto' (or 'torch'), or call "
                f"model.set_linear_backend('auto')")
        return "onednn"
    if backend != "auto":
        check_backend(backend)
    if dtype is None or exporting():
        return "torch"
    if dtype == torch.bfloat16:  # inference only: in a bf16 training step F.linear measured faster
        return "onednn" if _AUTO_ONEDNN_BF16 and not grad else "torch"
    return "onednn" if (_AUTO_ONEDNN_TRAIN if grad else _AUTO_ONEDNN) else "torch"


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _operands(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``x``, ``weight``, ``bias`` in the dtype oneDNN runs the product in (casts only under autocast or
    for mixed dtypes; each cast is differentiable, so float32 master weights get float32 gradients)."""
    dtype = onednn_dtype(x)
    return tuple(t if t is None or t.dtype == dtype else t.to(dtype) for t in (x, weight, bias))


def _check_shapes(x: torch.Tensor, weight: torch.Tensor) -> None:
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not fit: the last "
                         f"axis of x must equal the weight's second (in_features)")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           backend: str = "auto") -> torch.Tensor:
    """``x Wᵀ + b`` on ``backend`` (see :func:`select_backend`), with autograd on every backend.

    Args:
        x: ``(..., K)`` inputs.
        weight: ``(N, K)``, as ``nn.Linear.weight``.
        bias: ``(N,)`` or ``None``.
        backend: ``"auto"``, ``"torch"`` or ``"onednn"``.

    Returns:
        ``(..., N)``.
    """
    _check_shapes(x, weight)
    if select_backend(backend, x, _needs_grad(x, weight, bias)) == "onednn":
        return torch.ops.swinlab.onednn_linear(*_operands(x, weight, bias), "none")
    return F.linear(x, weight, bias)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                backend: str = "auto") -> torch.Tensor:
    """``gelu(x Wᵀ + b)`` (exact, erf form: ``nn.GELU()``'s default), the GELU fused into the GEMM where
    the backend is oneDNN and no gradient is needed; otherwise :func:`linear` then ``F.gelu``, whose
    backward is torch's own."""
    _check_shapes(x, weight)
    grad = _needs_grad(x, weight, bias)
    if select_backend(backend, x, grad) == "onednn":
        operands = _operands(x, weight, bias)
        if not grad:
            return torch.ops.swinlab.onednn_linear(*operands, "gelu")
        return F.gelu(torch.ops.swinlab.onednn_linear(*operands, "none"))
    return F.gelu(F.linear(x, weight, bias))
