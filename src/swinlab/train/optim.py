"""AdamW with decay-free groups, the linear learning-rate scaling rule, warmup + cosine schedule.

Swin (Liu et al., 2021, Appendix A2.1): AdamW, 300 epochs, cosine decay, 20 warmup epochs, batch
1024, lr 1e-3 (= 5e-4 × 1024 / 512), weight decay 0.05; no decay on norms, biases and the relative
position tables (as the official code's ``set_weight_decay``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def scaled_lr(base_lr: float, batch_size: int, devices: int = 1, num_nodes: int = 1) -> float:
    """The linear scaling rule: ``base_lr × total batch / 512``."""
    return base_lr * batch_size * devices * num_nodes / 512


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and decay-free 1-D params (norms, biases) and the names in
    ``model.no_weight_decay()`` (position tables, embeddings)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`.

    ``fused`` (default: wherever torch has it, i.e. every parameter a float on the CPU or CUDA): one
    kernel for the whole update instead of one per parameter and operation, the same arithmetic. On a
    2-core Xeon a Swin-T step of AdamW took 18 ms fused against 75 ms in torch's CPU default (the
    per-parameter loop), 10% of a bf16 training step; ``swin_micro_28``: 1.4 against 5.9 ms.
    """
    groups = param_groups(model, weight_decay)
    if fused is None:
        params = [p for g in groups for p in g["params"]]
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES
                                     for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, warmup_start: float = 1e-3,
                         min_ratio: float = 1e-2) -> float:
    """The lr multiplier at ``step``: linear from ``warmup_start`` to 1 over ``warmup_steps``, then
    cosine from 1 to ``min_ratio`` at ``total_steps`` (Swin: warmup 5e-7 and min 5e-6 for lr 5e-4)."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  warmup_start: float = 1e-3, min_ratio: float = 1e-2) -> LambdaLR:
    """A per-step :class:`LambdaLR` of :func:`warmup_cosine_factor`."""
    def factor(step: int) -> float:
        return warmup_cosine_factor(step, warmup_steps, total_steps, warmup_start, min_ratio)

    return LambdaLR(optimizer, factor)
