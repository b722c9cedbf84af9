"""Analysis of models: the profiler (params, MACs, attention sizes, activation memory) and the
throughput benchmark (seconds per step, images/s, peak memory, cost per pixel)."""

from .benchmark import benchmark, environment, scaling
from .profile import profile

__all__ = ["benchmark", "environment", "profile", "scaling"]
