"""Pure window functions of the Swin Transformer (Liu et al., ICCV 2021, Sec. 3.2).

Every function works on channels-last maps ``(B, H, W, C)`` and is free of module state,
so each can be tested on its own:

* :func:`fit_window` - the effective window and shift of a stage at a given map size;
* :func:`pad_to_windows` - zero padding of the bottom/right edge to a multiple of the window;
* :func:`cyclic_shift` - the roll by ``-shift`` (and back, with ``reverse=True``);
* :func:`window_partition` / :func:`window_reverse` - map ⇄ stacked non-overlapping windows;
* :func:`shift_partition` / :func:`reverse_unshift` - the roll and the partition (and back) as one
  gather each, by the token permutation of :func:`window_order`;
* :func:`region_ids` / :func:`shifted_window_mask` - which tokens of a shifted window came from
  different regions of the map and so must not attend to each other (Fig. 4 of the paper);
* :func:`relative_position_index` - index of the ``(2M-1)²`` bias table for every token pair;
* :func:`relative_bias` - the bias ``(heads, N, N)`` gathered from such a table.

Padding follows torchvision: the map is padded *before* the cyclic shift, padded tokens are zero
vectors (their keys and values are the projection biases) and are not masked out. This equals the
official implementation whenever no padding is needed (e.g. 224² with M=7).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from .pair import Pair, is_static, round_up, static_zero

WINDOW_FITS = ("axis", "min-side", "pad", "built")
SHIFT_ORDERS = ("pad-roll", "roll-pad")  # SwinConfig.shift_order: pad, then roll (the paper); roll, then pad


def fit_window(map_size: Pair, window_size: Pair, shift_size: Pair,
               rule: str = "axis", built_map: Pair | None = None) -> tuple[Pair, Pair]:
    """The window and shift a stage uses on a map of ``map_size``.

    Where a side of the map is not larger than the window, the window shrinks to that side and the
    shift along it is dropped (as the official and timm code do): one window then covers the side,
    so there is nothing to shift. ``rule="min-side"`` is Hugging Face transformers' rule: where the
    *shorter* side is not larger than the window, the shift is dropped along both sides (a 7×8 map
    with 7×7 windows shifts along neither; ``"axis"`` shifts along the 8). ``rule="pad"`` is
    torchvision's (and transformers' Swin V2): the window never shrinks, a map side smaller than it is
    zero-padded up to one window (the padding tokens are attended, unmasked, as all padding is), and the
    shift is dropped along a side of one window, as ``"axis"`` drops it. ``rule="built"`` is
    transformers' Swin V2: window and shift are decided once, by ``"axis"`` on ``built_map`` (the stage's
    map at the image size the model was built for), and a map of any other size is padded to them.

    Args:
        map_size: ``(H, W)`` of the unpadded map.
        window_size: the configured ``(Mh, Mw)``.
        shift_size: the configured ``(Sh, Sw)`` (``(0, 0)`` for W-MSA blocks).
        rule: ``"axis"`` (each side on its own; swinlab's default, as timm and the official code),
            ``"min-side"``, ``"pad"`` or ``"built"``.
        built_map: with ``"built"``, the stage's map at the model's built image size.

    Returns:
        ``(window, shift)`` as pairs.

    Under ``torch.export`` with a dynamic height or width the sides are ``SymInt``s. The window
    then stays as configured (the export's smallest size keeps every map at least one window:
    ``torch._check``), and the shift is dropped without a branch: ``min(S, Hp - M)`` is ``S`` on a
    map of several windows (``Hp ≥ 2M``) and 0 on a map of one (``Hp = M``).
    """
    if rule not in WINDOW_FITS:
        raise ValueError(f"window fit rule must be one of {WINDOW_FITS}, got {rule!r}")
    if rule == "built":
        if built_map is None:
            raise ValueError("window fit rule 'built' needs the built map size (built_map)")
        return fit_window(built_map, window_size, shift_size, "axis")
    sides = map_size if rule != "min-side" else (min(map_size),) * 2 if is_static(*map_size) else \
        (torch.sym_min(*map_size),) * 2  # the side each axis's shift is decided on
    if is_static(*map_size):
        window = tuple(window_size) if rule == "pad" else \
            tuple(min(m, s) for m, s in zip(window_size, map_size, strict=True))
        shift = tuple(0 if s <= m else sh for s, m, sh in zip(sides, window_size, shift_size, strict=True))
        return window, shift  # type: ignore[return-value]
    for s, m in zip(map_size, window_size, strict=True):
        torch._check(s >= m, lambda: f"a map side smaller than the window {tuple(window_size)} "
                                     "cannot be traced with a dynamic size")
    shift = tuple(sh if static_zero(sh) else torch.sym_min(sh, round_up(s, m) - m)
                  for s, m, sh in zip(sides, window_size, shift_size, strict=True))
    return tuple(window_size), shift  # type: ignore[return-value]


def pad_to_windows(x: torch.Tensor, window: Pair) -> torch.Tensor:
    """Zero-pad ``x`` of shape ``(B, H, W, C)`` at the bottom/right to multiples of ``window``."""
    _, h, w, _ = x.shape
    pad_h = round_up(h, window[0]) - h
    pad_w = round_up(w, window[1]) - w
    if not static_zero(pad_h, pad_w):
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    return x


def cyclic_shift(x: torch.Tensor, shift: Pair, reverse: bool = False) -> torch.Tensor:
    """Roll ``x`` of shape ``(B, H, W, C)`` up-left by ``shift`` (down-right with ``reverse``)."""
    if static_zero(*shift):
        return x
    sign = 1 if reverse else -1
    return torch.roll(x, shifts=(sign * shift[0], sign * shift[1]), dims=(1, 2))


def window_partition(x: torch.Tensor, window: Pair) -> torch.Tensor:
    """Split ``(B, H, W, C)`` into windows ``(B*nW, Mh*Mw, C)``, row-major over windows.

    ``H`` and ``W`` must be multiples of the window (see :func:`pad_to_windows`).
    """
    b, h, w, c = x.shape
    mh, mw = window
    x = x.view(b, h // mh, mh, w // mw, mw, c)  # (B, H/Mh, Mh, W/Mw, Mw, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b * (h // mh) * (w // mw), mh * mw, c)  # (B*nW, Mh*Mw, C)


def window_reverse(windows: torch.Tensor, window: Pair, map_size: Pair) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B*nW, Mh*Mw, C)`` → ``(B, H, W, C)``."""
    h, w = map_size
    mh, mw = window
    c = windows.shape[-1]
    x = windows.view(-1, h // mh, w // mw, mh, mw, c)  # (B, H/Mh, W/Mw, Mh, Mw, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)  # (B, H, W, C)


def window_order(map_size: Pair, window: Pair, shift: Pair,
                 device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The token permutation of "roll by ``-shift``, then partition": ``(order, inverse)``, each ``(H*W,)``.

    ``x.flatten(1, 2)[:, order].view(-1, Mh*Mw, C)`` equals
    ``window_partition(cyclic_shift(x, shift), window)`` and ``inverse`` undoes it, so the shift and
    the partition (and their reverse) are one gather each instead of two copies. ``map_size`` is the
    padded size (multiples of the window). Cached per geometry and device in eager mode, so a call
    on the GPU copies nothing to it.
    """
    key = (tuple(map_size), tuple(window), tuple(shift), torch.device(device or "cpu"))
    if torch.compiler.is_compiling() or not is_static(*map_size, *shift):
        return _window_order(*key)  # no Python cache under dynamo or export: built in the graph
    return _window_order_cached(*key)


def _window_order(map_size: Pair, window: Pair, shift: Pair,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = map_size
    rows, cols = _partition_coords(map_size, window)  # (H*W,) each: window order → map position
    # the roll by -shift as index arithmetic (a shift may be a SymInt in a dynamic export)
    order = _mod(rows + shift[0], h) * w + _mod(cols + shift[1], w)  # (H*W,)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(h * w)
    return order.to(device), inverse.to(device)


def _partition_coords(map_size: Pair, window: Pair, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column ``(H*W,)`` of the map position of each token of ``window_partition``'s order.

    Pure index arithmetic (no view of a permuted tensor, whose strides ``torch.export`` would check
    against a window count of one), so the sides may be ``SymInt``s."""
    h, w = map_size
    mh, mw = window
    j = torch.arange(h * w, device=device)
    k, t = j // (mh * mw), j % (mh * mw)  # window (row-major over windows), token within it
    return (k // (w // mw)) * mh + t // mw, _mod(k, w // mw) * mw + t % mw


def _mod(a: torch.Tensor, n) -> torch.Tensor:
    """``a mod n`` for ``a ≥ 0`` as ``a - ⌊a/n⌋·n``: the same on ints, and ONNX's exporter takes a
    ``SymInt`` ``n`` in a division where it refuses one in ``remainder``."""
    return a - (a // n) * n


@lru_cache(maxsize=128)
@torch.inference_mode(False)  # a cached tensor made under inference_mode could not be used in training
def _window_order_cached(map_size: Pair, window: Pair, shift: Pair,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return _window_order(map_size, window, shift, device)


def padded_window_order(map_size: Pair, window: Pair, shift: Pair,
                        device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad, roll and partition as one gather, and its inverse with the crop: ``(gather, scatter)``.

    ``gather`` ``(Hp*Wp,)`` indexes the ``H*W`` tokens of an *unpadded* map followed by one zero token
    (index ``H*W``, for the padding): ``cat([x.flatten(1, 2), zeros], 1)[:, gather]`` equals
    ``window_partition(cyclic_shift(pad_to_windows(x), shift), window)`` flattened. ``scatter``
    ``(H*W,)`` gives each real token's place in that window order, so ``windows[:, scatter]`` is the
    reverse, unshifted and cropped map. Nothing depends on a branch on the size: this is the form a
    dynamic export takes, where padding and cropping by slices would tie the graph to the traced
    size (``map_size`` and ``shift`` may be ``SymInt``s).
    """
    h, w = map_size
    hp, wp = round_up(h, window[0]), round_up(w, window[1])
    order, inverse = _window_order((hp, wp), window, shift, torch.device(device or "cpu"))
    rows, cols = torch.arange(hp, device=device), torch.arange(wp, device=device)
    inside = (rows[:, None] < h) & (cols[None, :] < w)  # (Hp, Wp)
    source = torch.where(inside, rows[:, None] * w + cols[None, :], h * w).reshape(-1)  # (Hp*Wp,)
    real = (torch.arange(h, device=device)[:, None] * wp + torch.arange(w, device=device)[None, :])
    return source[order], inverse[real.reshape(-1)]


class _Permute(torch.autograd.Function):
    """Gather tokens ``(B, L, C)`` along L by a permutation; the gradient is the inverse gather (a
    permutation's transpose is its inverse), not the scatter-add ``index_select`` would run."""

    @staticmethod
    def forward(ctx, x, order, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def _permute_tokens(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _Permute.apply(x, order, inverse)
    return x.index_select(1, order)


def shift_partition(x: torch.Tensor, window: Pair, shift: Pair) -> torch.Tensor:
    """``window_partition(cyclic_shift(x, shift), window)`` in one gather:
    ``(B, H, W, C)`` → ``(B*nW, N, C)``."""
    b, h, w, c = x.shape
    if static_zero(*shift):
        return window_partition(x, window)  # a plain partition is already one copy
    order, inverse = window_order((h, w), window, shift, x.device)
    tokens = _permute_tokens(x.reshape(b, h * w, c), order, inverse)  # (B, H*W, C) in window order
    return tokens.view(-1, window[0] * window[1], c)  # (B*nW, N, C)


def reverse_unshift(windows: torch.Tensor, window: Pair, shift: Pair, map_size: Pair) -> torch.Tensor:
    """``cyclic_shift(window_reverse(windows, window, map_size), shift, reverse=True)`` in one gather:
    ``(B*nW, N, C)`` → ``(B, H, W, C)``."""
    if static_zero(*shift):
        return window_reverse(windows, window, map_size)
    h, w = map_size
    c = windows.shape[-1]
    order, inverse = window_order((h, w), window, shift, windows.device)
    tokens = _permute_tokens(windows.reshape(-1, h * w, c), inverse, order)  # (B, H*W, C) in map order
    return tokens.view(-1, h, w, c)  # (B, H, W, C)


def region_ids(map_size: Pair, window: Pair, shift: Pair, device=None) -> torch.Tensor:
    """Region label of every token of the padded map *after* the cyclic shift, ``(H, W)`` int.

    Rolling by ``-shift`` brings the top/left strips of width ``shift`` round to the bottom/right;
    tokens of a shifted window that were not neighbours in the original map get different labels.
    Each side splits into ``[0, H-M)``, ``[H-M, H-S)``, ``[H-S, H)``: 3×3 = 9 regions at most.
    """
    h, w = map_size
    rows = _strip_ids(h, window[0], shift[0], device)
    return rows[:, None] * 3 + _strip_ids(w, window[1], shift[1], device)


def _strip_ids(n: int, m: int, s: int, device) -> torch.Tensor:
    """``(n,)``: which strip of one side each position falls in after a roll by s (0 for all if s = 0).

    Index arithmetic rather than slicing, so ``n`` and ``s`` may be ``SymInt``s of a dynamic export;
    a traced shift that is 0 at run time (a one-window side) gives labels that change only at the
    window boundary ``n - m``, which no window straddles: no mask.
    """
    r = torch.arange(n, device=device)
    if static_zero(s):
        return torch.zeros_like(r)
    return (r >= n - m).long() + (r >= n - s).long()


def shifted_window_mask(
    map_size: Pair, window: Pair, shift: Pair, device=None, dtype=torch.float32
) -> torch.Tensor | None:
    """Additive attention mask ``(nW, N, N)`` for shifted windows (``N = Mh*Mw``).

    Entry ``[w, i, j]`` is ``-inf``-like (``-100``, as in the official code, so a fully masked row
    cannot produce NaN) where tokens i and j of window w came from different regions, else 0.
    ``None`` when ``shift`` is zero (nothing to mask). ``map_size`` is the padded size.
    """
    if static_zero(*shift):
        return None
    ids = region_ids(map_size, window, shift, device=device)  # (H, W)
    if is_static(*map_size):
        win = window_partition(ids[None, :, :, None], window).squeeze(-1)  # (nW, N)
    else:  # a dynamic export: the same order by index arithmetic
        rows, cols = _partition_coords(map_size, window, device)
        win = ids[rows, cols].view(-1, window[0] * window[1])  # (nW, N)
    different = win[:, :, None] != win[:, None, :]  # (nW, N, N)
    return torch.zeros(different.shape, dtype=dtype, device=device).masked_fill_(different, -100.0)


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # a cached tensor made under inference_mode could not be used in training
def _relative_position_index_cached(window: Pair, table_window: Pair) -> torch.Tensor:
    return _relative_position_index_cpu(window, table_window)


def _relative_position_index_cpu(window: Pair, table_window: Pair) -> torch.Tensor:
    mh, mw = window
    coords = torch.stack(
        torch.meshgrid(torch.arange(mh, device="cpu"), torch.arange(mw, device="cpu"), indexing="ij")
    ).flatten(1)  # (2, N); on the CPU even inside a `with torch.device("meta")` (the cache would keep it)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N), offsets in (-(M-1), M-1)
    rel_h = rel[0] + table_window[0] - 1  # shift to [0, 2Mh-2] of the *table's* window
    rel_w = rel[1] + table_window[1] - 1
    return rel_h * (2 * table_window[1] - 1) + rel_w  # (N, N)


def relative_position_index(window: Pair, table_window: Pair | None = None) -> torch.Tensor:
    """Index ``(N, N)`` into a ``(2Mh'-1)(2Mw'-1)`` table for every pair of tokens of a window.

    Args:
        window: the window the attention runs over, ``(Mh, Mw)``.
        table_window: the window the table was built for (default: ``window``). A smaller window
            (a stage whose map is smaller than the configured window) uses the table's centre:
            its offsets are a subset of the table's.
    """
    table_window = tuple(table_window or window)
    if any(w > t for w, t in zip(window, table_window, strict=True)):
        raise ValueError(f"window {window} is larger than the bias table's window {table_window}")
    if torch.compiler.is_compiling():  # no Python cache under dynamo: traced, then a constant of the graph
        return _relative_position_index_cpu(tuple(window), table_window)
    return _relative_position_index_cached(tuple(window), table_window)


def relative_bias(table: torch.Tensor, window: Pair, table_window: Pair) -> torch.Tensor:
    """Gather ``(heads, N, N)`` from a ``((2M-1)², heads)`` table for a window ``(Mh, Mw)``."""
    n = window[0] * window[1]
    index = relative_position_index(window, table_window).to(table.device)  # (N, N)
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)  # (heads, N, N)
