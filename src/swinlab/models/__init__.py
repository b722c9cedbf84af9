"""Model families and the registry of their presets."""

from .mixer import MixerConfig, MlpMixer
from .mvit import MultiScaleViT, MViTConfig
from .registry import build_from_config, create_model, get_config, list_models
from .swin import SwinConfig, SwinTransformer
from .vit import VisionTransformer, ViTConfig

__all__ = [
    "MViTConfig",
    "MixerConfig",
    "MlpMixer",
    "MultiScaleViT",
    "SwinConfig",
    "SwinTransformer",
    "ViTConfig",
    "VisionTransformer",
    "build_from_config",
    "create_model",
    "get_config",
    "list_models",
]
