"""Interchangeable implementations of window attention behind one signature.

Every backend is a function with the signature of :func:`swinlab.kernels.reference.window_attention`
and must equal it within dtype tolerance (forward and gradients). ``"auto"`` picks the fastest
backend known to be correct for the device and dtype; today that is the reference everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from .reference import window_attention as reference_window_attention
from .sdpa import window_attention as sdpa_window_attention

WindowAttentionFn = Callable[..., "object"]

_BACKENDS: dict[str, WindowAttentionFn] = {
    "reference": reference_window_attention,
    "sdpa": sdpa_window_attention,
}


def register_backend(name: str, fn: WindowAttentionFn) -> None:
    """Make ``fn`` selectable as ``attention_backend=name``."""
    _BACKENDS[name] = fn


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
