"""Numerical precision as one choice, named as Lightning names it, for every place a model runs.

* ``"32-true"``: float32 weights and maths (the exact path; the default for evaluation and prediction).
* ``"bf16-mixed"``: float32 weights, the products under :func:`torch.autocast` in bfloat16 (the
  standard for training: master weights and the optimizer stay float32).
* ``"bf16-true"``: the weights themselves in bfloat16 (``model.bfloat16()``), inputs cast to it; the
  fastest inference on hardware with native bf16 (half the bytes of every weight and activation).
* ``"16-mixed"``: float16 autocast, CUDA only (with a gradient scaler in training).
* ``"auto"``: resolved by :func:`resolve` for the device and the job: ``bf16-mixed`` for training and
  ``bf16-true`` for inference where the device multiplies bf16 natively (a CUDA GPU with bf16, or a CPU
  with AVX-512 BF16 or AMX: :func:`native_bf16`), ``32-true`` everywhere else. Where bf16 is only
  emulated (an AVX2 CPU) it is slower than float32, so ``auto`` never picks it there.

A run records the precision it resolved to (``swinlab train`` in its metrics and checkpoint metadata,
``swinlab bench`` in each result), so ``auto`` never hides what ran.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from .errors import ConfigError

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "auto")

# dtype names of older callers (benchmark --dtype): float32 = 32-true, bfloat16/float16 = autocast
DTYPE_ALIASES = {"float32": "32-true", "bfloat16": "bf16-mixed", "float16": "16-mixed"}
# Lightning's short names, which it maps the same way (YAML reads `precision: 32` as the number 32)
SHORT_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def check(precision: str | int) -> str:
    """``precision`` as one of :data:`PRECISIONS` (a dtype name or Lightning's short ``32``, ``16``,
    ``bf16`` is mapped to its full name), else a :class:`~swinlab.errors.ConfigError` naming the choices."""
    precision = str(precision)
    precision = DTYPE_ALIASES.get(precision, SHORT_ALIASES.get(precision, precision))
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)} "
                          f"(Lightning's names; auto: the fastest this hardware runs accurately)")
    return precision


@functools.cache
def _cpu_native_bf16() -> bool:
    # AVX-512 BF16 (Cooper Lake, Sapphire Rapids and later, AMD Zen 4/5) or AMX tiles: torch's CPU kernels
    # and oneDNN then run bf16 products in hardware. Without them bf16 is converted in software.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware (so bf16 is faster than float32 there)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return _cpu_native_bf16()
    return False


def resolve(precision: str, device: torch.device | str = "cpu", *, training: bool) -> str:
    """The precision ``precision`` means on ``device``: ``auto`` resolved (see the module doc), any
    other name checked and returned. ``16-mixed`` off CUDA is an error (CPU float16 is emulated)."""
    precision = check(precision)
    dev = torch.device(device)
    if precision == "auto":
        if not native_bf16(dev):
            return "32-true"
        return "bf16-mixed" if training else "bf16-true"
    if precision == "16-mixed" and dev.type != "cuda":
        raise ConfigError(f"precision 16-mixed needs a CUDA GPU (float16 is emulated on {dev.type}); "
                          f"use bf16-mixed or 32-true")
    return precision


def device_of(accelerator: str = "auto") -> torch.device:
    """The device a Lightning ``accelerator`` (``auto``, ``cpu``, ``gpu``, ``cuda``) runs on."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (``None``: no autocast)."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype of the weights under a resolved precision."""
    return torch.bfloat16 if precision == "bf16-true" else torch.float32


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """The context a forward pass runs in under a resolved ``precision`` (autocast, or nothing)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def cast_model(model: nn.Module, precision: str) -> nn.Module:
    """``model`` with its floating-point weights in :func:`weight_dtype` (in place, as ``.to``)."""
    return model.to(weight_dtype(precision))


def cast_input(x: torch.Tensor, precision: str) -> torch.Tensor:
    """Images for a model under ``precision``: bf16 for ``bf16-true`` (the weights' dtype), else as given."""
    return x.to(torch.bfloat16) if precision == "bf16-true" and x.is_floating_point() else x


__all__ = [
    "PRECISIONS",
    "autocast",
    "autocast_dtype",
    "cast_input",
    "cast_model",
    "check",
    "device_of",
    "native_bf16",
    "resolve",
    "weight_dtype",
]
