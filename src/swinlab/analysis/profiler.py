"""Profile a classifier: parameters, multiply-accumulates, window-attention sizes, activation memory.

* ``macs``: multiply-accumulates of one forward pass per image, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (matmul, bmm, conv, SDPA; it reports 2 FLOPs per
  MAC). The "FLOPs" of the Swin paper (Liu et al., ICCV 2021, Table 1) are these MACs: Swin-T at
  224² is 4.5G. Element-wise work (norms, softmax, GELU, adds) is not counted, as in the paper.
* ``stages``: for every stage with window attention, the map it attends over and the size of the
  attention matrices. W-MSA on an ``H×W`` map with ``M×M`` windows computes ``nW·N²`` entries per
  head (``N = M²``, ``nW = ⌈H/M⌉⌈W/M⌉``), i.e. ``M²·H·W``: linear in the number of tokens, where
  global attention needs ``(H·W)²`` (Sec. 3.2, Eq. 1-2 of the paper). Stage 1 of Swin-T at 224²:
  ``64·49² ≈ 154k`` against ``3136² ≈ 9.8M``.
* ``activation_bytes``: memory held for backward by one training forward pass, measured with
  :func:`torch.autograd.graph.saved_tensors_hooks`.

By default the passes run on the ``meta`` device: shapes only, so even Swin-L at 384² is profiled
in well under a second with no memory; every number above depends on shapes alone. A model on
CUDA runs for real on its device instead, so that the attention backend picks its real kernels
and the peak memory can be read from the allocator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..functional.pair import Pair, to_pair
from ..kernels import linear as _linear_kernels
from ..layers import ContinuousPositionBias, CrossAttention, WindowAttention


def _linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """2·M·K·N for ``x (..., K) @ weight (N, K)ᵀ`` (FlopCounterMode passes shapes)."""
    return 2 * math.prod(x_shape) * w_shape[0]


# Kernels FlopCounterMode does not price by itself: the fused CPU attention SDPA dispatches to, and
# swinlab's oneDNN linear operator (swinlab.kernels.linear; opaque to the counter).
_EXTRA_FLOPS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FLOPS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = (
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v))
if _linear_kernels.onednn_available():
    _EXTRA_FLOPS[torch.ops.swinlab.onednn_linear] = _linear_flops


def _native_attention_flops(qkv_shape, bias_shape, heads, scale, *args, out_shape=None, **kwargs) -> int:
    """QKᵀ and PV of every (window, head): 2 · 2·(B·nW)·N²·C, as ``sdpa_flop_count`` prices SDPA."""
    bnw, n, c3 = qkv_shape
    return 4 * bnw * n * n * (c3 // 3)


# swinlab's native window-attention kernel (swinlab.kernels.native), the operator CPU inference runs
_EXTRA_FLOPS[torch.ops.swinlab.native_window_attention] = _native_attention_flops


def profile(model: nn.Module, img_size: int | Pair | None = None, batch_size: int = 1, *,
            name: str | None = None, device: str | torch.device | None = None,
            memory: bool = True) -> dict:
    """Parameters, MACs, window-attention statistics and activation memory of ``model``.

    Works for any classifier whose ``.config`` has ``img_size`` and ``in_chans``; a model without
    :class:`~swinlab.layers.WindowAttention` gets an empty ``stages`` list. The model is left as it
    was: its parameters, buffers, train/eval mode and the global RNG are untouched.

    Args:
        model: the classifier (on any device; a model built on ``meta`` works too).
        img_size: input ``H`` or ``(H, W)``; default ``model.config.img_size``.
        batch_size: images in the training forward pass that measures activation memory.
        name: the model's name for the report (default ``model.config.extra.get("name")``).
        device: where the passes run. Default: ``"meta"`` for a model on CPU or meta (shapes only,
            exact counts, no time or memory), the model's own device for CUDA. Pass ``"cpu"`` to
            run a CPU model for real.
        memory: run the training pass that measures ``activation_bytes`` and
            ``peak_memory_bytes``; ``False`` skips it and reports both as ``None``.

    Returns:
        A JSON-serializable dict:

        * ``name``, ``img_size`` ``(H, W)``, ``batch_size``, ``device`` (where the passes ran);
        * ``params``: all parameters, trainable or not (shared ones once); ``trainable_params``;
        * ``macs``: multiply-accumulates of one eval forward pass, per image; ``flops = 2·macs``
          (Swin V2's continuous position bias is computed once per window size, not per image, and
          not counted, as the papers count);
        * ``stages``: per stage with window attention, a dict with ``index`` (into ``model.stages``,
          from 0; the paper counts stages from 1), ``map_size`` ``(H, W)`` of its tokens (seen by
          forward hooks), ``blocks``, ``num_heads``, ``windows`` (``{"window": (Mh, Mw),
          "shift": (Sh, Sw)}`` per block, from ``WindowAttention.windows_for``), ``num_windows``
          (on the padded map), ``window_tokens`` ``N``,
          ``attention_entries`` (``nW·N²``: one block, one head, one image),
          ``global_attention_entries`` (``(H·W)²``) and ``ratio`` (the first over the second);
        * ``attention_entries`` / ``global_attention_entries``: the same summed over every block
          and head, per image (``None`` when the model has no window attention);
        * ``activation_bytes``: bytes of the tensors autograd saves for backward during one
          training forward pass (train mode, grad enabled) of ``batch_size`` images: each storage
          counted once, in full, however many saved tensors view it; parameters and buffers are
          excluded, the input images are included;
        * ``peak_memory_bytes``: on CUDA, ``torch.cuda.max_memory_allocated`` during that training
          forward pass (everything resident on the device, weights included); ``None`` elsewhere;
        * ``global_context``: for a Swin with the extension, its ``params``, ``macs`` and
          ``attention_entries`` (``N·K·heads`` summed over fusions, per image; ``matrices`` lists
          each), already included in the totals above; ``None`` without it.
    """
    config = model.config
    size = to_pair(img_size if img_size is not None else config.img_size)
    if min(size) < 1 or batch_size < 1:
        raise ValueError(f"img_size {size} and batch_size {batch_size} must be positive")
    model_device = _device_of(model)
    run_on = torch.device(device) if device is not None else (
        model_device if model_device.type == "cuda" else torch.device("meta"))
    if model_device.type == "meta" and run_on.type != "meta":
        raise ValueError(f"a model on the meta device has no values to run on {run_on}; use device='meta'")
    if name is None:
        name = getattr(config, "extra", {}).get("name")

    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tensors = _tensors_on(model, run_on)
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)

    def images(n: int) -> torch.Tensor:
        return torch.randn(n, config.in_chans, *size, device=run_on, dtype=dtype)  # (n, C_in, H, W)

    cuda = run_on.type == "cuda"
    with torch.random.fork_rng(devices=[run_on] if cuda else []):
        # Pass 1: eval mode, no grad, one image: MACs and the map every window attention sees.
        calls: list[tuple[WindowAttention, Pair]] = []
        context_calls: list[tuple[int, int, int]] = []
        if any(isinstance(m, ContinuousPositionBias) for m in model.modules()):
            with _mode(model, training=False), torch.no_grad():  # compute V2's CPB tables, not counted
                functional_call(model, tensors, (images(1),))
        with _mode(model, training=False), _record_window_maps(model, calls), torch.no_grad(), \
                _record_context_entries(model, context_calls), \
                FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS) as counter:
            functional_call(model, tensors, (images(1),))
        macs = counter.get_total_flops() // 2
        stages = _stage_stats(model, calls)
        global_context = _context_stats(model, counter, context_calls)

        # Pass 2: train mode, grad enabled, the whole batch: what autograd keeps for backward.
        activation_bytes = peak = None
        if memory:
            with _mode(model, training=True):
                x = images(batch_size)
                if cuda:
                    torch.cuda.synchronize(run_on)
                    torch.cuda.reset_peak_memory_stats(run_on)
                exclude = {_storage_key(t) for t in tensors.values()}
                activation_bytes, held = _saved_bytes(lambda: functional_call(model, tensors, (x,)), exclude)
                peak = torch.cuda.max_memory_allocated(run_on) if cuda else None
                del held

    return {
        "name": name,
        "img_size": size,
        "batch_size": batch_size,
        "device": str(run_on),
        "params": params,
        "trainable_params": trainable,
        "macs": macs,
        "flops": 2 * macs,
        "stages": stages,
        "attention_entries": _total(stages, "attention_entries"),
        "global_attention_entries": _total(stages, "global_attention_entries"),
        "activation_bytes": activation_bytes,
        "peak_memory_bytes": peak,
        "global_context": global_context,
    }


@contextmanager
def _record_context_entries(model: nn.Module, entries: list[tuple[int, int, int]]) -> Iterator[None]:
    """Collect ``(N, K, heads)`` of every cross-stage attention call (the global-context extension)."""
    def hook(module, args):
        x, context = args  # (B, N, C), (B, K, C_kv)
        entries.append((x.shape[1], context.shape[1], module.num_heads))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, CrossAttention)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _context_stats(model: nn.Module, counter: FlopCounterMode,
                   entries: list[tuple[int, int, int]]) -> dict | None:
    """What the global-context extension costs: its params, MACs and attention entries per image."""
    modules = getattr(model, "global_context", None)
    if modules is None:
        return None
    # a ModuleList is never called, so its children are the outermost modules the counter saw
    prefix = f"{type(model).__name__}.global_context."
    flops = sum(sum(c.values()) for k, c in counter.get_flop_counts().items()
                if k.startswith(prefix) and k[len(prefix):].isdigit())
    return {
        "params": sum(p.numel() for p in modules.parameters()),
        "macs": flops // 2,
        "attention_entries": sum(n * k * h for n, k, h in entries),
        "matrices": [{"queries": n, "keys": k, "heads": h} for n, k, h in entries],
    }


def _total(stages: list[dict], key: str) -> int | None:
    """``key`` summed over every block and head of every stage; ``None`` without window attention."""
    return sum(s[key] * s["blocks"] * s["num_heads"] for s in stages) if stages else None



def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _tensors_on(model: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """Parameters and buffers for :func:`functional_call`: shape-only copies on meta; on a real
    device the parameters themselves and clones of the buffers (so running statistics stay put)."""
    out: dict[str, torch.Tensor] = {}
    for n, p in model.named_parameters():
        if device.type == "meta":
            out[n] = torch.empty_like(p, device="meta").requires_grad_(p.requires_grad)
        else:
            out[n] = p if p.device == device else p.to(device)
    for n, b in model.named_buffers():
        out[n] = torch.empty_like(b, device="meta") if device.type == "meta" else b.to(device).clone()
    return out


@contextmanager
def _mode(model: nn.Module, *, training: bool) -> Iterator[None]:
    """Put every submodule in train or eval mode, then restore each one's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def _record_window_maps(model: nn.Module, calls: list) -> Iterator[None]:
    """Append ``(module, (H, W))`` for every call of a window attention, in call order."""

    def hook(module, args):
        _, h, w, _ = args[0].shape  # (B, H, W, C)
        calls.append((module, (int(h), int(w))))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, WindowAttention)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _stage_stats(model: nn.Module, calls: list[tuple[WindowAttention, Pair]]) -> list[dict]:
    """Group window-attention calls into stages and size their attention matrices.

    A call belongs to stage ``i`` if its module lives in ``model.stages[i]``; for a model without
    ``stages``, consecutive calls on maps of the same size form a stage.
    """
    owner = {}
    for i, stage in enumerate(getattr(model, "stages", None) or []):
        for m in stage.modules():
            owner[m] = i
    groups: list[tuple[object, list]] = []
    for module, size in calls:
        key = owner.get(module, ("map", size))
        if not groups or groups[-1][0] != key:
            groups.append((key, []))
        groups[-1][1].append((module, size))

    stages = []
    for index, (key, group) in enumerate(groups):
        module, (h, w) = group[0]
        windows = [m.windows_for(s) for m, s in group]
        (mh, mw), _ = windows[0]
        n = mh * mw
        num_windows = math.ceil(h / mh) * math.ceil(w / mw)
        entries = num_windows * n * n  # nW · N² per head per block, on the padded map
        global_entries = (h * w) ** 2
        stages.append({
            "index": key if isinstance(key, int) else index,
            "map_size": (h, w),
            "blocks": len(group),
            "num_heads": module.num_heads,
            "windows": [{"window": win, "shift": shift} for win, shift in windows],
            "num_windows": num_windows,
            "window_tokens": n,
            "attention_entries": entries,
            "global_attention_entries": global_entries,
            "ratio": entries / global_entries,
        })
    return stages


def _storage_key(t: torch.Tensor) -> tuple:
    """Identity of the storage behind ``t``: its data pointer (a meta storage has none, so there
    the identity of the storage object itself)."""
    storage = t.untyped_storage()
    if t.device.type == "meta":
        return ("meta", storage._cdata)
    return (str(t.device), storage.data_ptr())


def _saved_bytes(forward, exclude: set) -> tuple[int, object]:
    """Bytes of distinct storages autograd saves while ``forward()`` runs, skipping ``exclude``.

    Returns the count and the output; keep the output alive until the count is read, so that no
    saved storage is freed and its address reused by another.
    """
    seen: set = set()
    total = 0
    keep = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = _storage_key(t)
        if key not in seen and key not in exclude:
            seen.add(key)
            total += t.untyped_storage().nbytes()
            keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return total, (out, keep)
