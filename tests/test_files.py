"""Atomic writes (swinlab.files) and the exception hierarchy (swinlab.errors)."""

import json
import stat

import pytest

from swinlab import errors
from swinlab.files import atomic_open, atomic_path, write_json


def test_write_json_round_trip_and_readable_mode(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert path.read_text().endswith("\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ckpt.bin"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="killed"), atomic_open(path, "wb") as f:
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_path_replaces_only_at_the_end(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with atomic_path(path) as tmp:
        tmp.write_text("new")
        assert path.read_text() == "old"  # not visible before the block ends
    assert path.read_text() == "new"


def test_atomic_open_refuses_appending(tmp_path):
    with pytest.raises(ValueError, match="mode must be"), atomic_open(tmp_path / "x", "a"):
        pass


def test_errors_are_also_the_builtin_exceptions_callers_caught():
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.DataNotFoundError, FileNotFoundError)
    assert issubclass(errors.CheckpointNotFoundError, errors.CheckpointError)
    assert issubclass(errors.UnknownFieldError, errors.ConfigError)
    assert issubclass(errors.UnknownFieldError, TypeError)  # as an unknown keyword argument is
    for cls in (errors.ConfigError, errors.DataError, errors.CheckpointError):
        assert issubclass(cls, errors.SwinlabError)
