"""The linear layer every swinlab model uses: ``nn.Linear`` (same parameters, same state-dict keys,
an ``isinstance`` of it) whose product runs on :mod:`swinlab.kernels.linear` (oneDNN on the CPU)."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels.linear import linear


class Linear(nn.Linear):
    """``y = x Wᵀ + b``, then ``activation`` (``"gelu"``) or ``+ residual`` when given, fused into the
    GEMM where the backend can (see :func:`swinlab.kernels.linear.linear`)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                activation: str | None = None) -> torch.Tensor:
        return linear(x, self.weight, self.bias, activation=activation, residual=residual)
