"""Export a swinlab model to ONNX or to a ``torch.export`` program, checked against the eager model.

What is exported:

* **Standard operators only**, whatever backend the model runs with: the export copy runs its
  linear layers on ``F.linear`` and its window attention on ``"reference"`` (matmul, softmax), so no
  ``swinlab::`` custom operator (oneDNN linear, the native attention kernel), no Triton kernel and no
  fused SDPA reaches the graph (a graph traced with SDPA at a size of several windows asserted at
  run time that a batch of one image had more than one window: Swin-T at 224², batch 1). The
  weights are unchanged.
* **A dynamic batch always.** ``dynamic=True`` also makes the height and width dynamic where the
  model can take any size (:func:`dynamic_range`): every Swin pads to its patch, its merges and its
  windows inside the graph, shifts by ``min(S, Hp - M)`` and builds its masks from the traced size;
  ViT resizes its position embedding bicubically. Where a model cannot (MLP-Mixer's token-mixing
  MLPs take a fixed number of patches; the global-context pool sampler pools to a grid whose shape
  follows the map's aspect), the error says which dimension and why.
* **Metadata** (ONNX ``metadata_props``; the ``.pt2`` file's ``swinlab.json`` extra file): the config,
  the class names, the input (channels, size, normalization mean/std, dtype, the dynamic ranges)
  and the precision, so :func:`swinlab.deploy.load_exported` and ``swinlab predict`` need nothing else.
* **Checked before it is written**: the file is exported to a temporary name, loaded back (ONNX
  Runtime, or ``torch.export.load``), run at the example size and, for a dynamic export, at two more
  sizes (one not square, neither a multiple of the model's stride), at batch 1 at the example and the
  smallest size, and at batch 3, and compared with the eager model; only then does it replace
  ``out``. :class:`ExportReport` holds every max |Δ|.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from .. import precision as precisions
from ..data.transforms import default_normalization
from ..errors import ConfigError, ExportError
from ..files import atomic_path
from ..models.mixer import MlpMixer
from ..models.swin import SwinTransformer
from ..models.vit import VisionTransformer
from ..weights import io as wio
from .runtime import load_exported

FORMATS = ("onnx", "exported-program")
SUFFIXES = {".onnx": "onnx", ".pt2": "exported-program"}
METADATA_VERSION = "1"

# Relative tolerance of the check, max |Δ| / max |eager logit|: float32 graphs differ from eager by
# rounding only (other GEMM blockings, ONNX Runtime's kernels); bf16 by bf16 rounding.
TOLERANCE = {"32-true": 1e-4, "bf16-true": 5e-2}


@dataclasses.dataclass
class ExportReport:
    """What :func:`export` wrote and how the exported graph compared with the eager model."""

    path: str
    format: str
    precision: str
    input_shape: tuple[int, int, int, int]  # the example input (B, C, H, W)
    dynamic: dict[str, list[int | None]]  # dimension -> [min, max] (max None: unbounded)
    checks: list[dict]  # {"shape": [B, C, H, W], "max_abs": float, "max_rel": float}
    tolerance: float

    @property
    def max_rel(self) -> float:
        return max(c["max_rel"] for c in self.checks)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _family_stride(model: nn.Module) -> int:
    cfg = model.config
    if isinstance(model, SwinTransformer):
        return cfg.patch_size * 2 ** (len(cfg.depths) - 1)
    return cfg.patch_size


def dynamic_range(model: nn.Module) -> tuple[int, int]:
    """The smallest ``(height, width)`` a dynamic-size export of ``model`` takes (no upper bound).

    A Swin's window shrinks on a map smaller than it, a branch on the size that an exported graph
    cannot hold; so the smallest size keeps the last stage's map at least one window:
    ``⌈H / (P·2^(L-1))⌉ ≥ M``, i.e. ``H ≥ P·2^(L-1)·(M-1) + 1``. ViT takes at least two patches per
    side (``torch.export`` specializes a side of one).

    Raises:
        ConfigError: for a model whose height and width cannot be dynamic, naming why.
    """
    cfg = model.config
    name = type(model).__name__
    if isinstance(model, MlpMixer):
        raise ConfigError(
            f"{name}'s token-mixing MLPs take exactly {cfg.grid_size[0]}×{cfg.grid_size[1]} patches "
            f"(img_size {tuple(cfg.img_size)}), so its height and width cannot be dynamic; export it "
            "without --dynamic (the batch stays dynamic), or build it for another img_size and retrain")
    if isinstance(model, SwinTransformer):
        if cfg.global_context is not None and cfg.global_context.sampler == "pool":
            raise ConfigError(
                "the global-context extension's pool sampler averages cells of a grid whose shape "
                "follows the map's aspect (adaptive average pooling to about √(K·H/W) rows), which ONNX "
                "and torch.export cannot take from a dynamic height and width; export it without "
                "--dynamic (the batch stays dynamic) at the size it will run at (--img-size H W), or "
                "use the grid or random sampler (random samples the grid in inference)")
        if cfg.shift_order == "roll-pad":
            raise ConfigError(
                "shift_order='roll-pad' (timm's order: roll the unpadded map, then pad) is exported at "
                "one size only; export without --dynamic at the size it will run at (--img-size H W), "
                "or set the paper's order with model.set_peer_geometry(shift_order='pad-roll')")
        stride = _family_stride(model)
        return tuple(stride * (m - 1) + 1 for m in cfg.window_size)  # type: ignore[return-value]
    if isinstance(model, VisionTransformer):
        return (2 * cfg.patch_size, 2 * cfg.patch_size)
    raise ConfigError(f"no export rule for {name}; swinlab exports SwinTransformer, VisionTransformer "
                      "and MlpMixer models")


def _check_sizes(model: nn.Module, size: tuple[int, int], dynamic: bool) -> list[tuple[int, int, int]]:
    """``(batch, H, W)`` of every check: the example size, and for a dynamic export two more, one
    not square, neither a multiple of the stride."""
    h, w = size
    if not dynamic:
        return [(2, h, w), (1, h, w)]
    s = _family_stride(model)
    lo_h, lo_w = dynamic_range(model)
    # batch 1 at the example size and at the smallest: where a window count can be 1 (a size-1
    # dimension that a graph traced at another size may have assumed away)
    return [(2, h, w), (1, h, w), (1, h + s + 3, w + 2 * s + 5), (3, h + 3 * s - 1, h + s - 2),
            (1, lo_h, lo_w)]


def _load(source) -> tuple[nn.Module, dict[str, str], str | None]:
    if isinstance(source, nn.Module):
        return source, {}, None
    _, meta = wio.read_state_dict(source)
    return wio.load(source), meta, str(source)


def _metadata(model: nn.Module, meta: dict[str, str], size, dtype: torch.dtype, dynamic: dict,
              prec: str, source: str | None) -> dict[str, str]:
    cfg = model.config
    norm = json.loads(meta["swinlab.normalize"]) if "swinlab.normalize" in meta else None
    mean, std = (norm["mean"], norm["std"]) if norm else default_normalization(cfg.in_chans)
    data = {
        "swinlab.format": METADATA_VERSION,
        "swinlab.config": wio.config_to_json(cfg),
        "swinlab.class_names": json.dumps(wio.saved_class_names(meta, cfg.num_classes)),
        "swinlab.input": json.dumps({"channels": cfg.in_chans, "img_size": list(size), "mean": mean,
                                     "std": std, "dtype": str(dtype).removeprefix("torch."),
                                     "dynamic": dynamic}),
        "swinlab.precision": prec,
    }
    if source is not None:
        data["swinlab.source"] = os.path.basename(source)
    return data


def _standard_ops(model: nn.Module, fmt: str) -> nn.Module:
    """A copy of ``model`` whose every kernel is a standard operator (see the module doc)."""
    model = copy.deepcopy(model).eval()
    model.set_linear_backend("torch")
    if isinstance(model, SwinTransformer):
        model.set_attention_backend("reference")
    return model


def _format(out: Path, fmt: str | None) -> str:
    inferred = SUFFIXES.get(out.suffix)
    if fmt is None:
        if inferred is None:
            raise ConfigError(f"cannot tell the export format from {out.name!r}; name the file .onnx or "
                              f".pt2, or pass format= one of {list(FORMATS)}")
        return inferred
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    if inferred is not None and inferred != fmt:
        raise ConfigError(f"{out.name!r} is named as {inferred} but format {fmt!r} was asked; "
                          f"name an {fmt} file {'.onnx' if fmt == 'onnx' else '.pt2'}")
    return fmt


def _precision(precision: str, fmt: str) -> str:
    prec = precisions.resolve(precision, "cpu", training=False)
    if prec not in TOLERANCE:
        raise ConfigError(f"an exported graph holds its weights in one dtype; {prec!r} mixes two. "
                          "Export with 32-true or bf16-true")
    if fmt == "onnx" and prec != "32-true":
        raise ConfigError("ONNX Runtime's CPU provider has no bfloat16 kernels for most of these "
                          "operators; export ONNX with 32-true (a runtime such as TensorRT lowers "
                          "the precision itself), or an exported program with bf16-true")
    return prec


def export(source, out: str | os.PathLike, *, format: str | None = None, dynamic: bool = False,
           img_size=None, precision: str = "32-true", check: bool = True, seed: int = 0) -> ExportReport:
    """Export ``source`` (a swinlab model, or a ``.safetensors`` checkpoint) to ``out``.

    Args:
        out: the file to write: ``.onnx`` or ``.pt2`` (the format follows the suffix unless given).
        format: ``"onnx"`` or ``"exported-program"``.
        dynamic: also make the height and width dynamic (the batch always is); see :func:`dynamic_range`.
        img_size: the example input's ``(H, W)`` (an int for a square); default the model's ``img_size``.
            A static export takes exactly this size; a dynamic one takes any size from
            :func:`dynamic_range` up.
        precision: ``32-true`` (default), ``bf16-true`` (exported programs; bf16 weights and input),
            or ``auto`` (``bf16-true`` where the CPU has native bf16; ONNX stays ``32-true``).
        check: run the exported file against the eager model before writing it (raises
            :class:`~swinlab.errors.ExportError` beyond :data:`TOLERANCE`).

    Returns:
        An :class:`ExportReport`; nothing is written if anything fails.
    """
    out = Path(out)
    fmt = _format(out, format)
    prec = _precision("32-true" if fmt == "onnx" and precision == "auto" else precision, fmt)
    model, meta, src = _load(source)
    if not all(hasattr(model, a) for a in ("config", "set_linear_backend")):
        raise ConfigError(f"export takes a swinlab model or checkpoint, not a {type(model).__name__}")
    cfg = model.config
    size = tuple(cfg.img_size) if img_size is None else _pair(img_size)
    if isinstance(model, MlpMixer) and size != tuple(cfg.img_size):
        raise ConfigError(f"this MLP-Mixer was built for img_size {tuple(cfg.img_size)} and takes no "
                          f"other size; export it at {tuple(cfg.img_size)} (drop --img-size)")
    dims: dict[str, list[int | None]] = {"batch": [1, None]}
    if dynamic:
        lo = dynamic_range(model)
        if size[0] < lo[0] or size[1] < lo[1]:
            raise ConfigError(f"a dynamic export of this model takes sizes from {lo[0]}×{lo[1]} up (its "
                              f"last stage must hold one {cfg.window_size[0]}×{cfg.window_size[1]} window); "
                              f"--img-size {size[0]} {size[1]} is smaller")
        dims.update(height=[lo[0], None], width=[lo[1], None])
    eager = precisions.cast_model(copy.deepcopy(model).eval(), prec)
    traced = _standard_ops(eager, fmt)
    dtype = precisions.weight_dtype(prec)
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, cfg.in_chans, *size, generator=gen).to(dtype)
    shapes = _dynamic_shapes(dims)
    metadata = _metadata(model, meta, size, dtype, dims, prec, src)
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _export_onnx(traced, example, shapes, metadata, tmp)
        else:
            _export_program(traced, example, shapes, metadata, tmp)
        checks = []
        if check:
            checks = _check(eager, tmp, fmt, _check_sizes(model, size, dynamic), cfg.in_chans, dtype, gen)
            worst = max(c["max_rel"] for c in checks)
            if not worst <= TOLERANCE[prec]:
                raise ExportError(f"the exported {fmt} graph differs from the eager model by "
                                  f"{worst:.2e} of its largest logit (tolerance {TOLERANCE[prec]:.0e}): "
                                  f"{checks}; nothing was written to {out}")
    return ExportReport(path=str(out), format=fmt, precision=prec, input_shape=tuple(example.shape),
                        dynamic=dims, checks=checks, tolerance=TOLERANCE[prec])


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    h, w = (int(i) for i in v)
    if h < 1 or w < 1:
        raise ConfigError(f"img_size must be positive, got {(h, w)}")
    return (h, w)


def _dynamic_shapes(dims: dict[str, list[int | None]]) -> tuple[dict[int, torch.export.Dim]]:
    axis = {"batch": 0, "height": 2, "width": 3}
    return ({axis[name]: torch.export.Dim(name, min=lo, **({} if hi is None else {"max": hi}))
             for name, (lo, hi) in dims.items()},)


def _trace(model: nn.Module, example: torch.Tensor, shapes) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return torch.export.export(model, (example,), dynamic_shapes=shapes, strict=False)
    except Exception as e:  # torch's many export errors: one line naming what to change
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch.export could not trace {type(model).__name__} with dynamic dimensions "
                          f"{[d for d in shapes[0].values()]}: {first}") from e


def _foreign_ops(ep: torch.export.ExportedProgram) -> list[str]:
    """Operators of ``ep`` outside torch's own namespaces (``aten``, ``prim``...)."""
    ops = set()
    for node in ep.graph.nodes:
        if (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
                and node.target.namespace not in ("aten", "prim", "prims")):
            ops.add(str(node.target))
    return sorted(ops)


def _export_program(model, example, shapes, metadata: dict[str, str], path: Path) -> None:
    ep = _trace(model, example, shapes)
    foreign = _foreign_ops(ep)
    if foreign:
        raise ExportError(f"the exported program holds non-standard operators {foreign}; "
                          "this is a swinlab bug, please report it")
    with open(path, "wb") as f:  # a file object: torch checks a path's suffix, and this is a temporary
        torch.export.save(ep, f, extra_files={"swinlab.json": json.dumps(metadata)})


def _onnx_modules():
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"ONNX export needs the onnx and onnxscript packages ({e}); "
                          "pip install 'swinlab[onnx]'") from e


def _export_onnx(model, example, shapes, metadata: dict[str, str], path: Path) -> None:
    _onnx_modules()
    ep = _trace(model, example, shapes)  # one tracer for both formats, and its errors
    quiet = logging.getLogger("onnx_ir")  # warns for every empty attribute list the exporter writes
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(ep, (example,), dynamo=True, verbose=False, optimize=True)
    except Exception as e:
        raise ExportError(f"the ONNX exporter could not translate {type(model).__name__}: "
                          f"{str(e).strip().splitlines()[0]}") from e
    finally:
        quiet.setLevel(level)
    program.model.metadata_props.update(metadata)
    foreign = sorted({n.domain for n in program.model.graph if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise ExportError(f"the ONNX graph holds operators of domains {foreign}; this is a swinlab bug")
    program.save(str(path))


def _check(eager: nn.Module, path: Path, fmt: str, sizes, channels: int, dtype, gen) -> list[dict]:
    run = load_exported(path, fmt=fmt)
    checks = []
    for b, h, w in sizes:
        x = torch.randn(b, channels, h, w, generator=gen).to(dtype)
        with torch.no_grad():
            ref = eager(x).float()
        got = run.logits(x).float()
        if got.shape != ref.shape:
            raise ExportError(f"the exported graph gave logits of shape {tuple(got.shape)} for input "
                              f"{tuple(x.shape)}; the eager model gives {tuple(ref.shape)}")
        diff = float((got - ref).abs().max())
        checks.append({"shape": [b, channels, h, w], "max_abs": diff,
                       "max_rel": diff / max(float(ref.abs().max()), 1e-12)})
    return checks
