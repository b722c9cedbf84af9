"""swinlab: hierarchical vision transformers (Swin and its baselines), built, converted, profiled."""

from .models.registry import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
