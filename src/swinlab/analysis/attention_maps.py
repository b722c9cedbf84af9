"""Attention maps of Swin's window attention (W-MSA and SW-MSA), for one query token.

A forward hook captures the ``qkv`` projection of a block's :class:`WindowAttention` (on the map, or
on the shifted windows where the backend projects those); the weights
``Softmax(QKᵀ/√d + B + mask)`` are then recomputed with the reference kernel's maths
(:mod:`swinlab.kernels.reference`), following each token through the cyclic shift and the window
partition, so the map is drawn in image coordinates: zero outside the query's window, and, in a
shifted window, zero on the tokens the region mask hides.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..data import ImageDataModule
from ..functional.windows import (
    cyclic_shift,
    relative_bias,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from ..layers import WindowAttention
from .plots import plot_attention


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; each module's own ``training`` flag restored after (a
    caller's mix of train and eval modules survives)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
    finally:
        for m, training in modes:
            m.training = training


def window_attention_weights(attn: WindowAttention, qkv: torch.Tensor, map_size: tuple[int, int]):
    """Attention probabilities of one layer and where each window slot came from.

    Args:
        attn: the layer.
        qkv: its :meth:`~swinlab.layers.WindowAttention.project_qkv` output ``(B, Hp, Wp, 3C)`` on the
            padded map (for cosine attention q and k already normalized, τ in q).
        map_size: the unpadded ``(H, W)``.

    Returns:
        ``probs (B, nW, heads, N, N)`` and ``origin (nW, N)``: the row-major index into the padded
        ``(Hp, Wp)`` map of the token in each window slot.
    """
    b, hp, wp, c3 = qkv.shape
    window, shift = attn.windows_for(map_size)
    heads, n = attn.num_heads, window[0] * window[1]
    d = c3 // 3 // heads
    x = window_partition(cyclic_shift(qkv, shift), window)  # (B*nW, N, 3C)
    q, k, _ = x.view(x.shape[0], n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B*nW, h, N, d)
    logits = (q * attn.scale) @ k.transpose(-2, -1) if attn.use_qk else torch.zeros(
        x.shape[0], heads, n, n, dtype=qkv.dtype, device=qkv.device)  # (B*nW, h, N, N)
    table, table_window = attn.bias_table(window)
    if table is not None:
        logits = logits + relative_bias(table, window, table_window)[None]
    nw = x.shape[0] // b
    logits = logits.view(b, nw, heads, n, n)
    if attn.mask_shifted and (shift[0] or shift[1]):
        logits = logits + shifted_window_mask((hp, wp), window, shift, device=qkv.device,
                                              dtype=logits.dtype)[None, :, None]
    pos = torch.arange(hp * wp, device=qkv.device, dtype=torch.float32).view(1, hp, wp, 1)
    origin = window_partition(cyclic_shift(pos, shift), window)[..., 0].long()  # (nW, N)
    return logits.softmax(-1), origin


def _recording(project, captured: dict, i: int):
    def record(x):
        captured[i] = out = project(x)
        return out
    return record


@torch.no_grad()
def query_attention_maps(model: nn.Module, images: torch.Tensor, query: tuple[int, int],
                         stage: int = 0, blocks: tuple[int, ...] = (0, 1)) -> torch.Tensor:
    """Head-averaged attention of the token at ``query`` (row, col on the stage's token grid) over
    the map, for ``blocks`` of ``stage`` (block 0: W-MSA, block 1: SW-MSA).

    The model runs in eval mode (no drop path, grid sampling) and is handed back in the mode it
    came in.

    Returns:
        ``(B, len(blocks), H, W)`` on the stage's token grid, on the model's output device.
    """
    layers = [model.stages[stage].blocks[i].attn for i in blocks]
    captured: dict[int, torch.Tensor] = {}
    sizes: dict[int, tuple[int, int]] = {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(
            lambda m, a, i=i: sizes.__setitem__(i, tuple(a[0].shape[1:3]))))
        layer.project_qkv = _recording(layer.project_qkv, captured, i)  # shadows the method on this layer
    try:
        with evaluating(model):
            model(images)
    finally:
        for h in hooks:
            h.remove()
        for layer in layers:
            del layer.project_qkv
    maps = []
    for i, layer in enumerate(layers):
        qkv = captured[i]
        h, w = sizes[i]
        if qkv.dim() == 3:  # a backend that projects shifted windows: (B*nW, N, 3C) → (B, Hp, Wp, 3C)
            window, shift = layer.windows_for((h, w))
            padded = (-(-h // window[0]) * window[0], -(-w // window[1]) * window[1])
            qkv = cyclic_shift(window_reverse(qkv, window, padded), shift, reverse=True)
        hp, wp = qkv.shape[1:3]
        probs, origin = window_attention_weights(layer, qkv, (h, w))  # (B, nW, h, N, N), (nW, N)
        target = query[0] * wp + query[1]
        win, slot = (origin == target).nonzero()[0].tolist()
        row = probs[:, win, :, slot, :].mean(1)  # (B, N): averaged over heads
        full = row.new_zeros(len(images), hp * wp)  # (B, Hp*Wp) on the layer's device
        full[:, origin[win]] = row
        maps.append(full.view(-1, hp, wp)[:, :h, :w])
    return torch.stack(maps, 1)  # (B, len(blocks), H, W)


def attention_figure(net: nn.Module, data: str, data_dir: str | None, path: str | os.PathLike,
                     n: int = 4) -> Path:
    """The reports' attention figure: for the first ``n`` test images of ``data``, the head-averaged
    attention of the centre token in block 1 (W-MSA) and block 2 (SW-MSA) of stage 1, drawn over the
    image with the window borders (:func:`swinlab.analysis.plots.plot_attention`).

    Args:
        net: a Swin classifier (``net.config`` gives its input size, channels, patch and window).
        data, data_dir: the data it was trained on (see :class:`swinlab.data.ImageDataModule`).

    Returns:
        ``path``, a PNG.
    """
    cfg = net.config
    dm = ImageDataModule(data, data_dir, img_size=cfg.img_size, channels=cfg.in_chans, test_limit=64,
                         augment=None)
    dm.setup("test")
    raw = [dm.test_set.dataset[dm.test_set.indices[i]][0] for i in range(n)]  # uint8 (C, H, W)
    device = next(net.parameters()).device
    x = torch.stack([dm.test_set[i][0] for i in range(n)]).to(device)  # (n, C, H, W)
    grid = (-(-cfg.img_size[0] // cfg.patch_size), -(-cfg.img_size[1] // cfg.patch_size))
    query = (grid[0] // 2, grid[1] // 2)  # the centre token: its shifted window straddles borders
    maps = query_attention_maps(net, x, query)  # (n, 2, h, w)
    with torch.no_grad(), evaluating(net):
        pred = net(x).argmax(-1).tolist()
    names = dm.classes
    titles = [f"true {names[dm.test_set[i][1]]} / pred {names[p]}" for i, p in enumerate(pred)]
    images = [r.permute(1, 2, 0).squeeze(-1).numpy() for r in raw]
    m = cfg.window_size[0]
    return plot_attention(images, maps.cpu().numpy(), query, cfg.patch_size, m, m // 2 if cfg.shift else 0,
                          titles, path)
