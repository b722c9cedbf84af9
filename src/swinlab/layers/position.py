"""Position information: the relative position bias of Swin (Liu et al., 2021, Eq. 4), the continuous
position bias of Swin V2 (Liu et al., 2022, Sec. 3.3) and the absolute position embedding of ViT
(Dosovitskiy et al., 2021)."""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..functional.pair import static_zero
from ..functional.windows import Pair, relative_bias


class RelativePositionBias(nn.Module):
    """A learned ``((2Mh-1)(2Mw-1), heads)`` table; the bias ``B`` of a pair of tokens in a window
    is the table row of their offset ``(Δh, Δw)``. Windows smaller than ``(Mh, Mw)`` use the centre.

    The table is handed to the window-attention backend, which gathers ``B`` itself (a fused kernel
    never materializes the ``(heads, N, N)`` bias).
    """

    def __init__(self, *, window_size: Pair, num_heads: int):
        super().__init__()
        self.window_size = tuple(window_size)
        rows = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.table = nn.Parameter(torch.zeros(rows, num_heads))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, window: Pair | None = None) -> torch.Tensor:
        """The bias ``(heads, N, N)`` for ``window`` (default: the table's own window)."""
        return relative_bias(self.table, tuple(window or self.window_size), self.window_size)


class ContinuousPositionBias(nn.Module):
    """Swin V2's log-spaced continuous position bias: a small MLP ``G`` (2 → 512 → heads, ReLU) maps the
    log-spaced offset of two tokens to a bias per head, ``B = 16·sigmoid(G(Δ̂))`` (Liu et al., 2022,
    Eq. 2-4, with the 16·sigmoid bound of the official code)::

        Δ̂ = sign(Δ) · log2(1 + 8·|Δ| / (M' - 1)) / log2(8)

    with ``M'`` the window it was pretrained with (``pretrained_window``), or the window in use when
    that is 0; so a window of another size, larger or shrunk on a small map, gets the bias of its own
    offsets by evaluating ``G`` there instead of interpolating a table.

    :meth:`table_for` evaluates ``G`` on the ``(2Mh-1)(2Mw-1)`` offsets of a window and hands back a
    table of the same layout as :class:`RelativePositionBias`'s, so every window-attention backend
    gathers it the same way. In inference the table is cached per window until a weight changes.
    """

    def __init__(self, *, num_heads: int, pretrained_window: Pair = (0, 0), hidden: int = 512):
        super().__init__()
        self.num_heads = num_heads
        self.pretrained_window = tuple(pretrained_window)
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_heads, bias=False))
        self._tables: dict = {}  # inference cache: window → (weights' versions, table)

    def coords(self, window: Pair, device=None) -> torch.Tensor:
        """The log-spaced offsets ``((2Mh-1)(2Mw-1), 2)`` of a window, rows in the table's order."""
        axes = []
        for m, m0 in zip(window, self.pretrained_window, strict=True):
            d = torch.arange(-(m - 1), m, dtype=torch.float32, device=device)
            axes.append(d / max((m0 if m0 > 0 else m) - 1, 1) * 8)  # offsets scaled to [-8, 8]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)  # (rows, 2)
        return torch.sign(grid) * torch.log2(grid.abs() + 1.0) / math.log2(8)

    def table_for(self, window: Pair) -> torch.Tensor:
        """``((2Mh-1)(2Mw-1), heads)`` biases ``16·sigmoid(G(Δ̂))`` of ``window``'s offsets."""
        params = list(self.mlp.parameters())
        weight = params[0]
        cacheable = (not torch.is_grad_enabled() and not torch.compiler.is_compiling()
                     and not any(p.is_inference() for p in params))
        key = tuple(window)
        if cacheable and (hit := self._tables.get(key)) is not None:
            refs, versions, table = hit  # the very tensors it was computed from, unchanged since
            same = all(r() is p for r, p in zip(refs, params, strict=True))
            if same and versions == [p._version for p in params]:
                return table
        if not cacheable:
            return self._evaluate(key, weight)
        # A cached table is made outside inference_mode even when asked from inside it: an inference tensor
        # keeps no version counter, and the attention backends cache the bias they gather from a table
        # (with its mask, per window) only for tables that have one.
        with torch.inference_mode(False), torch.no_grad():
            table = self._evaluate(key, weight)
        self._tables[key] = ([weakref.ref(p) for p in params], [p._version for p in params], table)
        return table

    def _evaluate(self, window: Pair, weight: torch.Tensor) -> torch.Tensor:
        coords = self.coords(window, weight.device).to(weight.dtype)
        return 16 * torch.sigmoid(self.mlp(coords))  # (rows, heads)

    def _apply(self, fn, recurse=True):  # .to() / .half() / ...: cached tables are of the old tensors
        self._tables.clear()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, pretrained_window={self.pretrained_window}"


class AbsolutePositionEmbedding(nn.Module):
    """A learned embedding added to every token of a channels-last ``(B, H, W, C)`` map.

    Built for a ``grid_size``; a map of another size gets the embedding resized bicubically
    (as timm does for ViT at a new resolution), so any input size is accepted.
    """

    def __init__(self, *, grid_size: Pair, dim: int):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_size[0], grid_size[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.pos_embed
        if not static_zero(pos.shape[1] - x.shape[1], pos.shape[2] - x.shape[2]):
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic",
                                align_corners=False).permute(0, 2, 3, 1)  # (1, H, W, C)
        return x + pos.to(x.dtype)
