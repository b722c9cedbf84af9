"""The transformer MLP and stochastic depth (DropPath), shared by every model family."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels.gelu import linear_gelu
from .linear import Linear


class Mlp(nn.Module):
    """Two linear layers with a GELU between them: ``C → hidden → C`` on the last axis.

    With the default exact GELU, ``fc1`` and the activation run as one oneDNN GEMM with the GELU
    applied to its output tile (inference on x86 CPUs in float32: see
    :func:`swinlab.kernels.linear.linear_gelu`), which saves a read and a write of the 4C-wide hidden
    tensor. In bf16-mixed training on AVX-512 CPUs the bias and the GELU run in the native library instead,
    keeping GELU's derivative for the backward (:mod:`swinlab.kernels.gelu`). Either fusion is taken only
    while ``fc1`` is this package's :class:`Linear` with no hooks, so a layer wrapped or replaced (LoRA,
    quantization, a forward hook) is always called as a module.
    """

    def __init__(self, *, in_features: int, hidden_features: int, out_features: int | None = None,
                 drop: float = 0.0, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` → ``(..., C_out)``."""
        if self._fuse_gelu():
            h = linear_gelu(x, self.fc1.weight, self.fc1.bias, backend=self.fc1.backend)  # (..., hidden)
        else:
            h = self.act(self.fc1(x))  # (..., hidden)
        return self.drop(self.fc2(self.drop(h)))

    def _fuse_gelu(self) -> bool:
        fc1, act = self.fc1, self.act
        return (type(fc1) is Linear and not (fc1._forward_hooks or fc1._forward_pre_hooks)
                and type(act) is nn.GELU and act.approximate == "none" and not act._forward_hooks)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``p``, rescaling the rest by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates of ``n`` blocks rising linearly from 0 to ``rate``.

    A plain list, built on the CPU, so that it works under ``with torch.device("meta")`` too."""
    return torch.linspace(0, rate, n, device="cpu").tolist()


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016) applied per sample to a residual branch."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
