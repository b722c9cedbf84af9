"""``Pair``: a ``(height, width)`` of ints, and :func:`to_pair` to make one."""

from __future__ import annotations

Pair = tuple[int, int]


def to_pair(v) -> Pair:
    """``7`` → ``(7, 7)``; ``(7, 8)`` and ``[7, 8]`` → ``(7, 8)``."""
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {v!r}")
    return t  # type: ignore[return-value]
