"""What every model family's config shares: a checked ``replace`` (and ``to_pair``, re-exported)."""

from __future__ import annotations

import dataclasses

from ..errors import UnknownFieldError
from ..functional.pair import Pair, to_pair
from ..kernels.linear import BACKENDS

__all__ = ["GLOBAL_POOLS", "ConfigMixin", "Pair", "to_pair"]

GLOBAL_POOLS = ("token", "avg")  # ViT-like heads: the class token's output | the mean of the tokens


class ConfigMixin:
    """Mixed into the frozen config dataclasses of the model families."""

    def _check_shared(self) -> None:
        """Validate the fields several families share, where this config has them: ``drop_path_rate``,
        ``mlp_ratio``, ``linear_backend``, ``global_pool`` with ``class_token`` (raises ``ValueError``)."""
        if hasattr(self, "drop_path_rate") and not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if hasattr(self, "mlp_ratio") and self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if hasattr(self, "linear_backend") and self.linear_backend not in BACKENDS:
            raise ValueError(f"linear_backend must be one of {BACKENDS}, got {self.linear_backend!r}")
        if hasattr(self, "global_pool"):
            if self.global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {self.global_pool!r}")
            if self.global_pool == "token" and not self.class_token:
                raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' "
                                 "without it")

    def replace(self, **changes):
        """A copy with ``changes`` applied; unknown field names are an error naming the fields."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise UnknownFieldError(
                f"{type(self).__name__} has no field(s) {unknown}; fields are {sorted(names)}")
        return dataclasses.replace(self, **changes)
