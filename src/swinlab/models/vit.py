"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) and its
data-efficient training variants DeiT (Touvron et al., ICML 2021), the global-attention baselines of
the Swin paper's Table 1.

P×P patches → linear embedding C → prepend a learned class token → add a learned absolute position
embedding → ``depth`` pre-norm blocks (Eq. 2-3 of the ViT paper)::

    z'ˡ = MSA(LN(zˡ⁻¹)) + zˡ⁻¹        zˡ = MLP(LN(z'ˡ)) + z'ˡ

→ final LN → the class token (or the mean of the patch tokens) → linear head. Every token attends to
every token: the cost is quadratic in the number of patches, which Swin's windows make linear.

The position embedding of the patch grid is a :class:`~swinlab.layers.AbsolutePositionEmbedding`
``(1, H/P, W/P, C)``, resampled bicubically for inputs of another size; the class token's own
position embedding is ``cls_pos`` ``(1, 1, C)`` (timm keeps both in one ``(1, 1+N, C)`` tensor;
:mod:`swinlab.weights` splits it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..functional.pair import Pair
from ..layers import AbsolutePositionEmbedding, Attention, DropPath, Mlp, PatchEmbed
from ..layers.mlp import drop_path_rates
from .base import Classifier
from .config import ConfigMixin, to_pair
from .registry import register

LN_EPS = 1e-6  # the reference (big_vision / timm) ViT LayerNorm epsilon



@dataclass(frozen=True)
class ViTConfig(ConfigMixin):
    img_size: Pair = (224, 224)  # the size it is built for (position grid, profiling); any size runs
    patch_size: int = 16  # P of the P×P patches
    in_chans: int = 3  # image channels
    num_classes: int = 1000  # head outputs; 0 = no head (forward returns pooled features)
    embed_dim: int = 768  # C, the width of every block
    depth: int = 12  # number of transformer blocks
    num_heads: int = 12  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / C
    qkv_bias: bool = True  # biases on the q, k, v projection
    drop_rate: float = 0.0  # dropout before the head
    drop_path_rate: float = 0.0  # stochastic depth of the last block; rises linearly from 0
    class_token: bool = True  # prepend a learned class token
    linear_backend: str = "auto"  # linear-layer GEMMs: auto | torch | onednn (swinlab.kernels.linear)
    global_pool: str = "token"  # "token": classify the class token; "avg": the mean of the patch tokens
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # free-form notes (e.g. source)

    def __post_init__(self):
        object.__setattr__(self, "img_size", to_pair(self.img_size))
        if self.patch_size < 1 or min(self.img_size) < 1 or self.depth < 1:
            raise ValueError(f"patch_size {self.patch_size}, img_size {self.img_size} and depth "
                             f"{self.depth} must be positive")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        self._check_shared()

    @property
    def grid_size(self) -> Pair:
        """Patches per side at ``img_size`` (padded up, as :class:`PatchEmbed` pads)."""
        return (-(-self.img_size[0] // self.patch_size), -(-self.img_size[1] // self.patch_size))


class ViTBlock(nn.Module):
    """Pre-norm residual block: global MSA then MLP, each with stochastic depth (timm's key names)."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))  # (B, N, C)
        return x + self.drop_path2(self.mlp(self.norm2(x)))  # (B, N, C)


class VisionTransformer(Classifier):
    """ViT / DeiT classifier. Build it from a :class:`ViTConfig` (kept as ``.config``)."""

    no_weight_decay_suffixes = ("pos_embed", "cls_pos", "cls_token")  # position embeddings, class token

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.patch_embed = PatchEmbed(patch_size=config.patch_size, in_chans=config.in_chans,
                                      embed_dim=c, norm=False)
        self.abs_pos = AbsolutePositionEmbedding(grid_size=config.grid_size, dim=c)
        self.num_prefix_tokens = int(config.class_token)
        if config.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
            self.cls_pos = nn.Parameter(torch.zeros(1, 1, c))  # the class token's position embedding
            nn.init.normal_(self.cls_token, std=1e-6)
            nn.init.trunc_normal_(self.cls_pos, std=0.02)
        else:
            self.cls_token = self.cls_pos = None
        dpr = drop_path_rates(config.drop_path_rate, config.depth)
        self.blocks = nn.Sequential(*[
            ViTBlock(dim=c, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
                     qkv_bias=config.qkv_bias, drop_path=dpr[i])
            for i in range(config.depth)
        ])
        self.num_features = c
        self.norm = nn.LayerNorm(c, eps=LN_EPS)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = self._make_head(config.num_classes)
        self._finish_init()

    # --- the classifier API shared by every family -------------------------------------------
    def forward_features(self, x: torch.Tensor, embed_hook=None) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` → normalized tokens ``(B, 1+N, C)`` (class token first).

        ``embed_hook``: a function of the patch tokens ``(B, H/P, W/P, C)`` applied right after the patch
        embedding, before the position embedding (masked image modelling puts its mask token there).
        """
        x = self.patch_embed(x)  # (B, H/P, W/P, C)
        if embed_hook is not None:
            x = embed_hook(x)
        x = self.abs_pos(x)
        x = x.flatten(1, 2)  # (B, N, C)
        if self.cls_token is not None:
            cls = (self.cls_token + self.cls_pos).expand(x.shape[0], -1, -1)  # (B, 1, C)
            x = torch.cat([cls.to(x.dtype), x], dim=1)  # (B, 1+N, C)
        return self.norm(self.blocks(x))

    @property
    def stride(self) -> int:
        """Input pixels per token along each side: the patch size."""
        return self.config.patch_size

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``(B, 1+N, C)`` → class token or mean patch token ``(B, C)`` → logits."""
        token = self.config.global_pool == "token"
        x = self.head_drop(x[:, 0] if token else x[:, self.num_prefix_tokens:].mean(dim=1))  # (B, C)
        return x if pre_logits else self.head(x)





# --- presets (ViT paper Table 1; DeiT paper Table 1, drop path 0.1 as in its recipe) ---------------
_B16 = ViTConfig(embed_dim=768, depth=12, num_heads=12)
_L16 = ViTConfig(embed_dim=1024, depth=24, num_heads=16)
_PRESETS: dict[str, tuple[ViTConfig, str]] = {
    "vit_b16": (_B16, "ViT-B/16, 224²: 86.6M params, 17.6G MACs"),
    "vit_b16_384": (_B16.replace(img_size=384),
                    "ViT-B/16, 384²: 86.9M params, 55.5G MACs (Swin Table 1: 86M, 55.4G)"),
    "vit_l16": (_L16, "ViT-L/16, 224²: 304M params, 61.6G MACs"),
    "vit_l16_384": (_L16.replace(img_size=384),
                    "ViT-L/16, 384²: 304.7M params, 191.1G MACs (Swin Table 1: 307M, 190.7G)"),
    "deit_s": (ViTConfig(embed_dim=384, depth=12, num_heads=6, drop_path_rate=0.1),
               "DeiT-S, 224²: 22.1M params, 4.6G MACs"),
    "deit_b": (_B16.replace(drop_path_rate=0.1),
               "DeiT-B, 224²: 86.6M params, 17.6G MACs (Swin Table 1: 86M, 17.5G)"),
    # Small images (Fashion-MNIST, 28×28×1): patch 4 → 7×7 tokens. vit_micro_28 has about the params of
    # swin_micro_28 / swin_study_28 (2.7M against 2.6M) and 1.46× their MACs (a plain ViT spends ~50 MACs per
    # parameter on 50 tokens where the hierarchical Swin spends ~36); vit_study_28 matches their MACs
    # instead (97M against 95M) with 0.71× the params: the study runs both.
    "vit_micro_28": (ViTConfig(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=192,
                               depth=6, num_heads=3, drop_path_rate=0.1),
                     "a small ViT for 28×28 single-channel images (Fashion-MNIST): 2.7M params, 0.14G MACs"),
    "vit_study_28": (ViTConfig(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=160,
                               depth=6, num_heads=5, drop_path_rate=0.1),
                     "vit_micro_28 at width 160 (32-wide heads): swin_study_28's MACs; 1.9M params, "
                     "0.10G MACs"),
    # A tiny model for tests and CPU experiments on 32×32 inputs.
    "vit_pico": (ViTConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2, num_heads=2),
                 "a tiny ViT for tests (32×32, patch 4)"),
}

for _name, (_config, _doc) in _PRESETS.items():
    register(_name, _config, VisionTransformer, _doc)
