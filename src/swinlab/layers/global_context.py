"""Cross-stage global context for Swin: every token of stage s+1 attends to K tokens sampled from
stage s, and the result is fused back into stage s+1's output.

Windows never see the whole image; this extension gives each token a cheap view of it. For Swin-T at
224², the 28×28 = 784 tokens of stage 2 attend to K = 196 tokens of stage 1's 56×56 map (a 784×196
matrix, against 3136² for global attention over stage 1), then 196 tokens of stage 3 to 49 of stage 2,
and so on (K/4 per stage)::

    c = Softmax(Q Kᵀ/√d) V,  Q = LN(y) W_q,  [K, V] = LN(sample_K(x)) W_kv
    y ← y + c  (add) | max(y, c)  (max) | Linear([y, c])  (concat, 2C → C)

with ``x`` the ``(B, H, W, C)`` output of stage s and ``y`` the ``(B, H/2, W/2, 2C)`` output of s+1.

Samplers pick the K tokens: ``grid`` (a strided grid, deterministic), ``pool`` (average pooling to a
K-token grid) and ``random`` (K distinct tokens drawn afresh at every training step; in evaluation
it falls back to ``grid``, so evaluation is deterministic whatever the sampler).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttention
from .linear import Linear

FUSIONS = ("add", "max", "concat")
SAMPLERS = ("random", "grid", "pool")


@dataclass(frozen=True)
class GlobalContextConfig:
    fusion: str = "add"  # add | max | concat (to 2× width, then a linear back)
    sampler: str = "random"  # random (fresh each training step; grid in eval) | grid | pool
    tokens: int = 196  # K sampled after the first stage; K/4 after each further stage

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"global_context fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"global_context sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.tokens < 1:
            raise ValueError(f"global_context tokens must be ≥ 1, got {self.tokens}")

    @classmethod
    def parse(cls, value) -> GlobalContextConfig | None:
        """``None``/``False``/``"off"`` → off; ``True`` → defaults; ``"concat"`` or ``"max:pool"``
        (fusion[:sampler[:tokens]]); a dict of fields; or a config."""
        if value is None or value is False or value == "off":
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, str):
            parts = value.split(":")
            if len(parts) > 3:
                raise ValueError(f"global_context {value!r}: expected fusion[:sampler[:tokens]]")
            fields = dict(zip(("fusion", "sampler", "tokens"), parts, strict=False))
            if "tokens" in fields:
                fields["tokens"] = int(fields["tokens"])
            return cls(**fields)
        raise TypeError("global_context must be None, a bool, a string or a dict, "
                        f"got {type(value).__name__}")


def grid_shape(map_size: tuple[int, int], k: int) -> tuple[int, int]:
    """A ``(gh, gw)`` grid of about ``k`` points that follows the map's aspect, within the map."""
    h, w = map_size
    # torch.sym_* are the builtins on ints and stay symbolic on a dynamic export's SymInts, so an
    # exported graph computes the grid from the size it is given.
    gh = torch.sym_max(1, torch.sym_min(h, _round((k * h / w) ** 0.5)))  # ** 0.5: ONNX has no sym_sqrt
    gw = torch.sym_max(1, torch.sym_min(w, _round(k / gh)))
    return gh, gw


def _round(x):
    """``x ≥ 0`` rounded half up, ``⌊x + ½⌋``, on a float or a ``SymFloat`` alike (Python's ``round``
    rounds half to even, and an exported program can serialize neither it nor a branch on a
    ``SymFloat``). The two differ only at exact halves, which none of the presets' maps meets."""
    return torch.sym_int(x + 0.5)


def sample_tokens(x: torch.Tensor, k: int, sampler: str, training: bool) -> torch.Tensor:
    """K tokens of a ``(B, H, W, C)`` map as ``(B, K', C)`` (``K' ≈ K``, at most ``H·W``).

    ``grid`` takes the centres of a strided grid; ``pool`` averages each grid cell; ``random`` draws
    distinct tokens (the same positions for the whole batch) when ``training``, else acts as ``grid``.
    """
    b, h, w, c = x.shape
    if sampler == "random" and training:
        n = min(k, h * w)
        idx = torch.randperm(h * w, device=x.device)[:n]
        return x.reshape(b, h * w, c)[:, idx]  # (B, K, C)
    gh, gw = grid_shape((h, w), k)
    if sampler == "pool":
        pooled = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), (gh, gw))  # (B, C, gh, gw)
        return pooled.flatten(2).transpose(1, 2)  # (B, gh*gw, C)
    rows = ((torch.arange(gh, device=x.device) + 0.5) * h / gh).long()  # cell centres
    cols = ((torch.arange(gw, device=x.device) + 0.5) * w / gw).long()
    return x[:, rows][:, :, cols].reshape(b, gh * gw, c)  # (B, gh*gw, C)


class GlobalContextFusion(nn.Module):
    """Attend from stage s+1's output to K sampled tokens of stage s's output and fuse the result.

    Args:
        dim: channels of stage s+1 (queries and output).
        context_dim: channels of stage s (the sampled tokens).
        num_heads: heads of the cross attention.
        tokens: K.
        fusion: ``add``, ``max`` or ``concat``.
        sampler: ``random``, ``grid`` or ``pool``.
    """

    def __init__(self, *, dim: int, context_dim: int, num_heads: int, tokens: int, fusion: str,
                 sampler: str):
        super().__init__()
        self.tokens, self.fusion, self.sampler = tokens, fusion, sampler
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(context_dim)
        self.attn = CrossAttention(dim=dim, context_dim=context_dim, num_heads=num_heads)
        self.fuse = Linear(2 * dim, dim) if fusion == "concat" else None

    def reset_fusion(self) -> None:
        """Start ``concat`` as the identity on ``y`` plus a small term in the context, so that
        switching the extension on does not scramble a stage's output at initialization."""
        if self.fuse is not None:
            c = self.fuse.out_features
            with torch.no_grad():
                nn.init.trunc_normal_(self.fuse.weight, std=0.02)
                self.fuse.weight[:, :c].add_(torch.eye(c, dtype=self.fuse.weight.dtype,
                                                       device=self.fuse.weight.device))
                nn.init.zeros_(self.fuse.bias)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y`` ``(B, H', W', C')`` (stage s+1), ``x`` ``(B, H, W, C)`` (stage s) → ``(B, H', W', C')``."""
        b, h, w, c = y.shape
        context = self.norm_kv(sample_tokens(x, self.tokens, self.sampler, self.training))  # (B, K, C)
        ctx = self.attn(self.norm_q(y).reshape(b, h * w, c), context).view(b, h, w, c)
        if self.fusion == "add":
            return y + ctx
        if self.fusion == "max":
            return torch.maximum(y, ctx)
        return self.fuse(torch.cat([y, ctx], dim=-1))  # (B, H', W', 2C') → (B, H', W', C')

    def extra_repr(self) -> str:
        return f"tokens={self.tokens}, fusion={self.fusion!r}, sampler={self.sampler!r}"
