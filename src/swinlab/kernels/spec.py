"""What a window-attention call computes, apart from its tensors: one value every backend takes."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..functional.pair import Pair, static_zero


class WindowSpec(NamedTuple):
    """The attention of one (S)W-MSA call on a padded map (a NamedTuple: hashable, and free to build
    inside a ``torch.compile``d forward).

    Attributes:
        num_heads: heads h; the channels C of ``qkv``'s each third divide by it.
        window: ``(Mh, Mw)`` effective window (the map's sides are multiples of it).
        shift: ``(Sh, Sw)`` cyclic shift; ``(0, 0)`` for W-MSA.
        table_window: the window ``(Mh', Mw')`` the bias table was built for (≥ ``window``).
        scale: the factor on ``QKᵀ``, normally ``d**-0.5``.
        mask_shifted: mask token pairs from different regions in shifted windows (the paper);
            ``False`` is the "shifted windows without masking" ablation.
        use_qk: include the content term ``QKᵀ/√d``; ``False`` is "rel. pos. w/o app." (logits = B).
    """

    num_heads: int
    window: Pair
    shift: Pair
    table_window: Pair
    scale: float
    mask_shifted: bool = True
    use_qk: bool = True

    @property
    def masked(self) -> bool:
        """Whether the region mask applies: a shifted window with masking on."""
        return self.mask_shifted and not static_zero(*self.shift)  # a traced shift may be a SymInt


def needs_grad(qkv: torch.Tensor, table: torch.Tensor | None) -> bool:
    """Whether a window-attention call on ``qkv`` and ``table`` will have a gradient taken through it."""
    return torch.is_grad_enabled() and (qkv.requires_grad or (table is not None and table.requires_grad))
