"""Interchangeable implementations of window attention behind one signature, and the linear-layer GEMMs.

Every window-attention backend is a function ``fn(qkv, table, spec)`` with the semantics of
:func:`swinlab.kernels.reference.window_attention` (``qkv`` the ``(B, H, W, 3C)`` map, ``table`` the
relative-bias table or ``None``, ``spec`` a :class:`WindowSpec`) and must equal it within dtype
tolerance, forward and gradients. A backend may also offer the same attention on windows already
shifted and partitioned (:func:`get_windows_attention`, the signature of
:func:`swinlab.kernels.reference.attend_windows`); the model then rolls and partitions the C-wide tokens
before the q, k, v projection, a third of the bytes of doing it to ``qkv``. Fused kernels that do the
shift and partition by index (``"triton"``) take the whole map only.

``"auto"`` decides on every call from the tensors' device and whether a gradient is needed (see
:func:`select_backend`), so a model moved between devices never runs a backend that fails there:
``"sdpa"`` on CUDA, ``"native"`` in CPU inference where that kernel built and runs the code it was
measured faster with (else ``"sdpa"``), ``"native"`` in CPU training on AVX-512 CPUs where it built
(else ``"reference"``; each measured the fastest there: ``benchmarks/results/``).

``"native"`` (:mod:`swinlab.kernels.native`) is a fused C kernel for the CPU, compiled on first use: an
inference kernel, and a forward/backward pair where a gradient is needed; it runs ``"sdpa"``
(``"reference"`` in training) where it cannot build or does not take the shape.
:func:`backend_inference_only` names backends that take no gradient (none of the built-in ones).

The fused ``"triton"`` backend is listed when ``triton`` is installed and imported only when it is
first asked for by name (a broken Triton cannot break ``import swinlab``); it takes CUDA tensors (CPU
ones too under ``TRITON_INTERPRET=1``, for tests), see :func:`backend_devices`. ``auto`` does not choose
it until it has been measured faster on a GPU.

The linear layers' backends are in :mod:`swinlab.kernels.linear`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import torch

from ..errors import ConfigError
from . import native
from .linear import exporting
from .reference import attend_windows as reference_attend_windows
from .reference import window_attention as reference_window_attention
from .sdpa import attend_windows as sdpa_attend_windows
from .sdpa import window_attention as sdpa_window_attention
from .spec import WindowSpec, needs_grad

WindowAttentionFn = Callable[..., torch.Tensor]

_BACKENDS: dict[str, WindowAttentionFn] = {
    "reference": reference_window_attention,
    "sdpa": sdpa_window_attention,
}
_WINDOWED: dict[str, WindowAttentionFn] = {  # backend → its attention on partitioned windows
    "reference": reference_attend_windows,
    "sdpa": sdpa_attend_windows,
}
_DEVICES: dict[str, tuple[str, ...] | None] = {}  # backend → device types it takes (absent: any)
_INFERENCE_ONLY: set[str] = set()  # backends that give no gradient
# Backends registered on first use: name → (module, whether it can be imported here).
_LAZY: dict[str, tuple[str, Callable[[], bool]]] = {
    "triton": ("swinlab.kernels.triton", lambda: importlib.util.find_spec("triton") is not None),
}


def register_backend(name: str, fn: WindowAttentionFn, *, devices: tuple[str, ...] | None = None,
                     windows_fn: WindowAttentionFn | None = None, inference_only: bool = False) -> None:
    """Make ``fn`` selectable as ``attention_backend=name``; ``devices``: the device types it takes
    (``None``: any); ``windows_fn``: the same attention on partitioned windows, if it has one;
    ``inference_only``: it raises where a gradient is needed."""
    _BACKENDS[name] = fn
    _DEVICES[name] = tuple(devices) if devices is not None else None
    if inference_only:
        _INFERENCE_ONLY.add(name)
    else:
        _INFERENCE_ONLY.discard(name)
    if windows_fn is not None:
        _WINDOWED[name] = windows_fn
    else:
        _WINDOWED.pop(name, None)


def _load(name: str) -> None:
    """Import and register the lazily registered backend ``name``."""
    module_name, _ = _LAZY[name]
    module = importlib.import_module(module_name)
    register_backend(name, module.window_attention, devices=module.DEVICES)


def available_backends() -> list[str]:
    """Names accepted by ``attention_backend`` (besides ``"auto"``); lazy ones are not imported."""
    lazy = [name for name, (_, importable) in _LAZY.items() if name not in _BACKENDS and importable()]
    return sorted([*_BACKENDS, *lazy])


def get_window_attention(name: str = "auto") -> WindowAttentionFn:
    """The window-attention function called ``name``; ``"auto"`` chooses one per call."""
    if name == "auto":
        return _auto
    if name not in _BACKENDS and name in _LAZY and _LAZY[name][1]():
        _load(name)
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown attention_backend {name!r}; choose one of {['auto', *available_backends()]}"
        ) from None


def get_windows_attention(name: str = "auto") -> WindowAttentionFn | None:
    """Backend ``name``'s attention on partitioned windows (signature of
    :func:`swinlab.kernels.reference.attend_windows`), or ``None`` if it takes whole maps only."""
    get_window_attention(name)  # unknown names fail here
    return _auto_windows if name == "auto" else _WINDOWED.get(name)


def backend_inference_only(name: str) -> bool:
    """Whether backend ``name`` computes forwards only (a call that needs a gradient is an error)."""
    get_window_attention(name)  # unknown names fail here
    return name in _INFERENCE_ONLY


def backend_devices(name: str) -> tuple[str, ...] | None:
    """Device types (``"cpu"``, ``"cuda"``, ...) whose tensors backend ``name`` takes; ``None``: any."""
    get_window_attention(name)  # unknown names fail here; lazy ones are loaded
    return _DEVICES.get(name)


def select_backend(device: torch.device | str, dtype: torch.dtype = torch.float32,
                   requires_grad: bool = False) -> str:
    """The backend ``"auto"`` runs for tensors on ``device`` (of ``dtype``; ``requires_grad``: a
    gradient will be taken through it).

    CPU inference: ``"native"`` (:mod:`swinlab.kernels.native`) where it built and passed its check and
    the CPU has AVX-512 (:func:`swinlab.kernels.native.auto_eligible`), measured faster there on Swin-T's
    four attention shapes at batch 8 (a 2-core Xeon with AMX:
    ``benchmarks/results/cpu_native_attention.json``; a 2-core AMD EPYC Zen 5 without AMX:
    ``cpu_zen5_native_attention.json``). Elsewhere, and while
    ``torch.export``, the ONNX exporter or ``torch.jit.trace`` captures a graph (which should hold
    standard operators only), ``"sdpa"`` (PyTorch's fused CPU attention with the merged bias+mask, 4-D):
    Swin-T ×1.10 faster than ``"reference"`` at batch 8, float32 (one thread; ×1.09 on two). The kernel
    is built (about 2 s) on the first such call. CPU training: ``"native"``'s training kernels where they
    built, passed their check and the CPU has AVX-512 (:func:`swinlab.kernels.native.train_eligible`;
    1.3-2.2× ``"reference"`` per call on a 2-core Xeon, training steps ×1.17 (demo), ×1.06 (Swin-T):
    ``benchmarks/results/cpu_native_attention_training.json``), else ``"reference"`` (SDPA's CPU backward
    with a learned bias is no faster: the whole training step was ×1.04 slower with it,
    ``benchmarks/results/cpu_swin_t_b8_224_float32.json``, 2-core AMD EPYC). CUDA and other
    devices: ``"sdpa"`` (memory-efficient attention with the merged bias); not yet measured against
    ``"triton"`` on a GPU.
    """
    cpu = torch.device(device).type == "cpu"
    takes = cpu and dtype in (torch.float32, torch.bfloat16) and not exporting()
    if cpu and requires_grad:
        return "native" if takes and native.train_eligible() else "reference"
    if takes and native.auto_eligible():
        return "native"
    return "sdpa"


def _auto(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec) -> torch.Tensor:
    """``"auto"`` on the whole map: the backend of :func:`select_backend` for ``qkv``."""
    return _BACKENDS[select_backend(qkv.device, qkv.dtype, needs_grad(qkv, table))](qkv, table, spec)


def _auto_windows(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec, *,
                  map_size: tuple[int, int]) -> torch.Tensor:
    """``"auto"`` on partitioned windows: the backend of :func:`select_backend` for ``qkv``."""
    name = select_backend(qkv.device, qkv.dtype, needs_grad(qkv, table))
    return _WINDOWED[name](qkv, table, spec, map_size=map_size)


register_backend("native", native.window_attention, devices=native.DEVICES, windows_fn=native.attend_windows)

__all__ = [
    "WindowSpec",
    "available_backends",
    "backend_devices",
    "backend_inference_only",
    "get_window_attention",
    "get_windows_attention",
    "register_backend",
    "select_backend",
]
