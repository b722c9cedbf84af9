"""MViTv2 (Li et al., "MViTv2: Improved Multiscale Vision Transformers for Classification and
Detection", CVPR 2022), the classification model as timm's ``mvitv2_*`` (and the official
facebookresearch/mvit code) build it.

A 7×7 convolution with stride 4 embeds the image into an ``H/4 × W/4`` map of C channels, then
stages of ``depths`` blocks; the first block of every stage after the first halves H and W by pooling
its queries, and (``expand_attn``) widens the channels to 2C inside its attention. A block is pre-norm::

    X' = pool(X) + PoolingAttention(LN(X))        Y = X' + MLP(LN(X'))

where *pooling attention* (Sec. 3 and Fig. 2 of the paper) projects Q, K, V from X, pools each with a
depthwise k×k convolution followed by a LayerNorm (``pool_q``/``norm_q``, ...: stride 2 on Q at a
stage's first block, stride 4/2/1/1 on K and V, adapted to the resolution), and computes (Eq. 3-4)::

    Z = Softmax((Q Kᵀ + E_rel) / √d) V + Q        E_rel[i, j] = Q_i · (R^h[h(i), h(j)] + R^w[w(i), w(j)])

with the *decomposed relative position embedding* (Sec. 3.1) — one table per axis, ``rel_pos_h`` and
``rel_pos_w`` — and the *residual pooling connection* ``+ Q`` (Sec. 3.2). As in the official code and
timm, ``E_rel`` is added to the already scaled ``Q Kᵀ / √d`` (the queries in it are not scaled). The
shortcut of a pooling block is a max-pool of the tokens (and, where the width changes, a linear
projection of the normalized tokens). Final LN → the mean of the tokens (or a class token) → head.

Tokens flow as ``(B, P+N, C)`` with their map size ``(H, W)`` beside them (``P`` = 1 with a class
token, which is never pooled and gets no relative position).

Input sizes: the relative-position tables are sized for ``img_size`` (timm's rule), and a map larger
than that along an axis would index past them. Any input whose maps fit is accepted (every side up to
``img_size`` for the presets, odd and non-square sizes included); a larger one is refused before the
forward pass with a :class:`~swinlab.errors.ConfigError` naming the largest size that works.
:func:`swinlab.weights.convert_mvit.resize_rel_pos` resamples the tables for a model built at another
size (timm's linear interpolation). Unlike timm, ``img_size`` may be non-square (each axis's table is
sized from its own side; at square sizes the two are the same), and one whose tables would not cover an
input of that very size (a side that is not a multiple of 32, where timm builds a model that then fails
on its own size) is refused when the model is built.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..functional.pair import Pair, round_up
from ..layers import DropPath, Linear, Mlp
from ..layers.mlp import drop_path_rates
from .base import Classifier
from .config import ConfigMixin, to_pair
from .registry import register

LN_EPS = 1e-6  # the official / timm MViTv2 LayerNorm epsilon


@dataclass(frozen=True)
class MViTConfig(ConfigMixin):
    img_size: Pair = (224, 224)  # the size it is built for: the rel-pos tables cover inputs up to it
    patch_size: int = 7  # k of the k×k convolutional patch embedding (padding k // 2)
    patch_stride: int = 4  # its stride: stage 1 runs at H/4 × W/4
    in_chans: int = 3  # image channels
    num_classes: int = 1000  # head outputs; 0 = no head (forward returns pooled features)
    embed_dim: int = 96  # C of stage 1; doubled at every later stage
    depths: tuple[int, ...] = (1, 2, 5, 2)  # blocks per stage
    num_heads: tuple[int, ...] = (1, 2, 4, 8)  # attention heads per stage
    mlp_ratio: float = 4.0  # MLP hidden width / C
    qkv_bias: bool = True  # biases on the q, k, v projection
    pool_kernel: int = 3  # k of the depthwise k×k convolutions pooling Q, K and V (odd)
    kv_stride: int = 4  # K/V pooling stride in stage 1, divided by every later stage's Q stride (≥ 1)
    expand_attn: bool = True  # widen C in the attention of a stage's first block (MViTv2, T/S/B);
    #                           False: in the MLP of the previous stage's last block (timm's mvitv2_large)
    residual_pooling: bool = True  # Sec. 3.2: add the pooled Q to the attention output
    rel_pos: bool = True  # Sec. 3.1: decomposed relative position embeddings; False: none
    class_token: bool = False  # prepend a class token (timm's *_cls variants); T/S/B have none
    global_pool: str = "avg"  # "avg": the mean of the patch tokens; "token": the class token
    drop_rate: float = 0.0  # dropout before the head
    drop_path_rate: float = 0.1  # stochastic depth of the last block; rises linearly from 0
    linear_backend: str = "auto"  # linear-layer GEMMs: auto | torch | onednn (swinlab.kernels.linear)
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # free-form notes (e.g. source)

    def __post_init__(self):
        object.__setattr__(self, "img_size", to_pair(self.img_size))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if len(self.depths) != len(self.num_heads) or not self.depths or min(self.depths) < 1:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} need one positive "
                             "entry per stage")
        if min(self.patch_size, self.patch_stride, self.embed_dim, self.in_chans, self.kv_stride) < 1:
            raise ValueError(f"patch_size {self.patch_size}, patch_stride {self.patch_stride}, embed_dim "
                             f"{self.embed_dim}, in_chans {self.in_chans} and kv_stride {self.kv_stride} "
                             "must be positive")
        if self.pool_kernel < 1 or self.pool_kernel % 2 == 0:
            raise ValueError(f"pool_kernel must be a positive odd number (the pooled Q then lines up with "
                             f"the max-pooled shortcut), got {self.pool_kernel}")
        smallest = self.patch_stride * 2 ** (len(self.depths) - 1)
        if min(self.img_size) < smallest:
            raise ValueError(f"img_size {self.img_size} is too small for {len(self.depths)} stages: the "
                             f"relative-position tables need sides of at least patch_stride·2^(stages-1) "
                             f"= {smallest}")
        for i, h in enumerate(self.num_heads):
            if h < 1 or (self.embed_dim * 2**i) % h:
                raise ValueError(f"stage {i} width {self.embed_dim * 2**i} is not divisible by {h} heads; "
                                 "change num_heads or embed_dim")
        self._check_shared()

    @property
    def num_features(self) -> int:
        """Channels of the last stage."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def q_strides(self) -> tuple[int, ...]:
        """Q pooling stride of each stage's first block: 1 in stage 1, then 2 (the paper's 4 → 32)."""
        return (1,) + (2,) * (len(self.depths) - 1)

    @property
    def kv_strides(self) -> tuple[int, ...]:
        """K/V pooling stride of each stage (every block): ``kv_stride`` divided by the Q strides so far."""
        strides, s = [], self.kv_stride
        for q in self.q_strides:
            s = max(s // q, 1) if q > 1 else s
            strides.append(s)
        return tuple(strides)


# --- the maths, as pure functions -----------------------------------------------------------------
def pooled_side(n: int, kernel: int, stride: int, padding: int) -> int:
    """Side of a map of side ``n`` after a convolution or max-pool (no dilation)."""
    return (n + 2 * padding - kernel) // stride + 1


def rel_pos_index(q: int, k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Rows ``(q, k)`` of an axis's relative-position table for ``q`` query and ``k`` key positions.

    Where Q and K are pooled to different sizes, the coarser grid is scaled to the finer's spacing
    (Sec. 3.1 of the paper, the official code): the offset of query ``i`` and key ``j`` is
    ``i·max(k/q, 1) − j·max(q/k, 1) + (k−1)·max(q/k, 1)`` (≥ 0), truncated to an int. It is computed
    with timm's own float32 operations, so every row is the one timm reads.
    """
    q_ratio, k_ratio = max(k / q, 1.0), max(q / k, 1.0)
    dist = (torch.arange(q, device=device, dtype=torch.long).unsqueeze(-1) * q_ratio
            - torch.arange(k, device=device, dtype=torch.long).unsqueeze(0) * k_ratio)  # (q, k) float32
    dist += (k - 1) * k_ratio
    return dist.long()


def rel_pos_rows_needed(q: int, k: int) -> int:
    """How many table rows ``rel_pos_index(q, k)`` reaches: its largest entry, at ``[q-1, 0]``, plus one.

    Plain Python (no tensor, so the input check costs nothing and ``torch.compile`` keeps one graph),
    rounding every step to float32 as :func:`rel_pos_index` computes it."""
    q_ratio, k_ratio = max(k / q, 1.0), max(q / k, 1.0)
    corner = _f32(_f32(q - 1) * _f32(q_ratio))  # i·max(k/q, 1) at i = q-1, minus 0 at j = 0
    return int(_f32(corner + _f32((k - 1) * k_ratio))) + 1


def _f32(v: float) -> float:
    """``v`` rounded to the nearest float32."""
    return struct.unpack("f", struct.pack("f", v))[0]


def add_decomposed_rel_pos(attn: torch.Tensor, q: torch.Tensor, q_size: Pair, k_size: Pair,
                           rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, prefix: int) -> torch.Tensor:
    """``attn + E_rel`` on the spatial tokens (Eq. 3): ``E_rel[i,j] = Q_i·(R^h[h(i),h(j)] + R^w[w(i),w(j)])``.

    Args:
        attn: attention logits ``(B, heads, P+Nq, P+Nk)``, ``Nq = qh·qw``, ``Nk = kh·kw``.
        q: the (pooled) queries ``(B, heads, P+Nq, d)``.
        q_size, k_size: ``(qh, qw)`` and ``(kh, kw)``.
        rel_pos_h, rel_pos_w: the tables ``(Lh, d)``, ``(Lw, d)``.
        prefix: ``P``, leading tokens without a position (the class token), left unchanged.

    Returns:
        The logits plus the decomposed relative position term, ``(B, heads, P+Nq, P+Nk)``.
    """
    (qh, qw), (kh, kw) = q_size, k_size
    r_h = rel_pos_h[rel_pos_index(qh, kh, q.device)]  # (qh, kh, d)
    r_w = rel_pos_w[rel_pos_index(qw, kw, q.device)]  # (qw, kw, d)
    b, heads, _, d = q.shape
    r_q = q[:, :, prefix:].reshape(b, heads, qh, qw, d)  # (B, heads, qh, qw, d)
    rel_h = torch.einsum("byhwc,hkc->byhwk", r_q, r_h)  # (B, heads, qh, qw, kh)
    rel_w = torch.einsum("byhwc,wkc->byhwk", r_q, r_w)  # (B, heads, qh, qw, kw)
    spatial = (attn[:, :, prefix:, prefix:].reshape(b, heads, qh, qw, kh, kw)
               + rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2))  # (B, heads, qh, qw, kh, kw)
    spatial = spatial.reshape(b, heads, qh * qw, kh * kw)  # (B, heads, Nq, Nk)
    if not prefix:
        return spatial
    left = torch.cat([attn[:, :, prefix:, :prefix], spatial], dim=-1)  # (B, heads, Nq, P+Nk)
    return torch.cat([attn[:, :, :prefix], left], dim=-2)  # (B, heads, P+Nq, P+Nk)


def pool_tokens(x: torch.Tensor, hw: Pair, pool: nn.Module, prefix: int) -> tuple[torch.Tensor, Pair]:
    """Pool the ``H×W`` map of tokens ``(B', P+H·W, C)`` with ``pool`` (a conv or max-pool on NCHW)
    → ``(B', P+H'·W', C)`` and ``(H', W')``; the ``P`` leading tokens pass through unpooled."""
    b, _, c = x.shape
    cls, x = x[:, :prefix], x[:, prefix:]
    x = x.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)  # (B', C, H, W)
    x = pool(x)  # (B', C, H', W')
    hw = (x.shape[2], x.shape[3])
    x = x.reshape(b, c, -1).transpose(1, 2)  # (B', H'·W', C)
    return (torch.cat([cls, x], dim=1) if prefix else x), hw


# --- modules (timm's key names) --------------------------------------------------------------------
class ConvPatchEmbed(nn.Module):
    """A k×k convolution with stride s and padding k // 2 (overlapping patches): ``(B, C_in, H, W)`` →
    tokens ``(B, H'·W', C)`` and ``(H', W')``. Only MViT embeds this way, so it lives here rather than
    in :mod:`swinlab.layers.patch` (whose P×P patches do not overlap and whose maps stay channels-last)."""

    def __init__(self, *, in_chans: int, embed_dim: int, kernel: int, stride: int):
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Pair]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}; "
                f"convert the input to {self.in_chans} channel(s) or build the model with "
                f"in_chans={x.shape[1] if x.ndim == 4 else '...'}")
        x = self.proj(x)  # (B, C, H', W')
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # (B, H'·W', C)


def _pool_conv(dim: int, kernel: int, stride: int) -> tuple[nn.Module | None, nn.Module | None]:
    """The depthwise conv pooling one of Q, K, V and the LayerNorm after it; none for a 1×1 stride 1."""
    if kernel == 1 and stride == 1:
        return None, None
    conv = nn.Conv2d(dim, dim, kernel, stride=stride, padding=kernel // 2, groups=dim, bias=False)
    return conv, nn.LayerNorm(dim, eps=LN_EPS)


class MultiScaleAttention(nn.Module):
    """Pooling attention (Fig. 2): project Q, K, V; pool each (conv + LN, shared by the heads); attend
    with the decomposed relative positions; add the pooled Q (residual pooling); project out.

    ``table_size`` gives the rows ``(Lh, Lw)`` of ``rel_pos_h`` / ``rel_pos_w`` (``None``: no tables).
    """

    def __init__(self, *, dim: int, dim_out: int, num_heads: int, qkv_bias: bool, kernel: int,
                 stride_q: int, stride_kv: int, table_size: Pair | None, prefix: int,
                 residual_pooling: bool):
        super().__init__()
        self.num_heads = num_heads
        self.dim_out = dim_out
        head_dim = dim_out // num_heads
        self.scale = head_dim**-0.5
        self.prefix = prefix
        self.residual_pooling = residual_pooling
        self.qkv = Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = Linear(dim_out, dim_out)
        self.pool_q, self.norm_q = _pool_conv(head_dim, kernel, stride_q)
        self.pool_k, self.norm_k = _pool_conv(head_dim, kernel, stride_kv)
        self.pool_v, self.norm_v = _pool_conv(head_dim, kernel, stride_kv)
        if table_size is not None:
            self.rel_pos_h = nn.Parameter(torch.zeros(table_size[0], head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(table_size[1], head_dim))
            nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
            nn.init.trunc_normal_(self.rel_pos_w, std=0.02)
        else:
            self.rel_pos_h = self.rel_pos_w = None

    def forward(self, x: torch.Tensor, hw: Pair) -> tuple[torch.Tensor, Pair]:
        """Tokens ``(B, P+H·W, C)`` of an ``H×W`` map → ``(B, P+H'·W', C_out)`` and the pooled size."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d)
        q, k, v = qkv.unbind(0)  # (B, heads, N, d) each
        q, q_hw = self._pool(q, hw, self.pool_q, self.norm_q)  # (B, heads, P+Nq, d)
        k, k_hw = self._pool(k, hw, self.pool_k, self.norm_k)  # (B, heads, P+Nk, d)
        v, _ = self._pool(v, hw, self.pool_v, self.norm_v)  # (B, heads, P+Nk, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, P+Nq, P+Nk)
        if self.rel_pos_h is not None:
            attn = add_decomposed_rel_pos(attn, q, q_hw, k_hw, self.rel_pos_h, self.rel_pos_w, self.prefix)
        x = attn.softmax(dim=-1) @ v  # (B, heads, P+Nq, d)
        if self.residual_pooling:
            x = x + q
        x = x.transpose(1, 2).reshape(b, -1, self.dim_out)  # (B, P+Nq, C_out)
        return self.proj(x), q_hw

    def _pool(self, t: torch.Tensor, hw: Pair, pool: nn.Module | None,
              norm: nn.Module | None) -> tuple[torch.Tensor, Pair]:
        """Pool every head's ``(P+H·W, d)`` tokens with the shared depthwise conv, then LayerNorm."""
        if pool is None:
            return t, hw
        b, heads, n, d = t.shape
        t, hw = pool_tokens(t.reshape(b * heads, n, d), hw, pool, self.prefix)  # (B·heads, P+N', d)
        return norm(t.reshape(b, heads, -1, d)), hw  # (B, heads, P+N', d)


class MultiScaleBlock(nn.Module):
    """Pre-norm block: pooling attention and MLP, each with stochastic depth; a max-pooled shortcut
    where Q is pooled, and a linear one (from the normalized tokens) where the width changes."""

    def __init__(self, *, dim: int, dim_out: int, num_heads: int, stride_q: int, stride_kv: int,
                 table_size: Pair | None, drop_path: float, prefix: int, config: MViTConfig):
        super().__init__()
        self.prefix = prefix
        att_dim = dim_out if config.expand_attn else dim
        widen = dim != dim_out
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.shortcut_proj_attn = Linear(dim, dim_out) if widen and config.expand_attn else None
        self.shortcut_pool_attn = (nn.MaxPool2d(stride_q + 1, stride_q, (stride_q + 1) // 2)
                                   if stride_q > 1 else None)
        self.attn = MultiScaleAttention(
            dim=dim, dim_out=att_dim, num_heads=num_heads, qkv_bias=config.qkv_bias,
            kernel=config.pool_kernel, stride_q=stride_q, stride_kv=stride_kv, table_size=table_size,
            prefix=prefix, residual_pooling=config.residual_pooling)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(att_dim, eps=LN_EPS)
        self.shortcut_proj_mlp = Linear(dim, dim_out) if widen and not config.expand_attn else None
        self.mlp = Mlp(in_features=att_dim, hidden_features=int(att_dim * config.mlp_ratio),
                       out_features=dim_out)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: Pair) -> tuple[torch.Tensor, Pair]:
        """Tokens ``(B, P+H·W, C)`` → ``(B, P+H'·W', C_out)`` and ``(H', W')``."""
        x_norm = self.norm1(x)
        # As the official code and timm: the shortcut is the un-normalized x unless it is projected.
        shortcut = x if self.shortcut_proj_attn is None else self.shortcut_proj_attn(x_norm)
        if self.shortcut_pool_attn is not None:
            shortcut, _ = pool_tokens(shortcut, hw, self.shortcut_pool_attn, self.prefix)  # (B, P+N', C')
        y, hw = self.attn(x_norm, hw)
        x = shortcut + self.drop_path1(y)  # (B, P+N', C')
        x_norm = self.norm2(x)
        shortcut = x if self.shortcut_proj_mlp is None else self.shortcut_proj_mlp(x_norm)
        return shortcut + self.drop_path2(self.mlp(x_norm)), hw


class MultiScaleStage(nn.Module):
    """``depth`` blocks; the first pools Q by ``stride_q``. ``grid`` is the map the stage is built for
    (``img_size // patch_stride`` at stage 1, floor-divided by the strides: timm's table sizes)."""

    def __init__(self, *, dim: int, dim_out: int, depth: int, num_heads: int, stride_q: int,
                 stride_kv: int, grid: Pair, drop_path: list[float], prefix: int, config: MViTConfig):
        super().__init__()
        out_dims = (dim_out,) * depth if config.expand_attn else (dim,) * (depth - 1) + (dim_out,)
        blocks = []
        for i in range(depth):
            s = stride_q if i == 0 else 1
            # rows 2·max(q, kv) - 1 per axis, q and kv the pooled sides of the built map
            table = tuple(2 * max(g // s, g // stride_kv) - 1 for g in grid) if config.rel_pos else None
            blocks.append(MultiScaleBlock(dim=dim, dim_out=out_dims[i], num_heads=num_heads, stride_q=s,
                                          stride_kv=stride_kv, table_size=table, drop_path=drop_path[i],
                                          prefix=prefix, config=config))
            dim = out_dims[i]
            grid = (grid[0] // s, grid[1] // s)
        self.blocks = nn.ModuleList(blocks)
        self.grid = grid

    def forward(self, x: torch.Tensor, hw: Pair) -> tuple[torch.Tensor, Pair]:
        for block in self.blocks:
            x, hw = block(x, hw)
        return x, hw


class MultiScaleViT(Classifier):
    """The MViTv2 classifier. Build it from an :class:`MViTConfig` (kept as ``.config``)."""

    no_weight_decay_suffixes = ("rel_pos_h", "rel_pos_w", "cls_token")  # position tables, class token

    def __init__(self, config: MViTConfig):
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.patch_embed = ConvPatchEmbed(in_chans=config.in_chans, embed_dim=c, kernel=config.patch_size,
                                          stride=config.patch_stride)
        self.num_prefix_tokens = int(config.class_token)
        if config.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        else:
            self.cls_token = None
        dpr = drop_path_rates(config.drop_path_rate, sum(config.depths))
        grid = (config.img_size[0] // config.patch_stride, config.img_size[1] // config.patch_stride)
        stages, start, dim, n = [], 0, c, len(config.depths)
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
            dim_out = c * 2 ** (i if config.expand_attn else min(i + 1, n - 1))
            stage = MultiScaleStage(dim=dim, dim_out=dim_out, depth=depth, num_heads=heads,
                                    stride_q=config.q_strides[i], stride_kv=config.kv_strides[i], grid=grid,
                                    drop_path=dpr[start:start + depth], prefix=self.num_prefix_tokens,
                                    config=config)
            stages.append(stage)
            start, dim, grid = start + depth, dim_out, stage.grid
        self.stages = nn.ModuleList(stages)
        self.num_features = dim
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = self._make_head(config.num_classes)
        self._finish_init()
        mh, mw = self.max_input_size()
        if mh < config.img_size[0] or mw < config.img_size[1]:
            unit = config.patch_stride * 2 ** (n - 1)
            raise ConfigError(
                f"img_size={config.img_size} does not fit its own relative-position tables (sized as timm "
                f"sizes them, from img_size // {config.patch_stride} floored at every stage): the model "
                f"would take inputs up to {mh}×{mw} only. Use sides that are multiples of {unit}, e.g. "
                f"img_size={(round_up(config.img_size[0], unit), round_up(config.img_size[1], unit))}.")

    # --- the classifier API shared by every family -------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` → normalized last-stage tokens ``(B, P+N, C)`` (class token first)."""
        x, hw = self._embed(x)
        for stage in self.stages:
            x, hw = stage(x, hw)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``(B, P+N, C)`` → the mean patch token or the class token ``(B, C)`` → logits."""
        token = self.config.global_pool == "token"
        x = self.head_drop(x[:, 0] if token else x[:, self.num_prefix_tokens:].mean(dim=1))  # (B, C)
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, norm: bool = False) -> list[torch.Tensor]:
        """The output of every stage as an NCHW map (strides 4, 8, 16, 32; class token dropped).

        Args:
            x: images ``(B, C_in, H, W)``.
            norm: apply the final LayerNorm to the last map (as ``forward_features`` does).
        """
        x, hw = self._embed(x)
        maps = []
        for i, stage in enumerate(self.stages):
            x, hw = stage(x, hw)
            y = self.norm(x) if norm and i == len(self.stages) - 1 else x
            y = y[:, self.num_prefix_tokens:].reshape(y.shape[0], hw[0], hw[1], -1)  # (B, H_i, W_i, C_i)
            maps.append(y.permute(0, 3, 1, 2).contiguous())  # (B, C_i, H_i, W_i)
        return maps

    # --- input sizes ----------------------------------------------------------------------------
    def max_input_size(self) -> Pair:
        """The largest ``(H, W)`` whose maps the relative-position tables cover (any smaller side works)."""
        return (self._max_side(0), self._max_side(1))

    def check_input_size(self, h: int, w: int) -> None:
        """Raise a :class:`ConfigError` for an ``h×w`` input whose maps the tables do not cover."""
        for axis, side in ((0, h), (1, w)):
            miss = self._table_miss(side, axis)
            if miss is not None:
                stage, block, q, k, rows = miss
                mh, mw = self.max_input_size()
                unit = self.config.patch_stride * 2 ** (len(self.stages) - 1)  # 32 for the presets
                fit = (round_up(max(h, mh), unit), round_up(max(w, mw), unit))
                raise ConfigError(
                    f"MViT built for img_size={self.config.img_size} takes inputs up to {mh}×{mw}: a "
                    f"{h}×{w} image gives {q} query and {k} key positions along the "
                    f"{('height', 'width')[axis]} in stage {stage + 1}, block {block + 1}, which need "
                    f"{rows[0]} rows of its relative-position table, and it has {rows[1]}. Resize the "
                    f"input to at most {mh}×{mw}, or build the model with img_size={fit} "
                    "(swinlab.weights.convert_mvit.resize_rel_pos resamples the tables "
                    "of weights of another size).")

    def _table_miss(self, side: int, axis: int) -> tuple[int, int, int, int, Pair] | None:
        """The first block whose table an image side of ``side`` pixels overruns along ``axis`` (0: H,
        1: W), as ``(stage, block, q, k, (rows needed, rows))``; ``None`` if every table covers it."""
        conv = self.patch_embed.proj
        n = pooled_side(side, conv.kernel_size[axis], conv.stride[axis], conv.padding[axis])
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                attn = block.attn
                q, k = (n if p is None else pooled_side(n, p.kernel_size[axis], p.stride[axis],
                                                        p.padding[axis])
                        for p in (attn.pool_q, attn.pool_k))
                table = (attn.rel_pos_h, attn.rel_pos_w)[axis]
                if table is not None and (need := rel_pos_rows_needed(q, k)) > table.shape[0]:
                    return i, j, q, k, (need, table.shape[0])
                n = q
        return None

    def _max_side(self, axis: int) -> int:
        side = self.config.img_size[axis]
        while self._table_miss(side + 1, axis) is None and side < 8 * self.config.img_size[axis]:
            side += 1
        while side > 1 and self._table_miss(side, axis) is not None:
            side -= 1
        return side

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, Pair]:
        """Images → patch tokens ``(B, P+N, C)`` (class token first) and the map size, inputs checked."""
        if x.ndim == 4:
            self.check_input_size(int(x.shape[2]), int(x.shape[3]))
        x, hw = self.patch_embed(x)  # (B, N, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1+N, C)
        return x, hw


# --- presets (the paper's T/S/B: 24M/35M/52M params, 4.7/7.0/10.2 GFLOPs; drop_path_rate 0.1/0.1/0.3 as in
# its ImageNet recipe). MACs are the profiler's (matmuls and convolutions); the paper's fvcore count adds
# the LayerNorms (see tests/test_mvit.py).
_PRESETS: dict[str, tuple[MViTConfig, str]] = {
    "mvitv2_t": (MViTConfig(depths=(1, 2, 5, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.1),
                 "MViTv2-T, 224²: 24.2M params, 4.7G MACs (paper: 24M, 4.7G)"),
    "mvitv2_s": (MViTConfig(depths=(1, 2, 11, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.1),
                 "MViTv2-S, 224²: 34.9M params, 7.0G MACs (paper: 35M, 7.0G)"),
    "mvitv2_b": (MViTConfig(depths=(2, 3, 16, 3), num_heads=(1, 2, 4, 8), drop_path_rate=0.3),
                 "MViTv2-B, 224²: 51.5M params, 10.1G MACs (paper: 52M, 10.2G)"),
    # A tiny model for tests and CPU experiments on 32×32 inputs: maps 8² → 4² → 2².
    "mvitv2_pico": (MViTConfig(img_size=32, num_classes=10, embed_dim=16, depths=(1, 2, 1),
                               num_heads=(1, 2, 4), drop_path_rate=0.0),
                    "a tiny three-stage MViTv2 for tests (32×32)"),
}

for _name, (_config, _doc) in _PRESETS.items():
    register(_name, _config, MultiScaleViT, _doc)
