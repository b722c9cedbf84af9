"""Interchangeable implementations of window attention behind one signature.

Every backend is a function with the signature of :func:`swinlab.kernels.reference.window_attention`
and must equal it within dtype tolerance (forward and gradients). ``"auto"`` picks the fastest
backend known to be correct for the device and dtype; today that is the reference everywhere.
The fused ``"triton"`` backend is registered when ``triton`` is installed; it takes CUDA tensors
(CPU ones too under ``TRITON_INTERPRET=1``, for tests), see :func:`backend_devices`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from .reference import window_attention as reference_window_attention
from .sdpa import window_attention as sdpa_window_attention

WindowAttentionFn = Callable[..., "object"]

_BACKENDS: dict[str, WindowAttentionFn] = {
    "reference": reference_window_attention,
    "sdpa": sdpa_window_attention,
}
_DEVICES: dict[str, tuple[str, ...] | None] = {}  # backend → device types it takes (absent: any)


def register_backend(name: str, fn: WindowAttentionFn, *, devices: tuple[str, ...] | None = None) -> None:
    """Make ``fn`` selectable as ``attention_backend=name``; ``devices``: the device types it takes
    (``None``: any)."""
    _BACKENDS[name] = fn
    _DEVICES[name] = tuple(devices) if devices is not None else None


def backend_devices(name: str) -> tuple[str, ...] | None:
    """Device types (``"cpu"``, ``"cuda"``, ...) whose tensors backend ``name`` takes; ``None``: any."""
    get_window_attention(name)  # unknown names fail here
    return _DEVICES.get(name)


if importlib.util.find_spec("triton") is not None:
    from .triton import DEVICES as _TRITON_DEVICES
    from .triton import window_attention as triton_window_attention

    register_backend("triton", triton_window_attention, devices=_TRITON_DEVICES)


def available_backends() -> list[str]:
    """Names accepted by ``attention_backend`` (besides ``"auto"``)."""
    return sorted(_BACKENDS)


def get_window_attention(name: str = "auto") -> WindowAttentionFn:
    """The window-attention function called ``name``; ``"auto"`` chooses one."""
    if name == "auto":
        return _BACKENDS["reference"]
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown attention_backend {name!r}; choose one of {['auto', *available_backends()]}"
        ) from None
