"""Model families and the registry of their presets."""

from .registry import build_from_config, create_model, get_config, list_models
from .swin import SwinConfig, SwinTransformer

__all__ = ["SwinConfig", "SwinTransformer", "build_from_config", "create_model", "get_config", "list_models"]
