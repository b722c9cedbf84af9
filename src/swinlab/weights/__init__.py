"""Checkpoint I/O (safetensors with the config inside) and converters from peer layouts."""

from .conversion import SOURCES, convert, infer_swin_config, unwrap
from .io import CheckpointError, load, load_state_dict, peer_geometry, read_state_dict, save

__all__ = [
    "SOURCES",
    "CheckpointError",
    "convert",
    "infer_swin_config",
    "load",
    "load_state_dict",
    "peer_geometry",
    "read_state_dict",
    "save",
    "unwrap",
]
