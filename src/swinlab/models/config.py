"""What every model family's config shares: a checked ``replace`` (and ``to_pair``, re-exported)."""

from __future__ import annotations

import dataclasses

from ..errors import UnknownFieldError
from ..functional.pair import Pair, to_pair

__all__ = ["ConfigMixin", "Pair", "to_pair"]


class ConfigMixin:
    """Mixed into the frozen config dataclasses of the model families."""

    def replace(self, **changes):
        """A copy with ``changes`` applied; unknown field names are an error naming the fields."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise UnknownFieldError(
                f"{type(self).__name__} has no field(s) {unknown}; fields are {sorted(names)}")
        return dataclasses.replace(self, **changes)
