"""Building blocks shared by every model family: one concept per file."""

from .attention import WindowAttention
from .mlp import DropPath, Mlp
from .patch import PatchEmbed, PatchMerging
from .position import AbsolutePositionEmbedding, RelativePositionBias

__all__ = [
    "AbsolutePositionEmbedding",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "RelativePositionBias",
    "WindowAttention",
]
