"""Converters from peer checkpoint layouts to swinlab's state-dict keys.

Sources:

* ``timm`` - timm ≥ 0.9 ``SwinTransformer`` (patch merging at the *start* of stages ``1..``),
  and the older timm layout (merging at the *end* of stages, like the official one); timm's
  ``VisionTransformer`` (ViT/DeiT) and ``MlpMixer``, detected by their keys (see
  :mod:`swinlab.weights.convert_baselines`), and ``MultiScaleVit`` (MViTv2,
  :mod:`swinlab.weights.convert_mvit`);
* ``torchvision`` - ``torchvision.models.swin_t/s/b`` (``features.{0..7}``, ``mlp.0``/``mlp.3``);
* ``official`` - microsoft/Swin-Transformer checkpoints (``{"model": ...}``, merging at the end of
  stages ``0..2``, ``absolute_pos_embed`` for the ``ape`` variants);
* ``hf`` - Hugging Face transformers' ``SwinForImageClassification`` / ``SwinModel``, merging at the
  end of stages, ``classifier``; both key layouts: transformers 4's (the hub checkpoints:
  ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
  ``output.dense``) and transformers 5's (``attention.{q,k,v,o}_proj``,
  ``attention.relative_position_bias.relative_position_bias_table``, ``mlp.fc1/fc2``). q, k and v
  are concatenated into swinlab's one ``qkv`` projection.

Swin V2 checkpoints convert through the same sources (timm's ``SwinTransformerV2``, torchvision's
``swin_v2_t/s/b``, the official ``swin_transformer_v2`` layout, transformers' ``Swinv2ForImageClassification``
with its ``swinv2.`` prefix): the continuous-bias MLP (``cpb_mlp``, ``continuous_position_bias_mlp``)
becomes ``attn.rel_pos.mlp``, the q and v biases ``attn.q_bias`` / ``attn.v_bias`` (torchvision's one
``qkv.bias``, whose k third it zeroes on every call, is split; transformers' key has no bias).

Buffers the peers save (``relative_position_index``, ``relative_coords_table``, ``attn_mask``) are
recomputed by swinlab and dropped. :func:`infer_swin_config` reads a
:class:`~swinlab.models.swin.SwinConfig` off a converted
state dict, so a foreign checkpoint can be loaded without knowing its variant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from ..errors import CheckpointError, ConfigError
from ..models.swin import SwinConfig
from .convert_baselines import detect_timm_family, from_timm_baseline
from .convert_mvit import from_timm_mvit, is_timm_mvit

SOURCES = ("timm", "torchvision", "official", "hf", "swinlab")
_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask")


def unwrap(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (``{"model": ...}``, ``{"state_dict": ...}``)."""
    for key in ("model", "state_dict", "model_state_dict"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
    sd = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError("the checkpoint holds no tensors; is it a state dict?")
    # Lightning / DDP prefixes
    for prefix in ("model.", "module."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def convert(state_dict: Mapping, source: str) -> dict[str, torch.Tensor]:
    """Rename a peer's Swin (or, from timm, ViT/DeiT/MLP-Mixer) state dict to swinlab's keys.

    Args:
        state_dict: the peer's state dict (or a checkpoint dict wrapping it).
        source: one of ``timm``, ``torchvision``, ``official``, ``hf`` (``swinlab`` returns it unwrapped).

    Returns:
        A new dict that the swinlab model's ``load_state_dict`` takes.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of {SOURCES}")
    sd = unwrap(state_dict)
    sd = {k: v for k, v in sd.items() if not k.endswith(_BUFFERS)}
    if source == "swinlab":
        return dict(sd)
    if source == "torchvision":
        return _from_torchvision(sd)
    if source == "hf":
        return _from_hf(sd)
    if source == "timm" and is_timm_mvit(sd):  # first: MViTv2's *_cls variants have a cls_token too
        return from_timm_mvit(sd)
    if source == "timm" and (family := detect_timm_family(sd)) is not None:
        return from_timm_baseline(sd, family)
    # timm ≥ 0.9 merges at the start of stage i; the official layout (and old timm) at the end of stage i.
    merge_at_end = source == "official" or "layers.0.downsample.reduction.weight" in sd
    out = {}
    for k, v in sd.items():
        k = k.replace("attn.relative_position_bias_table", "attn.rel_pos.table")
        k = k.replace(".cpb_mlp.", ".rel_pos.mlp.")
        k = re.sub(r"^head\.fc\.", "head.", k)
        m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", k)
        if m:
            stage = int(m.group(1)) + (1 if merge_at_end else 0)
            k = f"stages.{stage}.downsample.{m.group(2)}"
        else:
            k = re.sub(r"^layers\.(\d+)\.", r"stages.\1.", k)
        if k == "absolute_pos_embed":
            k, v = "abs_pos.pos_embed", _grid_pos_embed(v)
        out[k] = v
    return out


def _from_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # features.0 = [Conv2d, Permute, LayerNorm]; odd features.{1,3,5,7} = stages; even {2,4,6} = merging.
    out, v2_blocks = {}, _v2_blocks(sd)
    for k, v in sd.items():
        k = k.replace("features.0.0.", "patch_embed.proj.").replace("features.0.2.", "patch_embed.norm.")
        k = k.replace("attn.relative_position_bias_table", "attn.rel_pos.table")
        k = k.replace(".cpb_mlp.", ".rel_pos.mlp.")
        k = re.sub(r"\.(\d+)\.mlp\.0\.", r".\1.mlp.fc1.", k)  # a block's MLP (not the CPB's rel_pos.mlp)
        k = re.sub(r"\.(\d+)\.mlp\.3\.", r".\1.mlp.fc2.", k)
        m = re.match(r"^features\.(\d+)\.(.*)$", k)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            # odd: a stage, features.{2s+1}.{block}.…; even: the merge before stage s, features.{2s}.…
            k = f"stages.{idx // 2}.{'blocks' if idx % 2 else 'downsample'}.{rest}"
        if k.endswith(".attn.qkv.bias") and k.removesuffix(".qkv.bias") in v2_blocks:
            q, _, v_ = v.chunk(3)  # Swin V2: torchvision zeroes the k third on every forward
            out[k.replace("qkv.bias", "q_bias")], out[k.replace("qkv.bias", "v_bias")] = q, v_
            continue
        out[k] = v
    return out


def _v2_blocks(sd: dict[str, torch.Tensor]) -> set[str]:
    """The attention modules of torchvision's V2 blocks (those with a ``logit_scale``), as swinlab names
    them: ``stages.{s}.blocks.{j}.attn``."""
    return {f"stages.{int(m.group(1)) // 2}.blocks.{m.group(2)}.attn"
            for k in sd if (m := re.match(r"^features\.(\d+)\.(\d+)\.attn\.logit_scale$", k))}


_HF_RENAMES = [  # (pattern, replacement) applied in order to each transformers Swin key
    (r"^swin\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^swin\.embeddings\.norm\.", "patch_embed.norm."),
    (r"^swin\.layernorm\.", "norm."),
    (r"^classifier\.", "head."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.self\.relative_position_bias_table$", ".attn.rel_pos.table"),  # transformers 4
    (r"\.attention\.relative_position_bias\.relative_position_bias_table$", ".attn.rel_pos.table"),  # 5
    (r"\.attention\.self\.logit_scale$", ".attn.logit_scale"),  # Swin V2
    (r"\.attention\.self\.continuous_position_bias_mlp\.", ".attn.rel_pos.mlp."),  # Swin V2
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]


def _from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Swin keys → swinlab's (see the module doc)."""
    if not any(k.startswith(("swin.", "swinv2.", "embeddings.", "encoder.")) for k in sd):
        raise CheckpointError("this is not a transformers Swin state dict (no 'swin.' or 'swinv2.' keys); "
                              "pick the source it came from: timm, torchvision or official")
    sd = {re.sub(r"^swinv2\.", "swin.", k): v for k, v in sd.items()}  # Swinv2ForImageClassification
    sd = {("swin." + k if k.startswith(("embeddings.", "encoder.", "layernorm.")) else k): v
          for k, v in sd.items()}  # a bare SwinModel's keys
    out, qkv = {}, {}
    for k, v in sd.items():
        m = re.match(r"^swin\.encoder\.layers\.(\d+)\.(.*)$", k)
        if m:
            stage, rest = int(m.group(1)), m.group(2)
            # transformers merges at the end of stage i: swinlab at the start of stage i + 1
            k = f"stages.{stage + int(rest.startswith('downsample.'))}.{rest}"
        q = re.match(r"^(stages\.\d+\.blocks\.\d+)\.attention\.(?:self\.(query|key|value)|([qkv])_proj)"
                     r"\.(weight|bias)$", k)
        if q:
            part = q.group(2) or {"q": "query", "k": "key", "v": "value"}[q.group(3)]
            qkv.setdefault((q.group(1), q.group(4)), {})[part] = v
            continue
        for pattern, replacement in _HF_RENAMES:
            k = re.sub(pattern, replacement, k)
        out[k] = v
    for (block, kind), parts in qkv.items():
        if kind == "bias" and set(parts) == {"query", "value"}:  # Swin V2: no key bias
            out[f"{block}.attn.q_bias"], out[f"{block}.attn.v_bias"] = parts["query"], parts["value"]
            continue
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{block}: the checkpoint has {sorted(parts)} of query/key/value {kind}s")
        out[f"{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def _grid_pos_embed(v: torch.Tensor) -> torch.Tensor:
    """``(1, L, C)`` → ``(1, √L, √L, C)`` (the official ``ape`` layout is a square token list)."""
    if v.ndim == 4:
        return v
    side = math.isqrt(v.shape[1])
    if side * side != v.shape[1]:
        raise CheckpointError(f"absolute_pos_embed has {v.shape[1]} tokens, not a square grid")
    return v.reshape(1, side, side, v.shape[2])


def _embedding(sd: Mapping[str, torch.Tensor], proj: torch.Tensor) -> dict:
    """embed_dim, in_chans, patch_size and stem from the patch embedding: a P×P projection, or the
    convolutional stem's log2(P) 3×3 stride-2 convolutions (``patch_embed.stem.{0,3,...}``)
    before a 1×1 one."""
    convs = sum(v.ndim == 4 for k, v in sd.items() if re.match(r"^patch_embed\.stem\.\d+\.weight$", k))
    if not convs:
        return dict(embed_dim=proj.shape[0], in_chans=proj.shape[1], patch_size=proj.shape[2])
    return dict(embed_dim=proj.shape[0], in_chans=sd["patch_embed.stem.0.weight"].shape[1],
                patch_size=2 ** convs, stem="conv")


def infer_swin_config(state_dict: Mapping[str, torch.Tensor], **overrides):
    """A :class:`SwinConfig` matching a swinlab-keyed Swin state dict (``overrides`` win).

    Reads embed_dim, patch size, in_chans and the stem from the patch embedding; depths from the block keys;
    heads and window from the relative-bias tables; num_classes from the head; position from the
    presence of tables and an absolute embedding. ``img_size`` cannot be read off (it defaults to
    224², or 384² for a 12×12 window) and should be passed where it matters.
    """
    sd = state_dict
    try:
        proj = sd["patch_embed.proj.weight"]  # (C, C_in, P, P)
    except KeyError:
        raise CheckpointError("not a Swin state dict in swinlab keys: no 'patch_embed.proj.weight'; "
                              "convert it first with convert(sd, source=...)") from None
    stage_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^stages\.(\d+)\.blocks\.", k))})
    depths = [len({int(m.group(1)) for k in sd if (m := re.match(rf"^stages\.{s}\.blocks\.(\d+)\.", k))})
              for s in stage_ids]
    tables = [sd.get(f"stages.{s}.blocks.0.attn.rel_pos.table") for s in stage_ids]
    has_rel = tables[0] is not None
    v2 = [sd.get(f"stages.{s}.blocks.0.attn.logit_scale") for s in stage_ids]
    if v2[0] is not None:  # Swin V2: heads from the temperatures; the CPB does not fix the window
        return _infer_v2(sd, proj, depths, [t.shape[0] for t in v2], **overrides)
    if has_rel:
        heads = [t.shape[1] for t in tables]
        side = (math.isqrt(tables[0].shape[0]) + 1) // 2
    else:
        heads, side = overrides.get("num_heads"), overrides.get("window_size", 7)
        if heads is None:
            raise CheckpointError("the state dict has no relative-bias tables; pass num_heads=...")
    has_abs = "abs_pos.pos_embed" in sd
    position = {(True, False): "rel", (True, True): "abs+rel", (False, True): "abs", (False, False): "none"}
    head = sd.get("head.weight")
    fields = dict(
        **_embedding(sd, proj), depths=tuple(depths), num_heads=tuple(heads), window_size=side,
        img_size=384 if side == 12 else 224,
        num_classes=head.shape[0] if head is not None else 0,
        position=position[(has_rel, has_abs)],
        qkv_bias="stages.0.blocks.0.attn.qkv.bias" in sd,
        patch_norm="patch_embed.norm.weight" in sd,
    )
    fields.update(overrides)
    return SwinConfig(**fields)


def _infer_v2(sd, proj: torch.Tensor, depths: list[int], heads: list[int], **overrides):
    """Swin V2: a continuous bias fits any window, so window and image size come from ``overrides``
    (default: 256², window 8, the ``swinv2_*`` presets' geometry; fine-tuned checkpoints need their
    ``window_size``, ``img_size`` and ``pretrained_window_sizes`` passed)."""
    head = sd.get("head.weight")
    fields = dict(
        **_embedding(sd, proj), depths=tuple(depths), num_heads=tuple(heads), window_size=8, img_size=256,
        num_classes=head.shape[0] if head is not None else 0,
        position="cpb" if "stages.0.blocks.0.attn.rel_pos.mlp.0.weight" in sd else "none",
        attention="cosine", res_post_norm=True, k_bias="stages.0.blocks.0.attn.qkv.bias" in sd,
        qkv_bias="stages.0.blocks.0.attn.q_bias" in sd or "stages.0.blocks.0.attn.qkv.bias" in sd,
        patch_norm="patch_embed.norm.weight" in sd,
    )
    fields.update(overrides)
    return SwinConfig(**fields)
