"""The library raises swinlab.errors types at its data, checkpoint and config boundaries, each also
the built-in exception callers caught before (ValueError, FileNotFoundError)."""

from __future__ import annotations

import pytest

from swinlab import errors, weights
from swinlab.data import IdxError, ImageError, ImageFolder, load_image, parse_data, read_idx
from swinlab.data.fashion_mnist import check_dir
from swinlab.models.registry import get_config
from swinlab.weights import convert, read_state_dict


def test_public_error_names_are_the_errors_module_types():
    assert weights.CheckpointError is errors.CheckpointError
    assert issubclass(ImageError, errors.DataError) and issubclass(IdxError, errors.DataError)


@pytest.mark.parametrize(("call", "kind", "builtin"), [
    (lambda p: read_state_dict(p / "none.safetensors"), errors.CheckpointNotFoundError, FileNotFoundError),
    (lambda p: check_dir(p / "none"), errors.DataNotFoundError, FileNotFoundError),
    (lambda p: ImageFolder(p / "none"), errors.DataNotFoundError, FileNotFoundError),
    (lambda p: load_image(p / "none.png"), ImageError, ValueError),
    (lambda p: read_idx((p / "x.idx").write_bytes(b"\0\0") and p / "x.idx"), IdxError, ValueError),
    (lambda p: parse_data("imagenet-22k"), errors.ConfigError, ValueError),
    (lambda p: get_config("swin_nope"), errors.ConfigError, ValueError),
    (lambda p: get_config("swin_pico", depths=(1,)), errors.ConfigError, ValueError),
    (lambda p: convert({}, "caffe"), errors.ConfigError, ValueError),
])
def test_boundary_errors_are_typed(call, kind, builtin, tmp_path):
    with pytest.raises(kind) as e:
        call(tmp_path)
    assert isinstance(e.value, errors.SwinlabError) and isinstance(e.value, builtin)
