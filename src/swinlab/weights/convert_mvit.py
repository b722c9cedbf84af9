"""Converter from timm's MViTv2 (``timm.models.mvitv2.MultiScaleVit``) state dicts to swinlab's
:class:`~swinlab.models.mvit.MultiScaleViT`, and the config such a state dict describes.

swinlab's MViTv2 keeps timm's key names (``patch_embed.proj``, ``cls_token``,
``stages.i.blocks.j.{norm1, shortcut_proj_attn, attn.{qkv, proj, pool_q, norm_q, pool_k, norm_k,
pool_v, norm_v, rel_pos_h, rel_pos_w}, norm2, shortcut_proj_mlp, mlp.fc1, mlp.fc2}``, ``norm``), so
conversion renames timm's nested classifier ``head.fc`` to ``head``. Variants swinlab does not build
are refused by name rather than loaded half-way: an absolute position embedding (``use_abs_pos``),
pooling before the projections (``pool_first``), and the official facebookresearch/mvit layout
(``blocks.i`` without stages, which timm's own loader remaps: load it into timm and convert that).

:func:`resize_rel_pos` resamples the relative-position tables for a model built at another
``img_size``, linearly along the table (what timm's ``checkpoint_filter_fn`` does when it loads
weights into a model of another size).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..models.mvit import MViTConfig

# Keys of blocks only an MViT has: the pooling convolutions and their norms, the per-axis tables.
_MVIT_KEY = re.compile(r"^stages\.\d+\.blocks\.\d+\.(attn\.(pool|norm)_[qkv]\.weight|attn\.rel_pos_[hw]$)")

# timm key patterns of MViT variants that swinlab does not build, and why.
_UNSUPPORTED = {
    r"^pos_embed$": "an absolute position embedding (use_abs_pos=True)",
    r"\.attn\.[qkv]\.weight$": "pooling before the q, k, v projections (pool_first=True)",
}


def is_timm_mvit(sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``sd`` is an MViTv2 state dict, from its keys (timm's and swinlab's are the same but
    for the head): a pooling convolution or norm (``stages.0.blocks.0.attn.pool_q.weight``) or a
    per-axis relative-position table (``...attn.rel_pos_h``)."""
    return any(_MVIT_KEY.match(k) for k in sd)


def from_timm_mvit(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm MViTv2 state dict to swinlab's keys (see the module doc).

    Raises:
        CheckpointError: for a state dict that is not an MViTv2's, or one of a variant swinlab does not
            build (naming the key and the variant).
    """
    if not is_timm_mvit(sd):
        if any(re.match(r"^blocks\.\d+\.attn\.pool_q\.", k) for k in sd):
            raise CheckpointError(
                "this is the official facebookresearch/mvit layout (blocks.i without stages): load it into "
                "timm's mvitv2_* (its checkpoint_filter_fn maps it) and convert that model's state_dict()")
        raise CheckpointError(
            "not a timm MViTv2 state dict: no pooling-attention keys such as "
            f"'stages.0.blocks.0.attn.pool_q.weight'; its keys begin {sorted(sd)[:4]}")
    for pattern, what in _UNSUPPORTED.items():
        hit = next((k for k in sd if re.search(pattern, k)), None)
        if hit is not None:
            raise CheckpointError(f"the timm MViTv2 checkpoint has {hit!r}: {what}, which swinlab's MViTv2 "
                                  "does not build")
    return {("head." + k[len("head.fc."):] if k.startswith("head.fc.") else k): v for k, v in sd.items()}


def resize_rel_pos(sd: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``sd`` with every relative-position table resampled to the length ``model``'s has.

    A table ``(L, d)`` of a model built for another ``img_size`` becomes ``(L', d)`` by linear
    interpolation along its rows (timm's ``checkpoint_filter_fn``, ``align_corners=False``). Keys the
    model lacks, and tables whose head dimension differs, are left for the loader to report.
    """
    own = model.state_dict()
    out = dict(sd)
    for k, v in sd.items():
        if not k.endswith((".rel_pos_h", ".rel_pos_w")) or k not in own:
            continue
        rows, dim = own[k].shape
        if v.ndim == 2 and v.shape[1] == dim and v.shape[0] != rows:
            table = v.reshape(1, v.shape[0], -1).permute(0, 2, 1)  # (1, d, L)
            table = F.interpolate(table, size=rows, mode="linear")  # (1, d, L')
            out[k] = table.reshape(-1, rows).permute(1, 0)  # (L', d)
    return out


def infer_mvit_config(state_dict: Mapping[str, torch.Tensor], **overrides) -> MViTConfig:
    """An :class:`MViTConfig` matching an MViTv2 state dict in swinlab's (or timm's) keys; ``overrides`` win.

    Reads ``embed_dim``, ``in_chans`` and ``patch_size`` off the patch embedding; ``depths`` from the
    block keys; the head dimension from the pooling convolutions (or tables), hence ``num_heads`` from
    the q, k, v projection; ``mlp_ratio``, ``pool_kernel``, ``qkv_bias``, ``class_token`` (and
    ``global_pool="token"`` with it), ``expand_attn`` (where the width-changing projection sits),
    ``rel_pos`` and ``num_classes``; ``img_size`` from stage 1's tables, ``2·(img_size / patch_stride)
    - 1`` rows per axis (224² without tables). ``patch_stride`` (4), ``kv_stride`` (4) and
    ``residual_pooling`` (on) have no weights and take the default unless overridden.

    Raises:
        CheckpointError: for a state dict that is not an MViTv2's in these keys, or one whose stage
            widths do not double (swinlab builds C, 2C, 4C, ...).
    """
    sd = state_dict
    if not is_timm_mvit(sd) or "patch_embed.proj.weight" not in sd:
        raise CheckpointError("not an MViTv2 state dict: no 'patch_embed.proj.weight' and pooling-attention "
                              "keys ('stages.0.blocks.0.attn.pool_q.weight'); convert a timm one first with "
                              "from_timm_mvit(sd)")
    proj = sd["patch_embed.proj.weight"]  # (C, C_in, k, k)
    blocks = {(int(m.group(1)), int(m.group(2)))
              for k in sd if (m := re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.", k))}
    stages = sorted({s for s, _ in blocks})
    depths = tuple(max(b for s2, b in blocks if s2 == s) + 1 for s in stages)
    heads, widths = [], []
    for s in stages:
        prefix = f"stages.{s}.blocks.0.attn."
        att_dim = sd[prefix + "qkv.weight"].shape[0] // 3
        names = ("pool_q.weight", "pool_k.weight", "rel_pos_h")
        pooled = next((sd[prefix + n] for n in names if prefix + n in sd), None)
        if pooled is None:
            raise CheckpointError(f"stage {s} has no pooling or table keys to read its head dimension from; "
                                  "pass num_heads=...")
        head_dim = pooled.shape[0] if pooled.ndim == 4 else pooled.shape[1]
        heads.append(att_dim // head_dim)
        widths.append(sd[f"stages.{s}.blocks.{depths[s] - 1}.norm2.weight"].shape[0])
    c = proj.shape[0]
    if widths != [c * 2**i for i in range(len(stages))]:
        raise CheckpointError(f"the stages are {widths} wide; swinlab's MViTv2 builds widths doubling from "
                              f"the patch embedding's {c}")
    first = "stages.0.blocks.0."
    stride = overrides.get("patch_stride", 4)
    tables = [sd.get(first + f"attn.rel_pos_{a}") for a in "hw"]
    img_size = (tuple((t.shape[0] + 1) // 2 * stride for t in tables) if tables[0] is not None
                else (224, 224))
    pool = sd.get(first + "attn.pool_q.weight", sd.get(first + "attn.pool_k.weight"))
    head = sd.get("head.weight", sd.get("head.fc.weight"))
    fields = dict(
        img_size=img_size, patch_size=proj.shape[2], in_chans=proj.shape[1], embed_dim=c,
        depths=depths, num_heads=tuple(heads),
        mlp_ratio=sd[first + "mlp.fc1.weight"].shape[0] / sd[first + "norm2.weight"].shape[0],
        qkv_bias=first + "attn.qkv.bias" in sd,
        pool_kernel=pool.shape[-1] if pool is not None else 1,
        expand_attn=not any(".shortcut_proj_mlp." in k for k in sd),
        rel_pos=tables[0] is not None,
        class_token="cls_token" in sd,
        global_pool="token" if "cls_token" in sd else "avg",
        num_classes=head.shape[0] if head is not None else 0,
    )
    fields.update(overrides)
    return MViTConfig(**fields)
