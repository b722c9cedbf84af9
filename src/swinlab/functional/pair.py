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


def static_zero(*values) -> bool:
    """Whether every value is the int 0. A size that ``torch.export`` traces with a dynamic height or
    width is a ``SymInt``: never *statically* zero, so code that skips work for a zero pad or shift
    (``if pad: ...``) takes the general path for it instead of branching on a symbolic value, which
    would pin the exported graph to one side of the branch."""
    return all(isinstance(v, int) and v == 0 for v in values)


def is_static(*values) -> bool:
    """Whether every value is a plain int (not a ``SymInt`` of a dynamic export)."""
    return all(isinstance(v, int) for v in values)


def round_up(n, m: int):
    """``n`` rounded up to a multiple of ``m`` (``n`` an int or a ``SymInt``).

    Written as ``⌈n/m⌉·m`` rather than ``n + (-n) mod m``: equal on ints, but on a dynamic export's
    ``SymInt`` the product keeps every size derived from it (padded maps, window counts, the views
    over them) a simple expression that ``torch.export`` resolves at once, where nested ``Mod``
    terms made its symbolic simplifier run for minutes on one Swin."""
    return (n + m - 1) // m * m
