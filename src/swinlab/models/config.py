"""What every model family's config shares: pair normalization and a checked ``replace``."""

from __future__ import annotations

import dataclasses

from ..layers.windows import Pair


def to_pair(v) -> Pair:
    """``7`` → ``(7, 7)``; ``(7, 8)`` and ``[7, 8]`` → ``(7, 8)``."""
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {v!r}")
    return t  # type: ignore[return-value]


class ConfigMixin:
    """Mixed into the frozen config dataclasses of the model families."""

    def replace(self, **changes):
        """A copy with ``changes`` applied; unknown field names are an error naming the fields."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {unknown}; fields are {sorted(names)}")
        return dataclasses.replace(self, **changes)
