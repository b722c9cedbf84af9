"""Checkpoint I/O: safetensors files that carry the model's config, and checked loading.

A swinlab checkpoint is one ``.safetensors`` file whose metadata holds the config as JSON
(``swinlab.config``) and its family (``swinlab.family``), so ``load(path)`` rebuilds the model
with no other information. Pickled checkpoints (``.pth``, ``.pt``, ``.ckpt``, ``.bin``) are read
with ``torch.load(weights_only=True)`` only: they can hold tensors and plain containers, never code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError, CheckpointNotFoundError
from ..files import atomic_path
from ..models.registry import build_from_config, config_classes
from .conversion import convert, infer_swin_config, unwrap
from .convert_mvit import infer_mvit_config, is_timm_mvit, resize_rel_pos

logger = logging.getLogger(__name__)

# Where a peer's Swin answers differently from swinlab's default geometry (SwinConfig.window_fit and
# shift_order), what a model loaded from its checkpoint is set to, so it answers as the peer does:
# (source, Swin V2?) → fields. torchvision pads a map smaller than the window instead of shrinking the
# window (V1 and V2); transformers drops the shift by the shorter side in V1 and pads as torchvision in
# V2 (its windows are fixed when the model is built); timm rolls before it pads.
# timm and torchvision ignore image rows/columns beyond a multiple of the patch (a strided convolution);
# transformers pads them, as swinlab does.
_PEER_GEOMETRY = {
    ("hf", False): {"window_fit": "min-side"}, ("hf", True): {"window_fit": "built"},
    ("torchvision", False): {"window_fit": "pad", "patch_remainder": "drop"},
    ("torchvision", True): {"window_fit": "pad", "patch_remainder": "drop"},
    ("timm", False): {"shift_order": "roll-pad", "patch_remainder": "drop"},
    ("timm", True): {"shift_order": "roll-pad", "patch_remainder": "drop"},
}


def peer_geometry(source: str | None, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
    """The geometry fields (``window_fit``, ``shift_order``, ``patch_remainder``) a Swin converted from
    ``source`` needs to answer as that library does at every size (empty for swinlab, official and
    non-Swin models)."""
    v2 = any(k.endswith("attn.logit_scale") for k in state_dict)
    return dict(_PEER_GEOMETRY.get((source, v2), {}))

__all__ = ["FORMAT_VERSION", "CheckpointError", "CheckpointNotFoundError", "config_from_json",
           "config_to_json", "load", "load_state_dict", "peer_geometry", "read_state_dict", "save",
           "saved_class_names"]

FORMAT_VERSION = "1"


def config_to_json(config) -> str:
    """The config dataclass as JSON (tuples as lists)."""
    return json.dumps({"family": type(config).__name__, "config": dataclasses.asdict(config)}, sort_keys=True)


def config_from_json(text: str):
    """Inverse of :func:`config_to_json`."""
    data = json.loads(text)
    classes = config_classes()
    if data.get("family") not in classes:
        raise CheckpointError(f"checkpoint is for model family {data.get('family')!r}; "
                              f"this swinlab knows {sorted(classes)}")
    cls = classes[data["family"]]
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data["config"].items() if k in known})


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and config to ``path`` (``.safetensors``), atomically.

    The file is written next to its destination and renamed over it, so an interrupted save never
    leaves a half-written checkpoint where a good one was.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"swinlab checkpoints are .safetensors files; got {path.name!r}")
    meta = {"swinlab.format": FORMAT_VERSION}
    if hasattr(model, "config"):
        meta["swinlab.config"] = config_to_json(model.config)
    meta.update(metadata or {})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint file (safetensors, or pickled with ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            return load_file(str(path)), meta
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e}); "
                                  "is it truncated or of another format?") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # not a code reference: the bytes are not a checkpoint
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint "
                                  f"({_last_line(e)}); is it truncated or of another format?") from e
        raise CheckpointError(
            f"{path} holds Python objects beyond tensors, which swinlab will not unpickle "
            f"(torch.load(weights_only=True) refused: {_last_line(e)}). Re-save it as a plain "
            "state dict, or as safetensors, in the environment that made it.") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return unwrap(obj), {}


def _last_line(e: Exception) -> str:
    """The informative line of torch.load's long weights-only message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    hits = [ln.split("error:", 1)[-1].strip() for ln in lines if "Unsupported" in ln]
    return (hits or lines or [type(e).__name__])[0].split(". Please use")[0]


def load_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load ``state_dict`` into ``model``, naming every key that is missing, unexpected or misshapen.

    Raises:
        CheckpointError: with the key and both shapes for each mismatch (nothing is loaded then).
    """
    own = model.state_dict()
    problems = []
    for k, v in state_dict.items():
        if k in own and own[k].shape != v.shape:
            problems.append(f"  {k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if strict:
        problems += [f"  {k}: missing from the checkpoint (model {tuple(own[k].shape)})"
                     for k in missing[:10]]
        problems += [f"  {k}: not in the model (checkpoint {tuple(state_dict[k].shape)})"
                     for k in unexpected[:10]]
        if len(missing) > 10 or len(unexpected) > 10:
            problems.append(f"  ... {len(missing)} missing and {len(unexpected)} unexpected keys in all")
    if problems:
        raise CheckpointError(
            "the checkpoint does not fit this model:\n" + "\n".join(problems) +
            "\nIs it a checkpoint of another model or variant? Build the model it was saved from "
            "(swinlab.weights.load(path) does so from the saved config), or convert a peer's "
            "checkpoint with swinlab.weights.convert(sd, source=...).")
    model.load_state_dict(state_dict, strict=strict)


def load(path: str | os.PathLike, model: nn.Module | None = None, *, source: str | None = None,
         strict: bool = True, **overrides) -> nn.Module:
    """Load a checkpoint into ``model``, or build the model it describes.

    Args:
        path: a swinlab ``.safetensors`` file, or a peer checkpoint (with ``source``).
        model: load into this model (checked key by key); ``None`` builds one from the saved
            config, or, for a peer's Swin checkpoint, from the config inferred from its shapes.
        source: the peer layout of a foreign checkpoint: ``timm``, ``torchvision``, ``official``, ``hf``
            (a Swin also gets the geometry that peer answers with at every size, :func:`peer_geometry`:
            from ``hf`` ``window_fit="min-side"`` (V1) or ``"pad"`` (V2), from ``torchvision``
            ``window_fit="pad"``, from ``timm`` ``shift_order="roll-pad"``; from both
            ``patch_remainder="drop"``).
        strict: every key must match.
        **overrides: config fields to change when building (e.g. ``img_size``), weights unchanged.
    """
    sd, meta = read_state_dict(path)
    if source is not None:
        sd = convert(sd, source)
    if model is None:
        if "swinlab.config" in meta:
            config = config_from_json(meta["swinlab.config"])
            config = config.replace(**overrides) if overrides else config
        elif is_timm_mvit(sd):  # an MViTv2 (timm's keys are swinlab's but for the head)
            config = infer_mvit_config(sd, **overrides)
        else:
            overrides = {**peer_geometry(source, sd), **overrides}
            config = infer_swin_config(sd, **overrides)
        model = build_from_config(config)
    elif (geometry := peer_geometry(source, sd)) and hasattr(model, "set_peer_geometry"):
        model.set_peer_geometry(**geometry)
    sd = resize_rel_pos(sd, model)  # MViTv2 tables for a model built at another img_size; else a no-op
    load_state_dict(model, sd, strict=strict)
    return model


def saved_class_names(meta: dict, num_classes: int) -> list[str]:
    """The class names a checkpoint's metadata carries (``swinlab.train.export`` writes them); the
    indices as names for a checkpoint without them (a converted one) or with a list of the wrong length."""
    names = json.loads(meta.get("swinlab.class_names", "[]"))
    if len(names) == num_classes:
        return [str(n) for n in names]
    if names:
        logger.warning("the checkpoint names %d classes but its model has %d; using the indices as names",
                       len(names), num_classes)
    return [str(i) for i in range(num_classes)]
