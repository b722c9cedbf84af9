"""Run an exported model: an ``.onnx`` file through ONNX Runtime, or a ``.pt2`` exported program.

:func:`load_exported` reads the metadata :func:`swinlab.deploy.export` wrote (class names, input
size, normalization, dtype, dynamic ranges) and returns an :class:`ExportedModel` whose
:meth:`~ExportedModel.logits` takes image batches as torch tensors, as the eager model does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError

SUFFIX_FORMATS = {".onnx": "onnx", ".pt2": "exported-program"}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"running an ONNX file needs onnxruntime ({e}); pip install 'swinlab[onnx]'") from e
    return onnxruntime


def _format_of(path: Path, fmt: str | None) -> str:
    fmt = fmt or SUFFIX_FORMATS.get(path.suffix)
    if fmt is None:
        raise CheckpointError(f"{path.name}: an exported model is an .onnx or .pt2 file")
    return fmt


def read_metadata(path: str | os.PathLike, fmt: str | None = None) -> dict[str, str]:
    """The ``swinlab.*`` metadata of an exported file (empty for a file swinlab did not export)."""
    return _open(Path(path), fmt)[1]


def _open(path: Path, fmt: str | None):
    if not path.is_file():
        raise CheckpointNotFoundError(f"exported model {str(path)!r} does not exist or is not a file")
    fmt = _format_of(path, fmt)
    if fmt == "onnx":
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about initializers it folds
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own (Fail, InvalidProtobuf, ...) without a common base
            raise CheckpointError(f"{path} is not a readable ONNX model ({str(e).strip()[:300]}); is it "
                                  "truncated or of another format?") from e
        return session, dict(session.get_modelmeta().custom_metadata_map)
    extra = {"swinlab.json": ""}
    try:
        with open(path, "rb") as f:  # a file object, whatever the name (export checks a temporary)
            program = torch.export.load(f, extra_files=extra)
    except Exception as e:  # zip, pickle and schema errors alike
        raise CheckpointError(f"{path} is not a readable torch.export program ({str(e).strip()[:300]}); "
                              "is it truncated or of another format?") from e
    return program, (json.loads(extra["swinlab.json"]) if extra["swinlab.json"] else {})


@dataclasses.dataclass
class ExportedModel:
    """An exported classifier and what it needs: its class names and the preprocessing of its input."""

    path: str
    format: str
    class_names: list[str]
    channels: int
    img_size: tuple[int, int]  # the size it was exported at (what predict resizes images to)
    mean: list[float]
    std: list[float]
    dtype: torch.dtype
    precision: str
    dynamic: dict
    metadata: dict[str, str]
    _runner: object = dataclasses.field(repr=False, default=None)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images ``(B, C, H, W)`` → logits ``(B, classes)`` (float32 for ONNX)."""
        x = x.to(self.dtype)
        if self.format == "onnx":
            session = self._runner
            name = session.get_inputs()[0].name
            out = session.run(None, {name: x.detach().cpu().contiguous().numpy()})[0]
            return torch.from_numpy(out)
        with torch.no_grad():
            return self._runner(x)


def load_exported(path: str | os.PathLike, fmt: str | None = None) -> ExportedModel:
    """Open an exported ``.onnx`` or ``.pt2`` file with its swinlab metadata.

    Raises:
        CheckpointNotFoundError: for a missing file.
        CheckpointError: for an unreadable file, or one without swinlab's metadata.
    """
    path = Path(path)
    runner, meta = _open(path, fmt)
    fmt = _format_of(path, fmt)
    if "swinlab.input" not in meta or "swinlab.class_names" not in meta:
        raise CheckpointError(f"{path} carries no swinlab metadata (class names, input size); export it "
                              "with `swinlab export` so predict knows how to feed it")
    inp = json.loads(meta["swinlab.input"])
    if fmt == "exported-program":
        runner = runner.module()
    return ExportedModel(path=str(path), format=fmt, class_names=json.loads(meta["swinlab.class_names"]),
                         channels=int(inp["channels"]), img_size=tuple(inp["img_size"]), mean=inp["mean"],
                         std=inp["std"], dtype=getattr(torch, inp["dtype"]),
                         precision=meta.get("swinlab.precision", "32-true"), dynamic=inp.get("dynamic", {}),
                         metadata=meta, _runner=runner)
