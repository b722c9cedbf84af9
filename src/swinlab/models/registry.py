"""One registry of named model presets: ``create_model(name, **overrides)``, ``list_models()``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError, SwinlabError


@dataclass(frozen=True)
class _Entry:
    build: Callable[..., nn.Module]  # build(config) -> model
    config: object  # the preset's frozen config
    doc: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, config, build: Callable[..., nn.Module], doc: str = "") -> None:
    """Register ``config`` as the preset ``name``; ``build(config)`` makes the model."""
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is already registered")
    _REGISTRY[name] = _Entry(build=build, config=config, doc=doc)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern`` (e.g. ``"swin_*"``), sorted."""
    _load_families()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides):
    """The preset's config with ``overrides`` applied (validated by the config itself).

    Raises:
        ConfigError: for an unknown name, or an override the config rejects (its message kept; an
            unknown field name is the config's :class:`~swinlab.errors.UnknownFieldError`, also a
            ``TypeError``).
    """
    _load_families()
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if n.split("_")[0] == name.split("_")[0]] or list(_REGISTRY)
        raise ConfigError(f"unknown model {name!r}; registered models include {sorted(close)}")
    config = _REGISTRY[name].config
    if not overrides:
        return config
    try:
        return config.replace(**overrides)
    except ValueError as e:  # the config's validation of a value: the caller's input, not a bug
        if isinstance(e, SwinlabError):
            raise
        raise ConfigError(f"{name}: {e}") from e


def describe(name: str) -> str:
    """The one-line description registered with the preset ``name`` (empty if none was given)."""
    get_config(name)  # the same error as create_model for an unknown name
    return _REGISTRY[name].doc


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name`` with config fields replaced by ``overrides``.

    Example: ``create_model("swin_t", num_classes=10, img_size=(256, 256))``.
    """
    config = get_config(name, **overrides)
    return _REGISTRY[name].build(config)


def build_from_config(config) -> nn.Module:
    """Build a model from any registered family's config (used when loading checkpoints)."""
    _load_families()
    for entry in _REGISTRY.values():
        if type(entry.config) is type(config):
            return entry.build(config)
    raise ConfigError(f"no registered model family takes a {type(config).__name__}")


def config_classes() -> dict[str, type]:
    """Config classes of the registered families by class name (for checkpoints)."""
    _load_families()
    return {type(e.config).__name__: type(e.config) for e in _REGISTRY.values()}


def _load_families() -> None:
    # Importing a family module registers its presets.
    from . import mixer, mvit, swin, vit  # noqa: F401
