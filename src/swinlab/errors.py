"""The exceptions swinlab raises at its boundaries: data, checkpoints and configuration.

Each is a :class:`SwinlabError` (the command-line tool prints those as one line, without a traceback)
and also the built-in exception that code written before these classes existed caught: a
:class:`ConfigError` is a ``ValueError``, a :class:`DataError` and a :class:`CheckpointError` are
``ValueError``s too (a missing file is also a ``FileNotFoundError``: see :class:`DataNotFoundError`
and :class:`CheckpointNotFoundError`). Anything else that escapes the library is a bug, and keeps its
traceback.
"""

from __future__ import annotations


class SwinlabError(Exception):
    """Base class: a problem with what the user gave swinlab, stated with how to fix it."""


class ConfigError(SwinlabError, ValueError):
    """A model, training or command option that is unknown, malformed or out of range."""


class UnknownFieldError(ConfigError, TypeError):
    """A config field name that does not exist (also a ``TypeError``, as for an unknown keyword argument)."""


class DataError(SwinlabError, ValueError):
    """A dataset or image that cannot be read or used: corrupt, empty, of the wrong size or kind."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset path or image file that does not exist."""


class CheckpointError(SwinlabError, ValueError):
    """A checkpoint that cannot be loaded: corrupt, of another model, or with keys or shapes that differ."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that does not exist."""


class ExportError(SwinlabError, RuntimeError):
    """A model that could not be exported, or whose exported graph does not answer like the model."""


__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "ExportError",
    "SwinlabError",
    "UnknownFieldError",
]
