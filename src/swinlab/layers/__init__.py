"""Building blocks shared by every model family: one concept per file."""

from .attention import Attention, WindowAttention
from .mlp import DropPath, Mlp
from .patch import PatchEmbed, PatchMerging
from .position import AbsolutePositionEmbedding, RelativePositionBias

__all__ = [
    "AbsolutePositionEmbedding",
    "Attention",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "RelativePositionBias",
    "WindowAttention",
]
