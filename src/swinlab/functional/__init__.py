"""Pure tensor maths at the bottom of swinlab: window geometry (pad, partition, cyclic shift, region
masks) and relative-position indices. Every other package may import it; it imports nothing of swinlab.
"""

from .pair import Pair, is_static, round_up, static_zero, to_pair
from .windows import (
    cyclic_shift,
    fit_window,
    pad_to_windows,
    region_ids,
    relative_bias,
    relative_position_index,
    reverse_unshift,
    shift_partition,
    shifted_window_mask,
    window_order,
    window_partition,
    window_reverse,
)

__all__ = [
    "Pair",
    "cyclic_shift",
    "fit_window",
    "is_static",
    "pad_to_windows",
    "region_ids",
    "relative_bias",
    "relative_position_index",
    "reverse_unshift",
    "round_up",
    "shift_partition",
    "shifted_window_mask",
    "static_zero",
    "to_pair",
    "window_order",
    "window_partition",
    "window_reverse",
]
