"""Atomic file writes: a file is either its old self or completely the new one, never half written.

A process killed mid-write (a pre-empted job, a full disk, Ctrl-C) would otherwise leave a truncated
checkpoint or ``result.json`` where a good one was, and a resumable run would then trust it. Every
write goes to a temporary file in the target's own folder (so the final rename never crosses a
filesystem), is flushed to disk, then renamed over the target with :func:`os.replace`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; write it whole inside the ``with`` block.

    On a clean exit the temporary file is fsynced, given permissions ``mode`` and renamed over
    ``path`` (parents are created); on an exception it is removed and ``path`` is left untouched.
    For writers that take a file name (``safetensors.torch.save_file``); :func:`atomic_open` is the
    same for writers that take a file object.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp's 0600 would surprise readers of a results folder
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """``open(path, mode)`` whose writes replace ``path`` only when the ``with`` block ends cleanly.

    ``mode`` is ``"w"`` or ``"wb"``; ``kwargs`` go to :func:`open` (``encoding=`` ...).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole new file: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (with a final newline) to ``path``, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return Path(path)
