"""What several commands share: argument types, model building for a command, number formatting."""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from ..errors import ConfigError
from ..files import write_json
from ..models.registry import create_model, get_config

LIST_HINT = "Run `swinlab list` to see every registered model."


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def shard(text: str) -> tuple[int, int]:
    """argparse type: ``I/N`` → ``(I, N)`` with ``0 ≤ I < N`` (this process's slice of ``N``)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: needs N ≥ 1 and 0 ≤ I < N (the shards are 0/N … N-1/N)")
    return index, count


def img_size(values: list[int] | None) -> tuple[int, int] | None:
    """``--img-size H [W]`` → ``(H, W)`` (``None`` when not given).

    Raises:
        ConfigError: for more than two numbers.
    """
    if values is None:
        return None
    if len(values) > 2:
        raise ConfigError(f"--img-size takes H or H W, got {len(values)} numbers: {values}")
    return (values[0], values[-1])


def model_config(name: str, **overrides):
    """The registered config of ``name`` with ``overrides``; an unknown name says how to list them all."""
    try:
        return get_config(name, **overrides)
    except ConfigError as e:
        raise ConfigError(f"{e}. {LIST_HINT}") from e


def check_device(device: str, *, choices: str = "meta, cpu or cuda") -> torch.device:
    """``--device`` as a :class:`torch.device` that exists here.

    Raises:
        ConfigError: for a string torch cannot parse, or ``cuda`` without CUDA.
    """
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device; use {choices}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available here; use --device cpu")
    return dev


def build_model(name: str, *, device: str = "meta", **overrides) -> nn.Module:
    """The registered model ``name`` on ``device`` (``meta``: shapes only, built instantly)."""
    model_config(name, **overrides)  # the config's own error before any device work
    with check_device(device):
        return create_model(name, **overrides)


def millions(n: int) -> str:
    """``28290000`` → ``"28.29M"``."""
    return f"{n / 1e6:.2f}M"


def write_json_arg(path: str | os.PathLike, data: dict) -> None:
    """Write ``--json PATH`` atomically.

    Raises:
        ConfigError: naming the path when it cannot be written.
    """
    try:
        write_json(path, data)
    except OSError as e:
        raise ConfigError(f"cannot write --json {str(path)!r}: {e.strerror}; choose a writable path") from e
