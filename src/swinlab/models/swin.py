"""Swin Transformer (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021), with every switch of the paper's ablation table (Table 4), and Swin V2 (Liu et
al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022) as four config fields.

Patch partition 4×4 → linear embedding C → stages of ``depths`` blocks; between stages a patch
merging halves H and W and doubles C. Blocks alternate W-MSA and SW-MSA (Eq. 3)::

    ẑˡ = W-MSA(LN(zˡ⁻¹)) + zˡ⁻¹        zˡ = MLP(LN(ẑˡ)) + ẑˡ
    ẑˡ⁺¹ = SW-MSA(LN(zˡ)) + zˡ         zˡ⁺¹ = MLP(LN(ẑˡ⁺¹)) + ẑˡ⁺¹

Final LN → global average pool → linear head. Tokens flow channels-last, ``(B, H, W, C)``.

Swin V2 (the ``swinv2_*`` presets) changes the block to res-post-norm (``res_post_norm``: the LN moves
to the end of each residual branch, ``ẑˡ = LN(W-MSA(zˡ⁻¹)) + zˡ⁻¹``, and patch merging normalizes after
its projection), the logits to scaled cosine attention (``attention="cosine"``: ``cos(q, k)/τ`` with a
learned per-head τ ≥ 0.01, i.e. a logit scale clamped at log 100), the bias to the log-spaced
continuous position bias (``position="cpb"``, evaluated for the window in use and, for fine-tuned
models, normalized by the window it was pretrained with: ``pretrained_window_sizes``), and drops the
key bias (``k_bias=False``). The Table-4 switches that still mean something (``shift``,
``mask_shifted``, ``position="none"``/``"abs"``) apply to V2 as to V1.

Inputs of any size are accepted: the image is padded to a multiple of the patch, odd maps before a
merge are padded by one row/column, and maps that are not multiples of the window are zero-padded
at the bottom/right before the cyclic shift (as torchvision does). A stage whose map side is not
larger than the window shrinks the window to that side and drops the shift along it (as the
official code and timm do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..functional.pair import Pair
from ..functional.windows import SHIFT_ORDERS, WINDOW_FITS
from ..kernels import norm as norm_kernels
from ..layers import (
    AbsolutePositionEmbedding,
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    WindowAttention,
)
from ..layers.attention import ATTENTIONS
from ..layers.global_context import GlobalContextConfig, GlobalContextFusion
from ..layers.mlp import drop_path_rates
from ..layers.patch import PATCH_REMAINDERS, STEMS
from .base import Classifier
from .config import ConfigMixin, to_pair
from .registry import register

POSITIONS = ("rel", "none", "abs", "abs+rel", "rel-only", "cpb")



@dataclass(frozen=True)
class SwinConfig(ConfigMixin):
    img_size: Pair = (224, 224)  # the size it is built for (abs. position grid, profiling); any size runs
    patch_size: int = 4  # P of the P×P patch partition
    in_chans: int = 3  # image channels
    num_classes: int = 1000  # head outputs; 0 = no head (forward returns pooled features)
    embed_dim: int = 96  # C of stage 1
    depths: tuple[int, ...] = (2, 2, 6, 2)  # blocks per stage
    num_heads: tuple[int, ...] = (3, 6, 12, 24)  # attention heads per stage
    window_size: Pair = (7, 7)  # M
    mlp_ratio: float = 4.0  # MLP hidden width / C
    qkv_bias: bool = True  # biases on the q, k, v projection
    drop_rate: float = 0.0  # dropout before the head
    drop_path_rate: float = 0.1  # stochastic depth of the last block; rises linearly from 0
    patch_norm: bool = True  # LayerNorm after the patch embedding
    stem: str = "patch"  # patch (the paper's P×P projection) | conv (3×3 stride-2 convolutions, Xiao et al.)
    shift: bool = True  # Table 4 "shifted windows"; False = "w/o shifting"
    mask_shifted: bool = True  # mask cross-region pairs in shifted windows; False = attend without mask
    position: str = "rel"  # rel | none | abs | abs+rel | rel-only ("rel. pos. w/o app.")
    attention_backend: str = "auto"  # window-attention implementation, see swinlab.kernels
    linear_backend: str = "auto"  # linear-layer GEMMs: auto | torch | onednn (swinlab.kernels.linear)
    global_context: GlobalContextConfig | None = None  # cross-stage global context; None = off (the paper)
    window_fit: str = "axis"  # axis | min-side | pad | built: windows on small maps (functional.fit_window)
    shift_order: str = "pad-roll"  # pad-roll | roll-pad (timm): on maps padded to the windows
    patch_remainder: str = "pad"  # pad | drop (timm, torchvision): image rows/columns beyond a multiple of P
    attention: str = "dot"  # dot (V1: QKᵀ/√d) | cosine (V2: cos(q, k)·τ, learned per-head τ ≤ 100)
    res_post_norm: bool = False  # V2: LN at the end of each residual branch; merging normalizes after
    k_bias: bool = True  # with qkv_bias, a bias on k too (False in V2: q and v biases only)
    pretrained_window_sizes: tuple[int, ...] = ()  # per stage, the CPB's pretraining window (0: none)
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # free-form notes (e.g. source)

    def __post_init__(self):
        object.__setattr__(self, "img_size", to_pair(self.img_size))
        object.__setattr__(self, "window_size", to_pair(self.window_size))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        object.__setattr__(self, "global_context", GlobalContextConfig.parse(self.global_context))
        object.__setattr__(self, "pretrained_window_sizes", tuple(map(int, self.pretrained_window_sizes)))
        if self.pretrained_window_sizes and len(self.pretrained_window_sizes) != len(self.depths):
            raise ValueError(f"pretrained_window_sizes {self.pretrained_window_sizes} needs one entry per "
                             "stage "
                             f"({len(self.depths)}), or none")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.pretrained_window_sizes and any(self.pretrained_window_sizes) and self.position != "cpb":
            raise ValueError("pretrained_window_sizes applies to the continuous position bias only; "
                             "set position='cpb' or leave pretrained_window_sizes empty")
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} need one entry per stage")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if min(self.window_size) < 1 or self.patch_size < 1 or min(self.img_size) < 1:
            raise ValueError("window_size, patch_size and img_size must be positive")
        for i, h in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % h:
                raise ValueError(f"stage {i} width {self.embed_dim * 2**i} is not divisible by {h} heads")
        self._check_shared()
        if self.window_fit not in WINDOW_FITS:
            raise ValueError(f"window_fit must be one of {WINDOW_FITS}, got {self.window_fit!r}")
        if self.shift_order not in SHIFT_ORDERS:
            raise ValueError(f"shift_order must be one of {SHIFT_ORDERS}, got {self.shift_order!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.patch_remainder not in PATCH_REMAINDERS:
            raise ValueError(f"patch_remainder must be one of {PATCH_REMAINDERS}, "
                             f"got {self.patch_remainder!r}")

    @property
    def num_features(self) -> int:
        """Channels of the last stage."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


class SwinBlock(nn.Module):
    """Residual block: (S)W-MSA then MLP, each with stochastic depth; pre-norm (V1, Eq. 3) or
    res-post-norm (V2: ``x + LN(F(x))``)."""

    def __init__(self, *, dim: int, num_heads: int, window_size: Pair, shift_size: Pair,
                 drop_path: float, config: SwinConfig, pretrained_window: int = 0,
                 built_map: Pair | None = None):
        super().__init__()
        position = config.position
        self.res_post_norm = config.res_post_norm
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim=dim, num_heads=num_heads, window_size=window_size, shift_size=shift_size,
            qkv_bias=config.qkv_bias, k_bias=config.k_bias,
            rel_pos=position in ("rel", "abs+rel", "rel-only", "cpb"),
            position="cpb" if position == "cpb" else "table", attention=config.attention,
            pretrained_window=pretrained_window, built_map=built_map,
            use_qk=position != "rel-only", mask_shifted=config.mask_shifted, backend=config.attention_backend,
            window_fit=config.window_fit, shift_order=config.shift_order,
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * config.mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.res_post_norm:
            x = x + self.drop_path1(self.norm1(self.attn(x)))  # (B, H, W, C)
            return x + self.drop_path2(self.norm2(self.mlp(x)))  # (B, H, W, C)
        # x + F(LN₁(x)), then LN₂ of that sum: the add and the norm one pass in CPU inference (kernels.norm)
        branch = self.drop_path1(self.attn(norm_kernels.layer_norm(x, self.norm1)))  # (B, H, W, C)
        x, h = norm_kernels.add_layer_norm(x, branch, self.norm2)  # 2 × (B, H, W, C)
        return x + self.drop_path2(self.mlp(h))  # (B, H, W, C)


class SwinStage(nn.Module):
    """Optional patch merging (stages after the first), then blocks alternating W-MSA / SW-MSA."""

    def __init__(self, *, dim: int, out_dim: int, depth: int, num_heads: int, downsample: bool,
                 drop_path: list[float], config: SwinConfig, pretrained_window: int = 0,
                 built_map: Pair | None = None):
        super().__init__()
        self.downsample = PatchMerging(dim=dim, out_dim=out_dim, norm_after=config.res_post_norm) \
            if downsample else nn.Identity()
        m = config.window_size
        shifted = (m[0] // 2, m[1] // 2) if config.shift else (0, 0)
        self.blocks = nn.Sequential(*[
            SwinBlock(dim=out_dim, num_heads=num_heads, window_size=m,
                      shift_size=shifted if i % 2 else (0, 0),
                      drop_path=drop_path[i], config=config, pretrained_window=pretrained_window,
                      built_map=built_map)
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinTransformer(Classifier):
    """The Swin Transformer classifier. Build it from a :class:`SwinConfig` (kept as ``.config``)."""

    # position tables and embeddings, V2's continuous-bias MLP and temperatures (as timm, official code)
    no_weight_decay_suffixes = ("rel_pos.table", "pos_embed", "logit_scale", "rel_pos.mlp.0.weight",
                                "rel_pos.mlp.0.bias", "rel_pos.mlp.2.weight")

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.patch_embed = PatchEmbed(patch_size=config.patch_size, in_chans=config.in_chans,
                                      embed_dim=c, norm=config.patch_norm, remainder=config.patch_remainder,
                                      stem=config.stem)
        grid = (-(-config.img_size[0] // config.patch_size), -(-config.img_size[1] // config.patch_size))
        self.abs_pos = (AbsolutePositionEmbedding(grid_size=grid, dim=c)
                        if config.position in ("abs", "abs+rel") else None)
        dpr = drop_path_rates(config.drop_path_rate, sum(config.depths))
        stages, start = [], 0
        pretrained = config.pretrained_window_sizes or (0,) * len(config.depths)
        # each stage's map at the built size, as transformers computes it (window_fit="built")
        built = [tuple(s // config.patch_size // 2**i for s in config.img_size)
                 for i in range(len(config.depths))]
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
            in_dim = c * 2 ** max(i - 1, 0)
            stages.append(SwinStage(dim=in_dim, out_dim=c * 2**i, depth=depth, num_heads=heads,
                                    downsample=i > 0, drop_path=dpr[start:start + depth], config=config,
                                    pretrained_window=pretrained[i], built_map=built[i]))
            start += depth
        self.stages = nn.ModuleList(stages)
        gc = config.global_context
        # after stage s+1 (s ≥ 1): K tokens of stage s, K/4 per further stage
        self.global_context = nn.ModuleList([
            GlobalContextFusion(dim=c * 2**i, context_dim=c * 2 ** (i - 1), num_heads=config.num_heads[i],
                                tokens=max(1, gc.tokens // 4 ** (i - 1)), fusion=gc.fusion,
                                sampler=gc.sampler)
            for i in range(1, len(stages))
        ]) if gc is not None else None
        self.num_features = config.num_features
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = self._make_head(config.num_classes)
        self._finish_init()
        for fusion in self.global_context or []:
            fusion.reset_fusion()
        if config.res_post_norm:  # V2 starts every residual branch at zero (as the official code and timm)
            for stage in self.stages:
                for block in stage.blocks:
                    for norm in (block.norm1, block.norm2):
                        nn.init.zeros_(norm.weight)
                        nn.init.zeros_(norm.bias)

    # --- the classifier API shared by every family -------------------------------------------
    def forward_features(self, x: torch.Tensor, embed_hook=None) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` → normalized last-stage tokens ``(B, H/32, W/32, 8C)``.

        ``embed_hook``: a function of the patch tokens ``(B, H/P, W/P, C)`` applied right after the patch
        embedding, before any position embedding (masked image modelling puts its mask token there).
        """
        x = self._embed(x, embed_hook)
        for i in range(len(self.stages)):
            x = self._stage(i, x)
        return norm_kernels.layer_norm(x, self.norm)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``(B, H, W, C)`` → global average pool ``(B, C)`` → logits (unless ``pre_logits``)."""
        x = self.head_drop(x.mean(dim=(1, 2)))  # (B, C)
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, norm: bool = False) -> list[torch.Tensor]:
        """The output of every stage as an NCHW map (strides P, 2P, 4P, ...: 4/8/16/32 for P=4).

        Args:
            x: images ``(B, C_in, H, W)``.
            norm: apply the final LayerNorm to the last map (as ``forward_features`` does).
        """
        x = self._embed(x)
        maps = []
        for i in range(len(self.stages)):
            x = self._stage(i, x)
            y = self.norm(x) if norm and i == len(self.stages) - 1 else x
            maps.append(y.permute(0, 3, 1, 2).contiguous())  # (B, C_i, H_i, W_i)
        return maps

    def set_window_fit(self, rule: str) -> None:
        """Where the shift is dropped on maps not larger than the window: ``"axis"`` (swinlab's default,
        as torchvision and the official code) or ``"min-side"`` (Hugging Face transformers; set by
        ``weights.load(..., source="hf")``); recorded in ``config.window_fit``."""
        self.set_peer_geometry(window_fit=rule)

    def set_peer_geometry(self, *, window_fit: str | None = None, shift_order: str | None = None,
                          patch_remainder: str | None = None) -> None:
        """Answer as a peer library does where the libraries differ (see ``SwinConfig.window_fit``,
        ``shift_order`` and ``patch_remainder``); set by ``weights.load(..., source=...)`` and recorded
        in the config."""
        changes = {k: v for k, v in {"window_fit": window_fit, "shift_order": shift_order,
                                     "patch_remainder": patch_remainder}.items() if v is not None}
        self.config = self.config.replace(**changes)  # validates the names
        if patch_remainder is not None:
            self.patch_embed.remainder = patch_remainder
        for m in self.modules():
            if isinstance(m, WindowAttention):
                for k, v in changes.items():
                    if k != "patch_remainder":
                        setattr(m, k, v)

    def set_attention_backend(self, backend: str) -> None:
        """Switch every window attention to ``backend`` (see :mod:`swinlab.kernels`)."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.set_backend(backend)
        self.config = self.config.replace(attention_backend=backend)

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i`` on its input ``x``, then (with the extension) the global context from ``x``."""
        y = self.stages[i](x)
        if self.global_context is not None and i > 0:
            y = self.global_context[i - 1](y, x)
        return y

    def _embed(self, x: torch.Tensor, hook=None) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, H/P, W/P, C)
        if hook is not None:
            x = hook(x)
        return self.abs_pos(x) if self.abs_pos is not None else x

    @property
    def stride(self) -> int:
        """Input pixels per last-stage token along each side: ``P · 2^(stages-1)``."""
        return self.config.patch_size * 2 ** (len(self.stages) - 1)




# --- presets (Table 1 of the paper; drop_path_rate as in the official configs) ----------------
_PRESETS: dict[str, tuple[SwinConfig, str]] = {
    "swin_t": (SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
               "Swin-T, 224², M=7: 28.3M params, 4.5G MACs"),
    "swin_s": (SwinConfig(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
               "Swin-S, 224², M=7: 49.6M params, 8.7G MACs"),
    "swin_b": (SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
               "Swin-B, 224², M=7: 87.8M params, 15.4G MACs"),
    "swin_l": (SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.2),
               "Swin-L, 224², M=7: 197M params, 34.5G MACs"),
    "swin_b_384": (SwinConfig(img_size=384, window_size=12, embed_dim=128, depths=(2, 2, 18, 2),
                              num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
                   "Swin-B, 384², M=12: 87.9M params, 47.0G MACs"),
    "swin_l_384": (SwinConfig(img_size=384, window_size=12, embed_dim=192, depths=(2, 2, 18, 2),
                              num_heads=(6, 12, 24, 48), drop_path_rate=0.2),
                   "Swin-L, 384², M=12: 197M params, 103.9G MACs"),
    # Small images (Fashion-MNIST, 28×28×1): patch 2 → 14×14 tokens, three stages 14² → 7² → 4².
    "swin_micro_28": (SwinConfig(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=64,
                                 depths=(2, 4, 2), num_heads=(2, 4, 8), window_size=7, drop_path_rate=0.1),
                      "a small Swin for 28×28 single-channel images (Fashion-MNIST)"),
    # The demo's model: swin_micro_28 at half the width and 2-2-2 blocks, ≈ 2.5× its training throughput on
    # a 2-core CPU (bf16-mixed: ≈ 1,000 against 430 images/s), so two epochs of Fashion-MNIST fit the demo.
    "swin_nano_28": (SwinConfig(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=32,
                                depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=7, drop_path_rate=0.0),
                     "a smaller Swin for 28×28 single-channel images (the first demo's)"),
    # The demo's model: a convolutional stem (two 3×3 stride-2 convolutions, Xiao et al. 2021) to 7×7 tokens,
    # 4×4 windows (stage 1 padded to 8×8: 4 windows, one shifted block), width 32 with 16-wide heads. In the
    # demo's 3-minute budget (2-core Xeon, bf16-mixed) the conv stem is worth about 1.6 points over the patch
    # stem (89.5% against 87.9% top-1 at width 48, 2 epochs), and width 32 trains ~1.3× faster per image
    # than 48, which buys the epochs (the demo recipe's docstring has the runs).
    "swin_demo_28": (SwinConfig(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=32,
                                depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4, stem="conv",
                                drop_path_rate=0.0),
                     "a small Swin for 28×28 grayscale: conv stem to 7×7 tokens, window 4 (the demo's)"),
    # The ablation study's model (issue 11): swin_micro_28 with 4×4 windows, so windows and shifts act in
    # 6 of its 8 blocks (stage 1: 14×14 tokens padded to 16 windows; stage 2: 7×7 padded to 4 windows;
    # stage 3: 4×4, one window) where window 7 gives one window in every stage but the first.
    "swin_study_28": (SwinConfig(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=64,
                                 depths=(2, 4, 2), num_heads=(2, 4, 8), window_size=4, drop_path_rate=0.1),
                      "swin_micro_28 with 4×4 windows: the ablation study's (windows in 6 of 8 blocks)"),
    # A tiny model for tests and CPU experiments on 32×32 inputs.
    "swin_pico": (SwinConfig(img_size=32, patch_size=2, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                             window_size=4, num_classes=10, drop_path_rate=0.0),
                  "a tiny two-stage Swin for tests (32×32, M=4)"),
}

# Swin V2 (Liu et al., CVPR 2022): res-post-norm, scaled cosine attention, log-spaced continuous position
# bias, q/v biases, merging that normalizes after projecting. 256², window 8 (the official models, as timm's
# swinv2_*_window8_256); window 16; and the ImageNet-22k models pretrained at 192² with window 12 and
# fine-tuned at 256² / 384² with windows 16 / 24, whose CPB is normalized by the pretraining window
# (pretrained_window_sizes: 12 in stages 1-3, 6 in stage 4, whose 6×6 map held the whole 12-window).
_V2 = SwinConfig(img_size=256, window_size=8, position="cpb", attention="cosine", res_post_norm=True,
                 k_bias=False)
_V2_DEPTHS = {"t": ((2, 2, 6, 2), 96, (3, 6, 12, 24), 0.2), "s": ((2, 2, 18, 2), 96, (3, 6, 12, 24), 0.3),
              "b": ((2, 2, 18, 2), 128, (4, 8, 16, 32), 0.5), "l": ((2, 2, 18, 2), 192, (6, 12, 24, 48), 0.2)}
_V2_MEASURED = {  # swinlab's counts at the preset's size (the papers' figures: tests/test_swin_v2.py)
    "swinv2_t": "28.3M params, 5.9G MACs", "swinv2_s": "49.7M params, 11.5G MACs",
    "swinv2_b": "87.9M params, 20.3G MACs", "swinv2_t_w16": "28.3M params, 6.6G MACs",
    "swinv2_s_w16": "49.7M params, 12.6G MACs", "swinv2_b_w16": "87.9M params, 21.8G MACs",
    "swinv2_b_w12_192": "87.9M params, 11.8G MACs", "swinv2_b_w12to16_256": "87.9M params, 21.8G MACs",
    "swinv2_b_w12to24_384": "87.9M params, 54.7G MACs", "swinv2_l_w12_192": "196.7M params, 26.0G MACs",
    "swinv2_l_w12to16_256": "196.7M params, 47.5G MACs", "swinv2_l_w12to24_384": "196.7M params, 115.4G MACs",
}
for _size, (_depths, _dim, _heads, _dpr) in _V2_DEPTHS.items():
    _base = _V2.replace(depths=_depths, embed_dim=_dim, num_heads=_heads, drop_path_rate=_dpr)
    _variants = {"": (256, 8, ()), "_w16": (256, 16, ())} if _size != "l" else {}
    if _size in ("b", "l"):
        _variants.update({"_w12_192": (192, 12, ()), "_w12to16_256": (256, 16, (12, 12, 12, 6)),
                          "_w12to24_384": (384, 24, (12, 12, 12, 6))})
    for _suffix, (_img, _window, _pretrained) in _variants.items():
        _name = f"swinv2_{_size}{_suffix}"
        _PRESETS[_name] = (
            _base.replace(img_size=_img, window_size=_window, pretrained_window_sizes=_pretrained),
            f"Swin V2-{_size.upper()}, {_img}², M={_window}: {_V2_MEASURED[_name]}"
            + (" (fine-tuned from M=12 at 192²)" if _pretrained else ""))
_PRESETS["swinv2_pico"] = (_PRESETS["swin_pico"][0].replace(position="cpb", attention="cosine",
                                                             res_post_norm=True, k_bias=False),
                           "a tiny two-stage Swin V2 for tests (32×32, M=4)")

# The global-context extension (see swinlab.layers.global_context).
_PRESETS["swin_t_gc"] = (_PRESETS["swin_t"][0].replace(global_context=GlobalContextConfig()),
                         "Swin-T + cross-stage global context (add, random sampler, K=196/49/12)")
_PRESETS["swin_micro_28_gc"] = (
    _PRESETS["swin_micro_28"][0].replace(global_context=GlobalContextConfig(tokens=49)),
    "swin_micro_28 + cross-stage global context (add, random sampler, K=49/12)")

_PRESETS["swin_study_28_gc"] = (
    _PRESETS["swin_study_28"][0].replace(global_context=GlobalContextConfig(tokens=49)),
    "swin_study_28 + cross-stage global context (add, random sampler, K=49/12): stage 2 and 3 queries "
    "attend to tokens sampled from the 16- and 4-window maps before them")

for _name, (_config, _doc) in _PRESETS.items():
    register(_name, _config, SwinTransformer, _doc)
