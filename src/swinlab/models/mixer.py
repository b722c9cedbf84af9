"""MLP-Mixer (Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", NeurIPS 2021),
and the two all-MLP models built on the same patch-sequence skeleton (``MixerConfig.block``):
ResMLP (Touvron et al., "ResMLP: Feedforward networks for image classification with data-efficient
training", 2021) and gMLP (Liu et al., "Pay Attention to MLPs", NeurIPS 2021).

P×P patches → linear embedding C → ``depth`` Mixer layers, each a token-mixing MLP (shared across
channels, mixing the S patches: S → D_S → S) and a channel-mixing MLP (shared across patches,
C → D_C → C), both pre-norm with a residual (Eq. 1 of the paper)::

    U_{*,i} = X_{*,i} + W₂ σ(W₁ LN(X)_{*,i})     for i = 1..C    (token mixing)
    Y_{j,*} = U_{j,*} + W₄ σ(W₃ LN(U)_{j,*})     for j = 1..S    (channel mixing)

→ final LN → global average pool → linear head. Parameter names are timm's ``MlpMixer``
(``stem.proj``, ``blocks.i.{norm1, mlp_tokens, norm2, mlp_channels}``, ``norm``, ``head``).

ResMLP (``block="resmlp"``) replaces each LayerNorm by a per-channel affine map ``Aff(x) = α⊙x + β``,
mixes tokens with one linear layer ``S → S`` (no MLP), and scales both residual branches by a learned
per-channel LayerScale (``ls1``, ``ls2``, initialized to ``layer_scale_init``)::

    Z = X + ls1 ⊙ (A Aff₁(X)ᵀ)ᵀ,      Y = Z + ls2 ⊙ MLP(Aff₂(Z))

gMLP (``block="gmlp"``) has one branch per block: LN, a channel projection to ``D_C`` with GELU, the
spatial gating unit (split the ``D_C`` channels in halves u, v; ``s(v) = W LN(v) + b`` mixes v across
the S tokens, initialized to ``W ≈ 0, b = 1``; output ``u ⊙ s(v)``), and a projection back to C::

    Y = X + W₂ SGU(σ(W₁ LN(X)))

Parameter names are timm's for all three (``blocks.i.{norm1, linear_tokens, norm2, mlp_channels, ls1,
ls2}`` with ``.alpha``/``.beta`` affine norms for ResMLP; ``blocks.i.{norm, mlp_channels.{fc1, gate.norm,
gate.proj, fc2}}`` for gMLP), so timm's ``resmlp_*`` and ``gmlp_*`` weights load by name.

The token-mixing weights are sized for S = (H/P)·(W/P) patches, so a model takes only images that
give the patch grid of its ``img_size``; build it with another ``img_size`` for other inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..functional.pair import Pair
from ..layers import DropPath, Linear, Mlp, PatchEmbed
from ..layers.mlp import drop_path_rates
from .base import Classifier
from .config import ConfigMixin, to_pair
from .registry import register

LN_EPS = 1e-6  # the reference (big_vision / timm) Mixer LayerNorm epsilon (gMLP's too)
BLOCKS = ("mixer", "resmlp", "gmlp")



@dataclass(frozen=True)
class MixerConfig(ConfigMixin):
    img_size: Pair = (224, 224)  # the size it is built for: fixes the number of patches S
    patch_size: int = 16  # P of the P×P patches
    in_chans: int = 3  # image channels
    num_classes: int = 1000  # head outputs; 0 = no head (forward returns pooled features)
    embed_dim: int = 768  # C, the hidden width of every layer
    depth: int = 12  # number of Mixer layers
    mlp_ratio: float = 4.0  # D_C / C: hidden width of the channel-mixing MLP
    token_mlp_ratio: float = 0.5  # D_S / C: hidden width of the token-mixing MLP (of C, as in Table 1)
    drop_rate: float = 0.0  # dropout before the head
    drop_path_rate: float = 0.0  # stochastic depth of the last layer; rises linearly from 0
    linear_backend: str = "auto"  # linear-layer GEMMs: auto | torch | onednn (swinlab.kernels.linear)
    block: str = "mixer"  # mixer | resmlp | gmlp (see the module doc)
    layer_scale_init: float = 1e-4  # ResMLP: the initial LayerScale (0.1 for 12 blocks, 1e-5 for 24)
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # free-form notes (e.g. source)

    def __post_init__(self):
        object.__setattr__(self, "img_size", to_pair(self.img_size))
        if self.patch_size < 1 or min(self.img_size) < 1 or self.depth < 1 or self.embed_dim < 1:
            raise ValueError(f"patch_size {self.patch_size}, img_size {self.img_size}, depth {self.depth} "
                             f"and embed_dim {self.embed_dim} must be positive")
        if self.channel_mlp_dim < 1 or self.token_mlp_dim < 1:
            raise ValueError(f"mlp_ratio {self.mlp_ratio} and token_mlp_ratio {self.token_mlp_ratio} give "
                             f"hidden widths D_C={self.channel_mlp_dim}, D_S={self.token_mlp_dim}; "
                             "both must be at least 1")
        self._check_shared()
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.block == "gmlp" and self.channel_mlp_dim % 2:
            raise ValueError(f"gMLP splits its D_C={self.channel_mlp_dim} channels in halves: make "
                             "embed_dim * mlp_ratio even")

    @property
    def grid_size(self) -> Pair:
        """Patches per side at ``img_size`` (padded up, as :class:`PatchEmbed` pads)."""
        return (-(-self.img_size[0] // self.patch_size), -(-self.img_size[1] // self.patch_size))

    @property
    def num_patches(self) -> int:
        """S, the sequence length the token-mixing MLP is built for."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def token_mlp_dim(self) -> int:
        """D_S."""
        return int(self.embed_dim * self.token_mlp_ratio)

    @property
    def channel_mlp_dim(self) -> int:
        """D_C."""
        return int(self.embed_dim * self.mlp_ratio)


class MixerBlock(nn.Module):
    """One Mixer layer: token mixing on the transposed tokens, then channel mixing (Eq. 1)."""

    def __init__(self, *, dim: int, num_tokens: int, token_mlp_dim: int, channel_mlp_dim: int,
                 drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp_tokens = Mlp(in_features=num_tokens, hidden_features=token_mlp_dim)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp_channels = Mlp(in_features=dim, hidden_features=channel_mlp_dim)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.mlp_tokens(self.norm1(x).transpose(1, 2))  # (B, C, S): one MLP over S per channel
        x = x + self.drop_path1(mixed.transpose(1, 2))  # (B, S, C)
        return x + self.drop_path2(self.mlp_channels(self.norm2(x)))  # (B, S, C)


class Affine(nn.Module):
    """ResMLP's normalization: ``α ⊙ x + β`` per channel (no statistics), ``α = 1, β = 0`` at init."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class ResMLPBlock(nn.Module):
    """One ResMLP layer: a linear token mixer and a channel MLP, each affine-normalized and LayerScaled."""

    def __init__(self, *, dim: int, num_tokens: int, channel_mlp_dim: int, layer_scale_init: float,
                 drop_path: float):
        super().__init__()
        self.norm1 = Affine(dim)
        self.linear_tokens = Linear(num_tokens, num_tokens)
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(in_features=dim, hidden_features=channel_mlp_dim)
        self.ls1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.ls2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.linear_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # (B, S, C)
        x = x + self.drop_path(self.ls1 * mixed)
        return x + self.drop_path(self.ls2 * self.mlp_channels(self.norm2(x)))  # (B, S, C)


class SpatialGatingUnit(nn.Module):
    """gMLP's gate: ``u ⊙ (W LN(v) + b)`` with ``[u, v]`` the halves of the channels and W mixing tokens."""

    def __init__(self, *, dim: int, num_tokens: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim // 2)  # timm's default epsilon (1e-5) here
        self.proj = Linear(num_tokens, num_tokens)

    def reset_parameters(self) -> None:
        """The paper's init: W near zero and b = 1, so each block starts close to an MLP."""
        nn.init.normal_(self.proj.weight, std=1e-6)
        nn.init.ones_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = x.chunk(2, dim=-1)  # 2 × (B, S, D/2)
        v = self.proj(self.norm(v).transpose(1, 2)).transpose(1, 2)  # mixed across the S tokens
        return u * v


class GatedMlp(nn.Module):
    """``fc2(SGU(GELU(fc1(x))))``: C → D_C → (gate) D_C/2 → C."""

    def __init__(self, *, dim: int, hidden: int, num_tokens: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.gate = SpatialGatingUnit(dim=hidden, num_tokens=num_tokens)
        self.fc2 = Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.gate(self.act(self.fc1(x))))


class GMLPBlock(nn.Module):
    """One gMLP layer: ``x + GatedMlp(LN(x))``."""

    def __init__(self, *, dim: int, num_tokens: int, channel_mlp_dim: int, drop_path: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp_channels = GatedMlp(dim=dim, hidden=channel_mlp_dim, num_tokens=num_tokens)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp_channels(self.norm(x)))  # (B, S, C)


def _block(config: MixerConfig, drop_path: float) -> nn.Module:
    c, s = config.embed_dim, config.num_patches
    if config.block == "resmlp":
        return ResMLPBlock(dim=c, num_tokens=s, channel_mlp_dim=config.channel_mlp_dim,
                           layer_scale_init=config.layer_scale_init, drop_path=drop_path)
    if config.block == "gmlp":
        return GMLPBlock(dim=c, num_tokens=s, channel_mlp_dim=config.channel_mlp_dim, drop_path=drop_path)
    return MixerBlock(dim=c, num_tokens=s, token_mlp_dim=config.token_mlp_dim,
                      channel_mlp_dim=config.channel_mlp_dim, drop_path=drop_path)


class MlpMixer(Classifier):
    """The MLP-Mixer classifier. Build it from a :class:`MixerConfig` (kept as ``.config``)."""

    def __init__(self, config: MixerConfig):
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.stem = PatchEmbed(patch_size=config.patch_size, in_chans=config.in_chans, embed_dim=c,
                               norm=False)
        dpr = drop_path_rates(config.drop_path_rate, config.depth)
        self.blocks = nn.Sequential(*[_block(config, dpr[i]) for i in range(config.depth)])
        self.num_features = c
        self.norm = Affine(c) if config.block == "resmlp" else nn.LayerNorm(c, eps=LN_EPS)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = self._make_head(config.num_classes)
        self._finish_init()
        for m in self.modules():
            if isinstance(m, SpatialGatingUnit):
                m.reset_parameters()

    # --- the classifier API shared by every family -------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` → normalized patch tokens ``(B, S, C)``, row-major."""
        self._check_size(x)
        x = self.stem(x).flatten(1, 2)  # (B, S, C)
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``(B, S, C)`` → global average pool ``(B, C)`` → logits (unless ``pre_logits``)."""
        x = self.head_drop(x.mean(dim=1))  # (B, C)
        return x if pre_logits else self.head(x)

    def _check_size(self, x: torch.Tensor) -> None:
        """The token-mixing MLPs are sized for one patch grid: fail early on images of another."""
        if x.ndim != 4:
            return  # PatchEmbed names the expected shape
        cfg, p = self.config, self.config.patch_size
        grid = (-(-x.shape[2] // p), -(-x.shape[3] // p))
        if grid != cfg.grid_size:
            (gh, gw), (h, w) = cfg.grid_size, cfg.img_size
            raise ValueError(
                f"this MLP-Mixer was built for img_size={cfg.img_size}: its token-mixing MLPs take a "
                f"{gh}×{gw} grid of {p}×{p} patches ({cfg.num_patches} tokens); a {x.shape[2]}×{x.shape[3]} "
                f"image gives {grid[0]}×{grid[1]}. Resize the input to {h}×{w} (sides up to {p - 1} "
                f"pixels smaller are padded to the same grid), or build the model with "
                f"img_size=({x.shape[2]}, {x.shape[3]}) and train it at that size.")




# --- presets (Table 1 of the paper: C, D_S, D_C, layers; D_S = C/2 and D_C = 4C throughout) ---------
_S = MixerConfig(embed_dim=512, depth=8)
_B = MixerConfig(embed_dim=768, depth=12)
_L = MixerConfig(embed_dim=1024, depth=24)
_H = MixerConfig(embed_dim=1280, depth=32)
_PRESETS: dict[str, tuple[MixerConfig, str]] = {
    "mixer_s32": (_S.replace(patch_size=32), "Mixer-S/32, 224²: 19M params (no head), 1.0G MACs"),
    "mixer_s16": (_S.replace(patch_size=16), "Mixer-S/16, 224²: 18M params (no head), 3.8G MACs"),
    "mixer_b32": (_B.replace(patch_size=32), "Mixer-B/32, 224²: 60M params (no head), 3.2G MACs"),
    "mixer_b16": (_B.replace(patch_size=16), "Mixer-B/16, 224²: 59M params (no head), 12.6G MACs"),
    "mixer_l32": (_L.replace(patch_size=32), "Mixer-L/32, 224²: 206M params (no head), 11.3G MACs"),
    "mixer_l16": (_L.replace(patch_size=16), "Mixer-L/16, 224²: 207M params (no head), 44.5G MACs"),
    "mixer_h14": (_H.replace(patch_size=14), "Mixer-H/14, 224²: 431M params (no head), 121G MACs"),
    # ResMLP (Table 1 of its paper; LayerScale 0.1 for 12 blocks, 1e-5 for 24, as timm) and gMLP
    # (Table 1 of its paper: depth 30, D_C = 6C), 224², patch 16.
    "resmlp_s12": (_B.replace(block="resmlp", embed_dim=384, depth=12, layer_scale_init=0.1),
                   "ResMLP-S12, 224²: 15M params, 3.0G MACs"),
    "resmlp_s24": (_B.replace(block="resmlp", embed_dim=384, depth=24, layer_scale_init=1e-5),
                   "ResMLP-S24, 224²: 30M params, 6.0G MACs"),
    "gmlp_ti": (_B.replace(block="gmlp", embed_dim=128, depth=30, mlp_ratio=6.0),
                "gMLP-Ti, 224²: 6M params, 1.4G MACs"),
    "gmlp_s": (_B.replace(block="gmlp", embed_dim=256, depth=30, mlp_ratio=6.0),
               "gMLP-S, 224²: 20M params, 4.5G MACs"),
    # Small images (Fashion-MNIST, 28×28×1): patch 4 → 7×7 tokens. mixer_micro_28 has about the params of
    # swin_micro_28 / swin_study_28 (2.5M against 2.6M) and 1.37× their MACs; mixer_study_28 matches their
    # MACs (95M) with 0.68× the params: the study runs both.
    "mixer_micro_28": (MixerConfig(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=192,
                                   depth=8, drop_path_rate=0.1),
                       "a small MLP-Mixer for 28×28 single-channel images (Fashion-MNIST): 2.5M params, "
                       "0.13G MACs"),
    "mixer_study_28": (MixerConfig(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=164,
                                   depth=8, drop_path_rate=0.1),
                       "mixer_micro_28 at width 164: swin_study_28's MACs, 1.8M params, 0.095G MACs"),
    # A tiny model for tests and CPU experiments on 32×32 inputs.
    "mixer_pico": (MixerConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2),
                   "a tiny MLP-Mixer for tests (32×32, patch 4)"),
    "resmlp_pico": (MixerConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2,
                                block="resmlp", layer_scale_init=0.1),
                    "a tiny ResMLP for tests (32×32, patch 4)"),
    "gmlp_pico": (MixerConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2,
                              block="gmlp", mlp_ratio=6.0),
                  "a tiny gMLP for tests (32×32, patch 4)"),
}

for _name, (_config, _doc) in _PRESETS.items():
    register(_name, _config, MlpMixer, _doc)
