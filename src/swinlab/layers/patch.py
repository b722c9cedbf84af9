"""Patch partition + linear embedding, and patch merging (Liu et al., 2021, Sec. 3.1).

Both work channels-last: :class:`PatchEmbed` turns ``(B, C_in, H, W)`` images into
``(B, H/P, W/P, C)`` token maps, :class:`PatchMerging` turns ``(B, H, W, C)`` into
``(B, ⌈H/2⌉, ⌈W/2⌉, 2C)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..functional.pair import round_up, static_zero
from ..kernels import norm as norm_kernels
from .linear import Linear

PATCH_REMAINDERS = ("pad", "drop")  # the last H mod P rows / W mod P columns: zero-padded | ignored
STEMS = ("patch", "conv")  # the paper's P×P patch projection | a stack of 3×3 stride-2 convolutions


class PatchEmbed(nn.Module):
    """Split the image into non-overlapping P×P patches and project each to ``embed_dim``.

    A P×P convolution with stride P is the paper's "patch partition + linear embedding". An image
    whose sides are not multiples of P is zero-padded at the bottom/right so that no pixel is
    dropped (a plain strided convolution would silently ignore the last ``H mod P`` rows);
    ``remainder="drop"`` ignores them instead, as timm's and torchvision's Swin do.

    ``stem="conv"`` replaces the single P×P projection by log2(P) 3×3 stride-2 convolutions, each with
    BatchNorm and ReLU and widths doubling up to ``embed_dim``, then a 1×1 projection: the convolutional
    stem of Xiao et al. (2021, "Early convolutions help transformers see better"), which makes a
    transformer learn faster from few images. Its token grid is the patch stem's with ``remainder="pad"``
    (⌈H/P⌉ × ⌈W/P⌉); P must be a power of two.
    """

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int, norm: bool = True,
                 remainder: str = "pad", stem: str = "patch"):
        super().__init__()
        if remainder not in PATCH_REMAINDERS:
            raise ValueError(f"remainder must be one of {PATCH_REMAINDERS}, got {remainder!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.remainder = remainder
        self.stem = None
        if stem == "conv":
            if patch_size < 2 or patch_size & (patch_size - 1):
                raise ValueError(f"the convolutional stem halves the image log2(P) times: patch_size must be "
                                 f"a power of two ≥ 2, got {patch_size}; use stem='patch'")
            n = patch_size.bit_length() - 1
            widths = [max(embed_dim >> (n - 1 - i), 1) for i in range(n)]
            layers, ch = [], in_chans
            for w in widths:
                layers += [nn.Conv2d(ch, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
                ch = w
            self.stem = nn.Sequential(*layers)
            self.proj = nn.Conv2d(ch, embed_dim, kernel_size=1)
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}; "
                f"convert the input to {self.in_chans} channel(s) or build the model with "
                f"in_chans={x.shape[1] if x.ndim == 4 else '...'}"
            )
        if self.stem is not None:  # 3×3 stride-2 convolutions pad by 1: ⌈H/P⌉ × ⌈W/P⌉ outputs, no remainder
            x = self.stem(x)
        elif self.remainder == "pad":
            p = self.patch_size
            pad_h, pad_w = round_up(x.shape[2], p) - x.shape[2], round_up(x.shape[3], p) - x.shape[3]
            if not static_zero(pad_h, pad_w):  # SymInt pads of a dynamic export: always pad (maybe by 0)
                x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, H/P, W/P, C)
        return norm_kernels.layer_norm(x, self.norm)  # an nn.Identity without patch_norm


class PatchMerging(nn.Module):
    """Concatenate each 2×2 group of neighbours (4C), normalize, and project linearly to 2C.

    The concatenation order is ``[(0,0), (1,0), (0,1), (1,1)]`` (row, column offsets), as in the
    official code, timm and torchvision, so their weights load unchanged. Odd sides are zero-padded.
    ``norm_after``: Swin V2's merging, which projects first and normalizes the 2C outputs.
    """

    def __init__(self, *, dim: int, out_dim: int | None = None, norm_after: bool = False):
        super().__init__()
        self.dim = dim
        self.norm_after = norm_after
        out_dim = out_dim or 2 * dim
        self.norm = nn.LayerNorm(out_dim if norm_after else 4 * dim)
        self.reduction = Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        pad_h, pad_w = round_up(h, 2) - h, round_up(w, 2) - w
        if not static_zero(pad_h, pad_w):
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            h, w = round_up(h, 2), round_up(w, 2)
        x = x.view(b, h // 2, 2, w // 2, 2, c)  # (B, H/2, dh, W/2, dw, C)
        x = x.permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)  # (B, H/2, W/2, [dw, dh, C])
        if self.norm_after:
            return self.norm(self.reduction(x))
        return self.reduction(norm_kernels.layer_norm(x, self.norm))
