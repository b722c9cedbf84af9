"""Position information: the relative position bias of Swin (Liu et al., 2021, Eq. 4) and the
absolute position embedding of ViT (Dosovitskiy et al., 2021)."""

from __future__ import annotations

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
