"""Analysis of models: the profiler (params, MACs, attention sizes, activation memory) and the
throughput benchmark (:mod:`swinlab.analysis.benchmark`: seconds per step, images/s, peak memory,
cost per pixel)."""

from .benchmark import environment, time_model
from .profiler import profile

__all__ = ["environment", "profile", "time_model"]
