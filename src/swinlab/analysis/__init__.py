"""Analysis of models: the profiler (params, MACs, attention sizes, activation memory)."""

from .profile import profile

__all__ = ["profile"]
