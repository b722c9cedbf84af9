"""The transformer MLP and stochastic depth (DropPath), shared by every model family."""

from __future__ import annotations

import torch
from torch import nn

from .linear import Linear


class Mlp(nn.Module):
    """Two linear layers with a GELU between them: ``C → hidden → C`` on the last axis.

    With the default exact GELU the first layer and the activation are one call of ``fc1`` (fused
    into the GEMM on the CPU in inference: a forward hook on ``fc1`` then sees the activation), and
    ``forward(x, residual=r)`` returns ``r + mlp(x)`` with the add fused into the second GEMM.
    """

    def __init__(self, *, in_features: int, hidden_features: int, out_features: int | None = None,
                 drop: float = 0.0, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., C)`` → ``(..., C_out)``; plus ``residual`` (same shape as the output) when given."""
        if type(self.act) is nn.GELU and self.act.approximate == "none":
            h = self.fc1(x, activation="gelu")  # (..., hidden)
        else:
            h = self.act(self.fc1(x))
        h = self.drop(h)
        if residual is not None and not (self.training and self.drop.p > 0):
            return self.fc2(h, residual=residual)
        out = self.drop(self.fc2(h))
        return out if residual is None else residual + out


def residual_mlp(mlp: Mlp, h: torch.Tensor, x: torch.Tensor, drop_path: DropPath) -> torch.Tensor:
    """``x + drop_path(mlp(h))``, the residual add fused into the MLP where stochastic depth is off."""
    if drop_path.p == 0.0 or not drop_path.training:
        return mlp(h, residual=x)
    return x + drop_path(mlp(h))


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
