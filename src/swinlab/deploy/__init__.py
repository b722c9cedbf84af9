"""Deployment: export a model to ONNX or a ``torch.export`` program, and run what was exported.

* :func:`export` writes a checkpoint or model as ``.onnx`` (ONNX Runtime, TensorRT, ...) or ``.pt2``
  (an ``ExportedProgram``: ExecuTorch, AOTInductor, C++), with standard operators only, the class
  names and the preprocessing in its metadata, and checks it against the eager model before the file
  appears (:class:`ExportReport` holds the max |Δ| at every size checked).
* :func:`load_exported` opens either file as an :class:`ExportedModel` that ``swinlab predict`` runs
  like a checkpoint.

ONNX needs the optional packages ``onnx``, ``onnxscript`` (the exporter) and ``onnxruntime`` (the
check and :class:`ExportedModel`): ``pip install 'swinlab[onnx]'``.
"""

from .exporter import FORMATS, ExportReport, dynamic_range, export
from .runtime import ExportedModel, load_exported, read_metadata

__all__ = ["FORMATS", "ExportReport", "ExportedModel", "dynamic_range", "export", "load_exported",
           "read_metadata"]
