"""Converters from timm's ViT/DeiT (``VisionTransformer``) and ``MlpMixer`` (MLP-Mixer, ResMLP, gMLP)
state dicts to swinlab's.

Both families use timm's key names already (``patch_embed.proj``, ``blocks.i.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head``; Mixer's ``stem.proj``,
``blocks.i.{mlp_tokens, mlp_channels}``), so conversion is one reshape: timm's ViT ``pos_embed``
``(1, 1+N, C)`` splits into the class token's ``cls_pos`` ``(1, 1, C)`` and the patch grid's
``abs_pos.pos_embed`` ``(1, H/P, W/P, C)``. Variants swinlab does not build (register tokens,
distillation tokens, layer scale, q/k norms, pooling before the final norm) are refused by name
rather than loaded half-way.
"""

from __future__ import annotations

import math

import torch

from ..errors import CheckpointError, ConfigError

# timm key fragments of ViT variants that VisionTransformer does not build, and why.
_VIT_UNSUPPORTED = {
    "reg_token": "register tokens",
    "dist_token": "a distillation token (DeiT-distilled); use the non-distilled DeiT",
    "head_dist": "a distillation head (DeiT-distilled); use the non-distilled DeiT",
    ".ls1.": "layer scale",
    ".q_norm.": "q/k normalization",
    "fc_norm.": "a norm after pooling (global_pool='avg' with fc_norm); swinlab normalizes before pooling",
    "norm_pre.": "a norm before the blocks (CLIP-style pre_norm)",
    "attn_pool.": "attention pooling",
}


def detect_timm_family(sd: dict[str, torch.Tensor]) -> str | None:
    """``"vit"``, ``"mixer"`` or ``None`` (e.g. a Swin) for a timm state dict, from its keys."""
    if any(k in sd for k in ("blocks.0.mlp_tokens.fc1.weight", "blocks.0.linear_tokens.weight",
                             "blocks.0.mlp_channels.gate.proj.weight")):
        return "mixer"  # MLP-Mixer, ResMLP or gMLP: one swinlab family (MixerConfig.block)
    if "cls_token" in sd or "blocks.0.attn.qkv.weight" in sd:
        return "vit"
    return None


def from_timm_baseline(sd: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Rename a timm ViT/DeiT (``family="vit"``) or MLP-Mixer (``"mixer"``) state dict to swinlab's."""
    if family == "vit":
        return _from_timm_vit(sd)
    if family == "mixer":
        return {_strip_head_fc(k): v for k, v in sd.items()}
    raise ConfigError(f"unknown baseline family {family!r}; expected 'vit' or 'mixer'")


def _from_timm_vit(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    _refuse(sd, _VIT_UNSUPPORTED, "ViT")
    out = {_strip_head_fc(k): v for k, v in sd.items() if k != "pos_embed"}
    if "pos_embed" not in sd:
        raise CheckpointError("the timm ViT state dict has no 'pos_embed' "
                              "(no_pos_embed variants are not built)")
    pos = sd["pos_embed"]  # (1, prefix + N, C)
    prefix = int("cls_token" in sd)
    grid = pos[:, prefix:]  # (1, N, C)
    side = math.isqrt(grid.shape[1])
    if side * side != grid.shape[1]:
        raise CheckpointError(f"pos_embed has {grid.shape[1]} patch positions, not a square grid; "
                              "convert non-square grids by hand")
    out["abs_pos.pos_embed"] = grid.reshape(1, side, side, grid.shape[2])  # (1, H/P, W/P, C)
    if prefix:
        out["cls_pos"] = pos[:, :1]  # (1, 1, C)
    return out


def _strip_head_fc(k: str) -> str:
    """timm ≥ 0.9 may nest the classifier as ``head.fc``; swinlab's is ``head``."""
    return "head." + k[len("head.fc."):] if k.startswith("head.fc.") else k


def _refuse(sd: dict[str, torch.Tensor], unsupported: dict[str, str], family: str) -> None:
    for fragment, what in unsupported.items():
        hit = next((k for k in sd if fragment in k), None)
        if hit is not None:
            raise CheckpointError(f"the timm {family} checkpoint has {hit!r}: {what}, which swinlab's "
                                  f"{family} does not build")
