"""The linear layer every swinlab model uses: an ``nn.Linear`` (same parameters, same state-dict keys,
the same ``forward(input)``) whose product runs on a :mod:`swinlab.kernels.linear` backend (oneDNN on
x86 CPUs in float32, ``F.linear`` elsewhere)."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels import linear as linear_kernels


class Linear(nn.Linear):
    """``y = x Wᵀ + b``, exactly ``nn.Linear``, with the GEMM on ``backend``.

    Args:
        in_features, out_features, bias, device, dtype: as :class:`torch.nn.Linear`.
        backend: ``"auto"`` (default), ``"torch"`` or ``"onednn"`` (see :mod:`swinlab.kernels.linear`);
            a model sets it on all its layers from its config's ``linear_backend``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str = "auto"):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.backend = backend
        linear_kernels.check_backend(backend)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear_kernels.linear(input, self.weight, self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.backend == "auto" else f", backend={self.backend!r}")
