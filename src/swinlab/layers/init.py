"""Weight initialization shared by every model family (ViT/Swin convention)."""

from __future__ import annotations

from torch import nn


def init_weights(m: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights with zero biases; LayerNorm at identity.

    Use as ``model.apply(init_weights)``.
    """
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
