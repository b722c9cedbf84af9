"""Building blocks shared by every model family: one concept per file."""

from .attention import Attention, CrossAttention, WindowAttention
from .linear import Linear
from .mlp import DropPath, Mlp
from .patch import PatchEmbed, PatchMerging
from .position import AbsolutePositionEmbedding, ContinuousPositionBias, RelativePositionBias

__all__ = [
    "AbsolutePositionEmbedding",
    "Attention",
    "ContinuousPositionBias",
    "CrossAttention",
    "DropPath",
    "Linear",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "RelativePositionBias",
    "WindowAttention",
]
