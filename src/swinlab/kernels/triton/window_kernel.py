"""Fused Triton window attention (W-MSA / SW-MSA, Liu et al. 2021, Eq. 4), forward and backward.

``Softmax(QKᵀ/√d + B + mask)V`` per window and head, read straight from the un-partitioned
channels-last ``(B, H, W, 3C)`` map and written straight to ``(B, H, W, C)``:

* the cyclic shift and the window partition are index arithmetic: token ``(r, c)`` of window
  ``(wi, wj)`` of the rolled map is read from (and its output written to) the original position
  ``((wi·Mh + r + Sh) mod H, (wj·Mw + c + Sw) mod W)`` — no roll / partition / reverse copies;
* the relative position bias is gathered from the ``((2Mh'-1)(2Mw'-1), heads)`` table by index
  inside the kernel (one gather per program, reused for every window it handles) — no
  ``(heads, N, N)`` bias tensor;
* the shifted-window mask is computed from the region ids of the two tokens (the ids are a
  function of the rolled-frame row / column) and adds exactly ``-100.0`` like the reference — no
  ``(nW, N, N)`` mask tensor;
* softmax in fp32 (fp64 for fp64 inputs) over the whole window row (N ≤ BLOCK_N fits one tile),
  the per-row logsumexp is kept for the backward, which recomputes ``P`` from it
  (``dS = P ∘ (dP − rowsum(P ∘ dP))``, no stored attention matrix).

One program handles ``WINDOWS`` consecutive windows of one head (1 to 8, chosen from the launch
size): the bias gather and the relative-bias gradient accumulator are amortised over them. The bias
gradient of each program is summed in registers over its windows and added with fp32 atomics into a
small ``(heads, N, N)`` buffer (distinct addresses per lane, so no intra-warp address conflicts),
which one ``index_add_`` folds into the ``(rows, heads)`` table gradient. Atomics make ``dtable``
non-deterministic in the last bits; everything else is deterministic.

Cost per window (N = Mh·Mw tokens, C = heads·d channels, e bytes per element):

* FLOPs, forward: ``4·N²·C`` (QKᵀ and PV) + ~``5·N²·heads`` (bias, mask, softmax);
  backward ``8·N²·C`` + the recomputed ``2·N²·C`` of QKᵀ. On tensor cores N is padded to
  BLOCK_N (49 → 64: 1.7× the useful MACs; 144 → 256: 3.2×).
* bytes, forward: ``3·N·C·e`` (q, k, v read once) + ``N·C·e`` (output) + ``4·N·heads`` (lse);
  backward: ``3·N·C·e`` (qkv) + ``N·C·e`` (dout) + ``4·N·heads`` (lse) + ``3·N·C·e`` (dqkv).
  The bias table (≤ 529·heads values) stays in L1/L2.

Swin-T stage 1 at batch 256 in bf16 (56×56 map, C = 96, 3 heads, d = 32, M = 7: 16,384 windows,
802,816 tokens): 0.92 MFLOP and 38.2 KB per window forward, 15.1 GFLOP in all — 24 FLOP/byte,
far under the H100's ridge point (~300 FLOP/byte for dense bf16), so the kernel is memory-bound and
its floor is the bytes: 462 MB of qkv read + 154 MB written + 9.6 MB of lse = **626 MB**
(≈ 0.19 ms at 3.35 TB/s). The reference for the same SW-MSA block moves ≈ **5.59 GB**
(8.9×): roll of qkv 925 MB (read + write), partition 925 MB, ``q·scale`` 308 MB, ``QKᵀ`` 544 MB
(writes the (B·nW, h, N, N) logits, 236 MB), ``+bias`` 472 MB, ``+mask`` 472 MB, softmax 472 MB,
``PV`` 544 MB, transpose / window-reverse / reverse roll 308 MB each. In training it also keeps
logits-sized tensors (236 MB each) for the backward, where the fused kernel keeps the 9.6 MB lse.
The fused backward moves 1.09 GB (qkv, dout, lse read; dqkv written).

Under ``TRITON_INTERPRET=1`` (set before ``triton`` is imported) the kernels run on CPU tensors,
which is how the tests check them. fp64 inputs run in fp64 (``tl.dot`` supports it); fp32 inputs
use IEEE fp32 dots unless ``torch.set_float32_matmul_precision`` allows TF32, as torch's own matmul.

Limitations: a window is one ``(BLOCK_N, BLOCK_N)`` tile, right for M = 7 (49 → 64) but wasteful
for M = 12 (144 → 256: 3.2× the MACs, and the backward's five 256×256 fp32 tiles spill registers);
tiling the query rows (BLOCK_M = 64 against all keys) is the next step there. Tile sizes and warps
are set by rule, not autotuned, and were checked only under the interpreter when written.

Same signature and semantics as :func:`swinlab.kernels.reference.window_attention`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...functional.windows import relative_position_index
from ..spec import WindowSpec

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` accumulated in fp32 (fp64 for fp64); ``UPCAST`` works round the interpreter's bf16 dot."""
    if UPCAST:  # triton's interpreter multiplies bf16 as its raw uint16 bits; bf16·bf16 is exact in fp32
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _window_tokens(wid, r, c, H, W, SH, SW, NW, NWW, stride_b, stride_h, stride_w,
                   MH: tl.constexpr, MW: tl.constexpr):
    """Element offsets ``(BLOCK_N,)`` of the tokens of flat window ``wid`` in a (B, H, W, ·) map."""
    b = wid // NW
    w = wid % NW
    y = ((w // NWW) * MH + r + SH) % H  # rolled-frame row → original row
    x = ((w % NWW) * MW + c + SW) % W
    return b.to(tl.int64) * stride_b + y.to(tl.int64) * stride_h + x.to(tl.int64) * stride_w


@triton.jit
def _region(wid, r, c, H, W, SH, SW, NW, NWW, MH: tl.constexpr, MW: tl.constexpr):
    """Region id ``(BLOCK_N,)`` of each token in the rolled frame (see ``functional.windows.region_ids``)."""
    w = wid % NW
    yr = (w // NWW) * MH + r
    xr = (w % NWW) * MW + c
    rh = tl.where(yr < H - MH, 0, tl.where(yr < H - SH, 1, 2))
    rw = tl.where(xr < W - MW, 0, tl.where(xr < W - SW, 1, 2))
    rh = tl.where(SH > 0, rh, 0)
    rw = tl.where(SW > 0, rw, 0)
    return rh * 3 + rw


@triton.jit
def _bias_tile(table_ptr, stride_t0, stride_t1, head, r, c, valid,
               MTH: tl.constexpr, MTW: tl.constexpr, ACC: tl.constexpr):
    """Relative position bias ``(BLOCK_N, BLOCK_N)`` of one head, gathered from the table."""
    idx = (r[:, None] - r[None, :] + MTH - 1) * (2 * MTW - 1) + (c[:, None] - c[None, :] + MTW - 1)
    pair = valid[:, None] & valid[None, :]
    bias = tl.load(table_ptr + idx * stride_t0 + head * stride_t1, mask=pair, other=0.0)
    return bias.to(ACC)


@triton.jit
def _logits(q, k, bias, wid, r, c, valid, scale, H, W, SH, SW, NW, NWW,
            MH: tl.constexpr, MW: tl.constexpr, USE_QK: tl.constexpr, MASK: tl.constexpr,
            PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``scale·QKᵀ + B (+ -100 across regions)``, ``-inf`` on padded key columns."""
    if USE_QK:  # noqa: SIM108 - a constexpr branch reads plainer than a ternary in a kernel
        s = _mm(q, tl.trans(k), PRECISION, UPCAST) * scale + bias
    else:
        s = bias
    if MASK:
        reg = _region(wid, r, c, H, W, SH, SW, NW, NWW, MH, MW)
        s = tl.where(reg[:, None] != reg[None, :], s - 100.0, s)
    return tl.where(valid[None, :], s, float("-inf"))


@triton.jit
def _fwd_kernel(
    qkv_ptr, table_ptr, out_ptr, lse_ptr,
    s_qb, s_qh, s_qw, s_ob, s_oh, s_ow, stride_t0, stride_t1,
    scale, H, W, SH, SW, NW, NWW, NUM_WINDOWS,
    HEADS: tl.constexpr, D: tl.constexpr, MH: tl.constexpr, MW: tl.constexpr,
    MTH: tl.constexpr, MTW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    WINDOWS: tl.constexpr, HAS_TABLE: tl.constexpr, MASK: tl.constexpr, USE_QK: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    head = tl.program_id(1)
    C: tl.constexpr = HEADS * D
    N: tl.constexpr = MH * MW
    n = tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    r = n // MW
    c = n % MW
    valid = n < N
    ch = head * D + dd  # this head's channels of q (k and v: + C, + 2C)
    if HAS_TABLE:
        bias = _bias_tile(table_ptr, stride_t0, stride_t1, head, r, c, valid, MTH, MTW, ACC)
    else:
        bias = tl.zeros((BLOCK_N, BLOCK_N), dtype=ACC)
    for t in range(WINDOWS):
        wid = pid * WINDOWS + t
        rows = valid & (wid < NUM_WINDOWS)
        io = rows[:, None] & (dd < D)[None, :]
        src = _window_tokens(wid, r, c, H, W, SH, SW, NW, NWW, s_qb, s_qh, s_qw, MH, MW)
        q = tl.zeros((BLOCK_N, BLOCK_D), dtype=qkv_ptr.dtype.element_ty)
        k = q
        if USE_QK:
            q = tl.load(qkv_ptr + src[:, None] + ch[None, :], mask=io, other=0.0)
            k = tl.load(qkv_ptr + src[:, None] + (C + ch)[None, :], mask=io, other=0.0)
        v = tl.load(qkv_ptr + src[:, None] + (2 * C + ch)[None, :], mask=io, other=0.0)
        s = _logits(q, k, bias, wid, r, c, valid, scale, H, W, SH, SW, NW, NWW,
                    MH, MW, USE_QK, MASK, PRECISION, UPCAST)
        m = tl.max(s, axis=1)
        p = tl.exp(s - m[:, None])
        denom = tl.sum(p, axis=1)
        o = _mm(p.to(v.dtype), v, PRECISION, UPCAST) / denom[:, None]
        dst = _window_tokens(wid, r, c, H, W, SH, SW, NW, NWW, s_ob, s_oh, s_ow, MH, MW)
        tl.store(out_ptr + dst[:, None] + ch[None, :], o.to(out_ptr.dtype.element_ty), mask=io)
        lse = (m + tl.log(denom)).to(lse_ptr.dtype.element_ty)
        tl.store(lse_ptr + (wid.to(tl.int64) * HEADS + head) * N + n, lse, mask=rows)


@triton.jit
def _bwd_kernel(
    qkv_ptr, table_ptr, dout_ptr, lse_ptr, dqkv_ptr, dbias_ptr,
    s_qb, s_qh, s_qw, s_ob, s_oh, s_ow, s_gb, s_gh, s_gw, stride_t0, stride_t1,
    scale, H, W, SH, SW, NW, NWW, NUM_WINDOWS,
    HEADS: tl.constexpr, D: tl.constexpr, MH: tl.constexpr, MW: tl.constexpr,
    MTH: tl.constexpr, MTW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    WINDOWS: tl.constexpr, HAS_TABLE: tl.constexpr, MASK: tl.constexpr, USE_QK: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    head = tl.program_id(1)
    C: tl.constexpr = HEADS * D
    N: tl.constexpr = MH * MW
    n = tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    r = n // MW
    c = n % MW
    valid = n < N
    ch = head * D + dd
    if HAS_TABLE:
        bias = _bias_tile(table_ptr, stride_t0, stride_t1, head, r, c, valid, MTH, MTW, ACC)
    else:
        bias = tl.zeros((BLOCK_N, BLOCK_N), dtype=ACC)
    dbias = tl.zeros((BLOCK_N, BLOCK_N), dtype=ACC)
    for t in range(WINDOWS):
        wid = pid * WINDOWS + t
        rows = valid & (wid < NUM_WINDOWS)
        io = rows[:, None] & (dd < D)[None, :]
        src = _window_tokens(wid, r, c, H, W, SH, SW, NW, NWW, s_qb, s_qh, s_qw, MH, MW)
        q = tl.zeros((BLOCK_N, BLOCK_D), dtype=qkv_ptr.dtype.element_ty)
        k = q
        if USE_QK:
            q = tl.load(qkv_ptr + src[:, None] + ch[None, :], mask=io, other=0.0)
            k = tl.load(qkv_ptr + src[:, None] + (C + ch)[None, :], mask=io, other=0.0)
        v = tl.load(qkv_ptr + src[:, None] + (2 * C + ch)[None, :], mask=io, other=0.0)
        gsrc = _window_tokens(wid, r, c, H, W, SH, SW, NW, NWW, s_ob, s_oh, s_ow, MH, MW)
        do = tl.load(dout_ptr + gsrc[:, None] + ch[None, :], mask=io, other=0.0)
        lse = tl.load(lse_ptr + (wid.to(tl.int64) * HEADS + head) * N + n, mask=rows, other=0.0)
        s = _logits(q, k, bias, wid, r, c, valid, scale, H, W, SH, SW, NW, NWW,
                    MH, MW, USE_QK, MASK, PRECISION, UPCAST)
        p = tl.exp(s - lse.to(ACC)[:, None])
        p = tl.where(rows[:, None], p, 0.0)
        dv = _mm(tl.trans(p.to(do.dtype)), do, PRECISION, UPCAST)  # (BLOCK_N, BLOCK_D)
        dp = _mm(do, tl.trans(v), PRECISION, UPCAST).to(ACC)  # (BLOCK_N, BLOCK_N)
        ds = p * (dp - tl.sum(p * dp, axis=1)[:, None])  # dL/dlogits
        dst = _window_tokens(wid, r, c, H, W, SH, SW, NW, NWW, s_gb, s_gh, s_gw, MH, MW)
        out_ty = dqkv_ptr.dtype.element_ty
        tl.store(dqkv_ptr + dst[:, None] + (2 * C + ch)[None, :], dv.to(out_ty), mask=io)
        if USE_QK:
            dsc = ds.to(q.dtype)
            dq = _mm(dsc, k, PRECISION, UPCAST) * scale
            dk = _mm(tl.trans(dsc), q, PRECISION, UPCAST) * scale
            tl.store(dqkv_ptr + dst[:, None] + ch[None, :], dq.to(out_ty), mask=io)
            tl.store(dqkv_ptr + dst[:, None] + (C + ch)[None, :], dk.to(out_ty), mask=io)
        if HAS_TABLE:
            dbias += ds
    if HAS_TABLE:
        pair = valid[:, None] & valid[None, :]
        tl.atomic_add(dbias_ptr + head * N * N + n[:, None] * N + n[None, :], dbias, mask=pair,
                      sem="relaxed")


INTERPRETED = type(_fwd_kernel).__name__ == "InterpretedFunction"
"""Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1`` before ``import triton``)."""

DEVICES: tuple[str, ...] = ("cpu", "cuda") if INTERPRETED else ("cuda",)
"""Devices whose tensors this backend takes."""


def _launch_config(windows: int, heads: int, n: int, d: int, windows_per_program: int | None) -> dict:
    """Tile sizes and windows per program of a launch (``tl.dot`` needs sides ≥ 16)."""
    block_n = max(16, triton.next_power_of_2(n))
    block_d = max(16, triton.next_power_of_2(d))
    if windows_per_program is None:  # amortise the bias gather while keeping ≥ ~8k programs
        windows_per_program = 1
        while windows_per_program < 8 and windows * heads // (2 * windows_per_program) >= 8192:
            windows_per_program *= 2
    return dict(BLOCK_N=block_n, BLOCK_D=block_d, WINDOWS=windows_per_program)


def _num_warps(block_n: int, per_warp: int) -> int:
    """Warps for ``(block_n, block_n)`` fp32 tiles at ``per_warp`` elements per warp (4 to 16)."""
    return max(4, min(16, block_n * block_n // per_warp))


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: IEEE fp32 unless torch allows TF32 matmuls (fp32 inputs only)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


class _WindowAttention(torch.autograd.Function):
    """Autograd wrapper of the fused forward / backward kernels."""

    @staticmethod
    def forward(ctx, qkv, table, heads, window, shift, table_window, mask, use_qk, scale, wpp):
        b, h, w, c3 = qkv.shape
        c = c3 // 3
        d = c // heads
        mh, mw = window
        n = mh * mw
        nw = (h // mh) * (w // mw)
        wide = qkv.dtype == torch.float64
        acc = tl.float64 if wide else tl.float32
        cfg = _launch_config(b * nw, heads, n, d, wpp)
        out = torch.empty(b, h, w, c, dtype=qkv.dtype, device=qkv.device)
        lse = torch.empty(b * nw, heads, n, dtype=torch.float64 if wide else torch.float32,
                          device=qkv.device)
        has_table = table is not None
        tab = table if has_table else qkv
        t0, t1 = (table.stride(0), table.stride(1)) if has_table else (0, 0)
        grid = (triton.cdiv(b * nw, cfg["WINDOWS"]), heads)
        meta = dict(HEADS=heads, D=d, MH=mh, MW=mw, MTH=table_window[0], MTW=table_window[1],
                    HAS_TABLE=has_table, MASK=mask, USE_QK=use_qk, ACC=acc,
                    PRECISION=_precision(qkv.dtype),
                    UPCAST=INTERPRETED and qkv.dtype == torch.bfloat16, **cfg)
        geom = (scale, h, w, shift[0], shift[1], nw, w // mw, b * nw)
        _fwd_kernel[grid](qkv, tab, out, lse, *qkv.stride()[:3], *out.stride()[:3], t0, t1, *geom, **meta,
                          num_warps=_num_warps(meta["BLOCK_N"], 1024))
        ctx.save_for_backward(qkv, table, lse)
        ctx.launch = (grid, geom, meta)
        ctx.mark_non_differentiable(lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        qkv, table, lse = ctx.saved_tensors
        grid, geom, meta = ctx.launch
        dout = dout if dout.stride(-1) == 1 else dout.contiguous()
        heads, n = meta["HEADS"], meta["MH"] * meta["MW"]
        dqkv = (torch.empty_like if meta["USE_QK"] else torch.zeros_like)(qkv)
        has_table = table is not None
        acc = torch.float64 if qkv.dtype == torch.float64 else torch.float32
        dbias = torch.zeros(heads, n, n, dtype=acc, device=qkv.device) if has_table else lse
        tab = table if has_table else qkv
        t0, t1 = (table.stride(0), table.stride(1)) if has_table else (0, 0)
        _bwd_kernel[grid](qkv, tab, dout, lse, dqkv, dbias, *qkv.stride()[:3], *dout.stride()[:3],
                          *dqkv.stride()[:3], t0, t1, *geom, **meta,
                          num_warps=_num_warps(meta["BLOCK_N"], 512))  # holds ~5 tiles
        dtable = None
        if has_table and ctx.needs_input_grad[1]:
            window, table_window = (meta["MH"], meta["MW"]), (meta["MTH"], meta["MTW"])
            index = relative_position_index(window, table_window).to(qkv.device).view(-1)  # (N*N,)
            dtable = torch.zeros(table.shape, dtype=acc, device=table.device)
            dtable.index_add_(0, index, dbias.permute(1, 2, 0).reshape(n * n, heads))  # (rows, heads)
            dtable = dtable.to(table.dtype)
        return dqkv, dtable, None, None, None, None, None, None, None, None


def window_attention(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec) -> torch.Tensor:
    """See :func:`swinlab.kernels.reference.window_attention`; fused in one Triton kernel."""
    return attend(qkv, table, spec)


def attend(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec, *,
           windows_per_program: int | None = None) -> torch.Tensor:
    """:func:`window_attention` with the windows handled by each program forced (tests, tuning)."""
    if qkv.device.type not in DEVICES:
        raise RuntimeError(
            f"the 'triton' window-attention backend needs a CUDA tensor, got one on {qkv.device} "
            "(to test it on CPU, set TRITON_INTERPRET=1 before triton is imported); on CPU use "
            "attention_backend='reference' or 'sdpa'"
        )
    heads = spec.num_heads
    if qkv.dtype not in _DTYPES:
        raise TypeError(f"the 'triton' backend takes qkv in {_DTYPES}, got {qkv.dtype}")
    if qkv.dim() != 4 or qkv.shape[-1] % (3 * heads):
        raise ValueError(f"qkv must be (B, H, W, 3·heads·d) with heads={heads}, got {tuple(qkv.shape)}")
    window, shift, table_window = tuple(spec.window), tuple(spec.shift), tuple(spec.table_window)
    _, h, w, _ = qkv.shape
    if h % window[0] or w % window[1]:
        raise ValueError(f"map {(h, w)} is not a multiple of the window {window}; pad it first")
    if not all(0 <= s < m for s, m in zip(shift, window, strict=True)):
        raise ValueError(f"shift {shift} must lie in [0, window) for window {window}")
    if table is not None:
        rows = (2 * table_window[0] - 1) * (2 * table_window[1] - 1)
        if any(m > t for m, t in zip(window, table_window, strict=True)):
            raise ValueError(f"window {window} is larger than the bias table's window {table_window}")
        if table.shape != (rows, heads):
            raise ValueError(f"table must be ({rows}, {heads}) for table_window {table_window}, "
                             f"got {tuple(table.shape)}")
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    return _WindowAttention.apply(qkv, table, heads, window, shift, table_window, spec.masked, spec.use_qk,
                                  float(spec.scale), windows_per_program)
