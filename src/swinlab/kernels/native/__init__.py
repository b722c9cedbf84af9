"""A fused CPU kernel of window attention for inference: ``attention_backend="native"``.

``window_attention.c`` (next to this file) computes ``Softmax(QKᵀ·scale + B)V`` for every (window, head)
of a batch in one pass, reading the ``(B*nW, N, 3C)`` projection and writing the ``(B*nW, N, C)`` layout
the output projection reads (see the file's header for its two paths: AMX tiles for bfloat16 where the
CPU has them, portable GCC vectors otherwise). Swin's problems are tiny (49 tokens × 32 channels), and
PyTorch's CPU flash attention spends most of its time on per-problem set-up there.

The C source is compiled on first use, never at import: with the system C compiler (``$CC``, else ``cc``
or ``gcc``) and ``-march=native``, into ``$SWINLAB_CACHE`` (default ``~/.cache/swinlab``), as
``window_attention-<key>.so``, the key a hash of the source, the flags, the compiler's version and the
CPU's flags, so a changed source, compiler or machine builds anew and a second process reuses the file.
The library is written to a temporary file in that folder and renamed into place (processes racing
to build never load a half-written file). ``$SWINLAB_NATIVE_CFLAGS`` adds flags (tests build the
portable path with ``-march=x86-64-v3``). The build takes about 2 s.

No ``-ffast-math``: linked with it, gcc adds ``crtfastmath.o``, whose constructor switches the whole
process to flush-to-zero when the library is loaded, changing torch's results on denormals. The
kernel's exp is its own polynomial, so it needs no fast-math libm either.

After loading, the kernel is checked once against a float64 softmax on small problems (float32 and
bfloat16, with and without a bias; the training kernels' forward and gradients in float32); if the
compiler is missing, the build fails or the check disagrees, swinlab warns once, naming the reason, and
every ``"native"`` call runs ``"sdpa"`` (``"reference"`` where a gradient is needed; the same maths)
instead: a call never fails for it.

Where a gradient is needed (training), the same call runs the file's training kernels instead: a forward
that keeps the float32 attention weights P and a fused backward (dQ, dK, dV and the bias's gradient in one
pass), every product in float32 on 16-float vectors; one autograd node (:class:`_TrainAttention`). They
replace the reference's dozen operators per call (two batched products, the casts, the bias and mask
adds, the softmax and their backwards): on the 2-core Xeon, 1.3-2.2× faster per call (fwd+bwd) than
``"reference"`` on the demo's and Swin-T's shapes, the whole bf16-mixed training step ×1.17
(swin_demo_28, batch 128) and ×1.06 (Swin-T, batch 8):
``benchmarks/results/cpu_native_attention_training.json``. Under ``torch.compile`` or an export the
training call runs ``"reference"``.

The same library holds the residual add + LayerNorm of CPU inference and training's LayerNorm
(``swinlab_add_layer_norm``, ``swinlab_layer_norm_forward/backward``; when they run:
:mod:`swinlab.kernels.norm`) and training's bias + GELU (``swinlab_bias_gelu_forward``,
``swinlab_gelu_backward``: :mod:`swinlab.kernels.gelu`), each checked at load against float64 maths too.

Shapes it does not take (more than 256 tokens per window, more than 128 channels per head, logits
without ``QKᵀ``), other dtypes than float32 and bfloat16, and other devices run ``"sdpa"`` silently
(``"reference"`` in training). While ``torch.compile``, ``torch.export`` or
``torch.jit.trace`` capture a graph, the call is the custom operator
``torch.ops.swinlab.native_window_attention`` (one opaque node, with a fake kernel for shapes); in eager
mode (no dispatch mode active either) the library is called directly (the dispatcher would add ~17 µs to
a 0.3-2 ms call). It runs on
``torch.get_num_threads()`` threads of the OpenMP runtime torch has loaded, each keeping its scratch
memory (≈ 100 KB for Swin's shapes) between calls.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils import _python_dispatch

from ...files import atomic_path
from ...functional.windows import relative_bias
from ..linear import exporting
from ..reference import _mask, on_whole_map
from ..reference import attend_windows as reference_attend_windows
from ..sdpa import _merged_bias
from ..sdpa import attend_windows as sdpa_attend_windows
from ..spec import WindowSpec, needs_grad

SOURCE = Path(__file__).with_name("window_attention.c")
DEVICES = ("cpu",)
MAX_TOKENS = 256  # per window (16 × 16); the kernel's limits
MAX_CHANNELS = 128  # per head
LOG2E = 1.4426950408889634  # the kernel's softmax runs in base 2: its bias comes times log2(e)
PAD = -1e30  # bias of the padding keys (the rows are padded to a multiple of 16)

# swinlab_wa_capabilities() bits
CAP_AVX512, CAP_AVX512BF16, CAP_AMX_COMPILED, CAP_AMX = 1, 2, 4, 8


class BuildError(RuntimeError):
    """The kernel could not be compiled, loaded or verified here."""


def cache_dir() -> Path:
    """Where built libraries are kept: ``$SWINLAB_CACHE``, else ``~/.cache/swinlab``."""
    return Path(os.environ.get("SWINLAB_CACHE") or Path.home() / ".cache" / "swinlab")


def compiler() -> list[str]:
    """The C compiler command: ``$CC`` (split like a shell word list), else ``cc`` or ``gcc`` on the PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    for name in ("cc", "gcc"):
        path = shutil.which(name)
        if path:
            return [path]
    raise BuildError("no C compiler found (set CC, or install gcc)")


def compile_flags() -> list[str]:
    """Flags of the compile step (the link step is ``-shared -fopenmp`` alone)."""
    flags = ["-O3", "-march=native", "-std=gnu11", "-fPIC", "-fopenmp", "-fno-math-errno",
             "-fno-trapping-math", "-Wall"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags.append("-mprefer-vector-width=512")  # gcc keeps to 256-bit vectors on AVX-512 CPUs otherwise
    return flags + shlex.split(os.environ.get("SWINLAB_NATIVE_CFLAGS", ""))


LINK_FLAGS = ["-shared", "-fopenmp"]


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise BuildError(f"C compiler {cmd[0]!r} not found") from None
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"{cmd[0]!r} could not run: {e}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BuildError(f"{' '.join(cmd[:2])} ... failed ({done.returncode}): " + " | ".join(tail))
    return done.stdout


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def library_path() -> Path:
    """The built library's path for this source, compiler, flags and CPU (it may not exist yet)."""
    cc = compiler()
    version = _run([*cc, "--version"])
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(cc).encode(), " ".join(compile_flags()).encode(),
                 " ".join(LINK_FLAGS).encode(), version.encode(), _cpu_flags().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"window_attention-{key.hexdigest()[:20]}.so"


def build() -> Path:
    """Compile the kernel unless this source, compiler and CPU have a library in the cache already."""
    path = library_path()
    if path.is_file():
        return path
    cc = compiler()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        obj = Path(tmp) / "window_attention.o"
        _run([*cc, *compile_flags(), "-c", str(SOURCE), "-o", str(obj)])
        with atomic_path(path, mode=0o755) as out:
            _run([*cc, *LINK_FLAGS, str(obj), "-o", str(out)])
    return path


class _Kernel:
    """The loaded library (or why there is none), set up once per process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tried = False
        self.lib: ctypes.CDLL | None = None
        self.caps = 0
        self.problem: str | None = None
        self.portable_only = False  # tests: run bfloat16 on the portable path too


_KERNEL = _Kernel()


def _bind(path: Path) -> tuple[ctypes.CDLL, int]:
    lib = ctypes.CDLL(str(path))
    fn = lib.swinlab_window_attention
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int,
                   ctypes.c_int]
    vp, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    lib.swinlab_wa_train_forward.restype = ctypes.c_int
    lib.swinlab_wa_train_forward.argtypes = [i32, vp, vp, vp, vp, vp, i64, i64, i32, i32, i32, f32, i32]
    lib.swinlab_wa_train_backward.restype = ctypes.c_int
    lib.swinlab_wa_train_backward.argtypes = [i32, vp, vp, vp, vp, vp, i64, i64, i32, i32, i32, f32, i32]
    lib.swinlab_wa_train_row.restype = ctypes.c_int
    lib.swinlab_wa_train_row.argtypes = [i32, i32]
    lib.swinlab_add_layer_norm.restype = ctypes.c_int
    lib.swinlab_add_layer_norm.argtypes = [i32, vp, vp, vp, vp, vp, vp, i64, i32, f32, i32]
    lib.swinlab_layer_norm_forward.restype = ctypes.c_int
    lib.swinlab_layer_norm_forward.argtypes = [i32, vp, vp, vp, vp, vp, vp, i64, i32, f32, i32]
    lib.swinlab_layer_norm_backward.restype = ctypes.c_int
    lib.swinlab_layer_norm_backward.argtypes = [i32, vp, vp, vp, vp, vp, vp, vp, vp, i64, i32, i32]
    lib.swinlab_bias_gelu_forward.restype = ctypes.c_int
    lib.swinlab_bias_gelu_forward.argtypes = [vp, vp, vp, vp, i64, i32, i32]
    lib.swinlab_gelu_backward.restype = ctypes.c_int
    lib.swinlab_gelu_backward.argtypes = [vp, vp, vp, vp, i64, i32, i32]
    lib.swinlab_wa_capabilities.restype = ctypes.c_int
    lib.swinlab_wa_mxcsr.restype = ctypes.c_uint
    return lib, lib.swinlab_wa_capabilities()


def _load() -> ctypes.CDLL | None:
    """Build (first use), load and check the kernel; on failure warn once and return ``None``."""
    state = _KERNEL
    if state.tried:
        return state.lib
    with state.lock:
        if state.tried:
            return state.lib
        try:
            state.lib, state.caps = _bind(build())
            problem = self_check(state.lib)
            if problem is not None:
                raise BuildError(problem)
        except (BuildError, OSError, AttributeError) as e:
            state.lib, state.caps, state.problem = None, 0, str(e)
            warnings.warn(f"swinlab's native window-attention kernel is unavailable: {e}; attention_backend "
                          f"'native' runs 'sdpa' instead (same results, slower)", RuntimeWarning,
                          stacklevel=3)
        state.tried = True
    return state.lib


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the kernel built, loaded and passed its check here (builds it on the first call; under
    ``torch.compile`` the answer is a constant of the graph)."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why the kernel cannot run here (after :func:`available` returned ``False``), else ``None``."""
    return _KERNEL.problem


def capabilities() -> int:
    """The library's ``CAP_*`` bits (0 if it is not available)."""
    return _KERNEL.caps if available() else 0


@torch.compiler.assume_constant_result
def auto_eligible() -> bool:
    """Whether ``attention_backend="auto"`` runs this kernel in CPU inference: it built and passed its
    check, and the CPU has AVX-512 vectors, where it was measured faster than ``"sdpa"`` in float32 and
    bfloat16 alike: with AMX tiles for bfloat16 on a 2-core Xeon (×2.8-4.1 per call in bf16, ×1.2-2.3 in
    float32: ``benchmarks/results/cpu_native_attention.json``) and on the portable path of a 2-core AMD
    EPYC Zen 5 without AMX (×3.0-3.6 in bf16, ×2.2-4.0 in float32; Swin-T at batch 8 ×1.17 / ×1.12:
    ``benchmarks/results/cpu_zen5_native_attention.json``). On AVX2-only CPUs it was not measured, and
    ``auto`` keeps ``"sdpa"``."""
    return bool(capabilities() & CAP_AVX512)


@torch.compiler.assume_constant_result
def train_eligible() -> bool:
    """Whether ``attention_backend="auto"`` trains with this kernel on the CPU: it built and passed its
    check, and the CPU has AVX-512 vectors, where it was measured faster than ``"reference"`` (a 2-core
    Xeon: ``benchmarks/results/cpu_native_attention_training.json``). Elsewhere it was not measured, and
    ``auto`` keeps ``"reference"``."""
    return bool(capabilities() & CAP_AVX512)


def _call(lib, qkv: torch.Tensor, bias: torch.Tensor | None, heads: int, scale: float, flags: int = 0):
    bnw, n, c3 = qkv.shape
    d = c3 // 3 // heads
    out = torch.empty((bnw, n, c3 // 3), dtype=qkv.dtype)
    nb = bias.shape[0] if bias is not None else 1
    if _KERNEL.portable_only:
        flags |= 1
    rc = lib.swinlab_window_attention(int(qkv.dtype == torch.bfloat16), qkv.data_ptr(),
                                      bias.data_ptr() if bias is not None else None, out.data_ptr(), bnw, nb,
                                      n, heads, d, scale, torch.get_num_threads(), flags)
    if rc != 0:
        raise RuntimeError(f"swinlab's native window-attention kernel failed (code {rc}: "
                           f"{'arguments out of range' if rc == 1 else 'out of memory'})")
    return out


@torch.library.custom_op("swinlab::native_window_attention", mutates_args=(), device_types="cpu")
def native_window_attention(qkv: torch.Tensor, bias: torch.Tensor | None, heads: int,
                            scale: float) -> torch.Tensor:
    """``(B*nW, N, 3C)`` float32 or bfloat16 projections → ``(B*nW, N, C)`` attention, ``bias`` the
    kernel's ``(NB, heads, N, N padded to 16)`` float32 bias (see :func:`kernel_bias`) or ``None``."""
    lib = _load()
    if lib is None:
        raise RuntimeError(f"swinlab's native window-attention kernel is unavailable: {_KERNEL.problem}")
    return _call(lib, qkv.contiguous(), None if bias is None else bias.contiguous(), heads, scale)


@native_window_attention.register_fake
def _(qkv, bias, heads, scale):
    return qkv.new_empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3))


# The kernel's bias per merged bias tensor of sdpa's inference cache (which hands out the same tensor
# while the table is unchanged). Held weakly: an entry dies with its merged bias.
_PADDED: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def _pad(merged: torch.Tensor, heads: int) -> torch.Tensor:
    nb, _, n, _ = merged.shape
    np_ = -(-n // 16) * 16
    bias = merged.expand(nb, heads, n, n).to(torch.float32) * LOG2E
    return F.pad(bias, (0, np_ - n), value=PAD).contiguous()  # (NB, heads, N, NP)


def kernel_bias(table: torch.Tensor | None, spec: WindowSpec, map_size, heads: int, n: int,
                device: torch.device) -> torch.Tensor | None:
    """The kernel's bias: sdpa's merged relative bias + region mask ``(nW or 1, heads or 1, N, N)`` in
    float32, for every head, times log2(e), each row padded to a multiple of 16 with -1e30."""
    mask_key = (tuple(map_size), tuple(spec.window), tuple(spec.shift), device) if spec.masked else None
    merged = _merged_bias(table, spec.window, spec.table_window, mask_key, torch.float32)
    if merged is None:
        return None
    if torch.compiler.is_compiling():
        return _pad(merged, heads)
    slot = _PADDED.get(id(merged))
    if slot is not None and slot[0]() is merged and slot[1].shape[1] == heads:
        return slot[1]
    bias = _pad(merged, heads)
    key = id(merged)
    _PADDED[key] = (weakref.ref(merged, lambda _, key=key: _PADDED.pop(key, None)), bias)
    return bias


def supports(qkv: torch.Tensor, spec: WindowSpec) -> bool:
    """Whether the kernel takes this call (else it runs ``"sdpa"``)."""
    if qkv.device.type != "cpu" or qkv.dtype not in (torch.float32, torch.bfloat16) or qkv.dim() != 3:
        return False
    _, n, c3 = qkv.shape
    heads = spec.num_heads
    if c3 % 3 or (c3 // 3) % heads:
        return False
    return spec.use_qk and 1 <= n <= MAX_TOKENS and 1 <= c3 // 3 // heads <= MAX_CHANNELS


def _dispatch_mode_active() -> bool:
    """Whether a ``TorchDispatchMode`` (``FlopCounterMode``, ...) sees the ops (a private torch helper;
    where it is missing, assume one is, and take the operator)."""
    current = getattr(_python_dispatch, "_get_current_dispatch_mode", None)
    return current is None or current() is not None


def attend_windows(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec, *,
                   map_size) -> torch.Tensor:
    """See :func:`swinlab.kernels.reference.attend_windows`: ``(B*nW, N, 3C)`` → ``(B*nW, N, C)``."""
    if needs_grad(qkv, table):
        return train_attend_windows(qkv, table, spec, map_size=map_size)
    if not supports(qkv, spec) or not available():
        return sdpa_attend_windows(qkv, table, spec, map_size=map_size)
    n = qkv.shape[1]
    bias = kernel_bias(table, spec, map_size, spec.num_heads, n, qkv.device)
    qkv = qkv.contiguous()
    if (torch.compiler.is_compiling() or exporting() or type(qkv) is not torch.Tensor
            or _dispatch_mode_active()):
        # the operator: one node of a compiled or traced graph, seen by dispatch modes (FlopCounterMode),
        # and fake tensors go to its fake kernel
        return torch.ops.swinlab.native_window_attention(qkv, bias, spec.num_heads, float(spec.scale))
    return _call(_KERNEL.lib, qkv, bias, spec.num_heads, spec.scale)  # eager: skip the dispatcher (~17 us)


def _check(rc: int) -> None:
    if rc != 0:
        raise RuntimeError(f"swinlab's native window-attention kernel failed (code {rc}: "
                           f"{'arguments out of range' if rc == 1 else 'out of memory'})")


class _TrainAttention(torch.autograd.Function):
    """The training kernels as one autograd node: ``(qkv, bias)`` → attention; ``bias`` the
    ``(heads, N, N)`` float32 relative bias (or ``None``), ``mask`` the ``(nW, N, N)`` float32 region mask
    (or ``None``; no gradient), added in the kernel. The forward keeps the float32 attention weights
    ``(B*nW, heads, N, NP)`` (rows padded to the kernel's width)."""

    @staticmethod
    def forward(ctx, qkv, bias, mask, heads: int, scale: float):
        bnw, n, c3 = qkv.shape
        d = c3 // 3 // heads
        bias = None if bias is None else bias.detach().contiguous()  # (heads, N, N)
        mask = None if mask is None else mask.contiguous()  # (nW, N, N)
        nm = 1 if mask is None else mask.shape[0]
        out = qkv.new_empty((bnw, n, c3 // 3))
        p = torch.empty((bnw, heads, n, _KERNEL.lib.swinlab_wa_train_row(n, d)), dtype=torch.float32)
        _check(_KERNEL.lib.swinlab_wa_train_forward(
            int(qkv.dtype == torch.bfloat16), qkv.data_ptr(), None if bias is None else bias.data_ptr(),
            None if mask is None else mask.data_ptr(), out.data_ptr(), p.data_ptr(), bnw, nm, n, heads, d,
            scale, torch.get_num_threads()))
        ctx.save_for_backward(qkv, p)
        ctx.geometry = (nm, heads, d, scale, bias is not None and ctx.needs_input_grad[1])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        qkv, p = ctx.saved_tensors
        nm, heads, d, scale, bias_grad = ctx.geometry
        bnw, n, _ = qkv.shape
        threads = torch.get_num_threads()
        grad = grad.to(qkv.dtype).contiguous()
        dqkv = torch.empty_like(qkv)
        dbias = torch.zeros((threads, *p.shape[1:]), dtype=torch.float32) if bias_grad else None
        _check(_KERNEL.lib.swinlab_wa_train_backward(
            int(qkv.dtype == torch.bfloat16), qkv.data_ptr(), p.data_ptr(), grad.data_ptr(), dqkv.data_ptr(),
            None if dbias is None else dbias.data_ptr(), bnw, nm, n, heads, d, scale, threads))
        return dqkv, None if dbias is None else dbias.sum(0)[..., :n], None, None, None


def train_attend_windows(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec, *,
                         map_size) -> torch.Tensor:
    """:func:`attend_windows` where a gradient is needed: the training kernels (forward keeping the
    attention weights, fused backward), ``"reference"`` where they cannot run."""
    if (not supports(qkv, spec) or not available() or torch.compiler.is_compiling() or exporting()
            or type(qkv) is not torch.Tensor or _dispatch_mode_active()):
        # graph captures, tensor subclasses and dispatch modes (FlopCounterMode) see the reference's operators
        return reference_attend_windows(qkv, table, spec, map_size=map_size)
    bias = relative_bias(table, spec.window, spec.table_window).float() if table is not None else None
    mask = _mask(tuple(map_size), spec.window, spec.shift, qkv.device, torch.float32) if spec.masked else None
    return _TrainAttention.apply(qkv.contiguous(), bias, mask, spec.num_heads, float(spec.scale))


def window_attention(qkv: torch.Tensor, table: torch.Tensor | None, spec: WindowSpec) -> torch.Tensor:
    """See :func:`swinlab.kernels.reference.window_attention` (on the whole ``(B, H, W, 3C)`` map)."""
    return on_whole_map(attend_windows, qkv, table, spec)


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits (round to nearest even, as torch rounds; no NaNs here)."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _from_bf16(h: np.ndarray) -> np.ndarray:
    return (h.astype(np.uint32) << 16).view(np.float32)


def self_check(lib) -> str | None:
    """Run the kernel on small problems (float32 and bfloat16; 49, 16 and 5 tokens; a per-window bias, a
    shared one and none; 32, 24 and 8 channels) against a float64 softmax. ``None`` if it agrees, else
    what disagreed. NumPy and the library only, no torch operator: a first use inside a profiler, a
    ``TorchDispatchMode`` or a graph capture must not show the check's work."""
    rng = np.random.default_rng(0)
    cases = [(4, 49, 2, 32, 2), (3, 16, 3, 24, 0), (2, 5, 1, 8, 1)]  # (windows, N, heads, d, bias blocks)
    for bnw, n, heads, d, nb in cases:
        c = heads * d
        np_ = -(-n // 16) * 16
        qkv = rng.standard_normal((bnw, n, 3 * c)).astype(np.float32)
        merged = rng.standard_normal((nb, heads, n, n)).astype(np.float32) if nb else None
        bias = None
        if merged is not None:
            bias = np.full((nb, heads, n, np_), PAD, dtype=np.float32)
            bias[..., :n] = merged * np.float32(LOG2E)
        for code, tol in ((0, 1e-5), (1, 4e-2)):
            x = qkv if code == 0 else _bf16(qkv)
            xf = (qkv if code == 0 else _from_bf16(x)).astype(np.float64)
            q, k, v = xf.reshape(bnw, n, 3, heads, d).transpose(2, 0, 3, 1, 4)  # 3 × (bnw, heads, n, d)
            logits = q @ k.transpose(0, 1, 3, 2) * d**-0.5
            if merged is not None:
                logits = logits + np.tile(merged.astype(np.float64), (bnw // nb, 1, 1, 1))
            p = np.exp(logits - logits.max(-1, keepdims=True))
            want = ((p / p.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(bnw, n, c)
            out = np.zeros((bnw, n, c), dtype=np.float32 if code == 0 else np.uint16)
            x = np.ascontiguousarray(x)
            rc = lib.swinlab_window_attention(code, x.ctypes.data, None if bias is None else bias.ctypes.data,
                                              out.ctypes.data, bnw, nb or 1, n, heads, d, d**-0.5,
                                              torch.get_num_threads(), 0)
            got = (out if code == 0 else _from_bf16(out)).astype(np.float64)
            err = float(np.abs(got - want).max()) if rc == 0 else float("inf")
            if not err <= tol * max(1.0, float(np.abs(want).max())):
                dtype = "float32" if code == 0 else "bfloat16"
                return (f"its self-check disagrees with a float64 softmax in {dtype} (N={n}, d={d}): "
                        f"{'max error ' + format(err, '.3g') if rc == 0 else f'returned {rc}'}")
    return _train_self_check(lib, rng) or _norm_self_check(lib, rng)


def _train_self_check(lib, rng) -> str | None:
    """The training kernels in float32 on two problems per bias block against float64 maths: the output,
    and the gradients of q, k, v and the bias (32 and 2 × 8 tokens so that a whole and a padded key vector
    run, 24 channels: a padded channel vector)."""
    for bnw, n, heads, d, nb in ((4, 20, 2, 24, 2), (2, 32, 1, 8, 1)):
        c = heads * d
        qkv = rng.standard_normal((bnw, n, 3 * c)).astype(np.float32)
        bias = rng.standard_normal((heads, n, n)).astype(np.float32)
        mask = np.where(rng.random((nb, n, n)) < 0.2, -100.0, 0.0).astype(np.float32)  # a region mask
        grad = rng.standard_normal((bnw, n, c)).astype(np.float32)
        scale = d**-0.5
        q, k, v = qkv.astype(np.float64).reshape(bnw, n, 3, heads, d).transpose(2, 0, 3, 1, 4)
        g = grad.astype(np.float64).reshape(bnw, n, heads, d).transpose(0, 2, 1, 3)  # (bnw, heads, n, d)
        logits = (q @ k.transpose(0, 1, 3, 2) * scale + bias.astype(np.float64)
                  + np.tile(mask.astype(np.float64)[:, None], (bnw // nb, 1, 1, 1)))
        e = np.exp(logits - logits.max(-1, keepdims=True))
        prob = e / e.sum(-1, keepdims=True)
        want = (prob @ v).transpose(0, 2, 1, 3).reshape(bnw, n, c)
        dp = g @ v.transpose(0, 1, 3, 2)
        ds = prob * (dp - (prob * dp).sum(-1, keepdims=True))
        dq, dk, dv = ds @ k * scale, ds.transpose(0, 1, 3, 2) @ q * scale, prob.transpose(0, 1, 3, 2) @ g
        want_dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(bnw, n, 3 * c)
        row = lib.swinlab_wa_train_row(n, d)
        out = np.zeros((bnw, n, c), dtype=np.float32)
        p = np.zeros((bnw, heads, n, row), dtype=np.float32)
        dqkv = np.zeros_like(qkv)
        dbias = np.zeros((1, heads, n, row), dtype=np.float32)
        rc = lib.swinlab_wa_train_forward(0, qkv.ctypes.data, bias.ctypes.data, mask.ctypes.data,
                                          out.ctypes.data, p.ctypes.data, bnw, nb, n, heads, d, scale, 1)
        rc = rc or lib.swinlab_wa_train_backward(0, qkv.ctypes.data, p.ctypes.data, grad.ctypes.data,
                                                 dqkv.ctypes.data, dbias.ctypes.data, bnw, nb, n, heads, d,
                                                 scale, 1)
        if rc != 0:
            return f"its training kernels' self-check returned {rc} (N={n}, d={d})"
        for name, got, exact in (("output", out, want), ("gradient of qkv", dqkv, want_dqkv),
                                 ("gradient of the bias", dbias[0, ..., :n], ds.sum(0))):
            err = float(np.abs(got - exact).max())
            if not err <= 1e-5 * max(1.0, float(np.abs(exact).max())):
                return (f"its training kernels' self-check disagrees with float64 maths in the {name} "
                        f"(N={n}, d={d}): max error {err:.3g}")
    return None


def _norm_self_check(lib, rng) -> str | None:
    """The residual add + LayerNorm on rows of 48 and 20 channels (whole vectors and a tail) against float64
    maths, float32 and bfloat16, with and without the add (the sum itself exact: rounded once, as torch)."""
    for rows, c in ((5, 48), (3, 20)):
        x, y = (rng.standard_normal((rows, c)).astype(np.float32) * 3 + 1 for _ in range(2))
        w, b = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
        for code, tol in ((0, 1e-5), (1, 2e-2)):
            cast = (lambda a: a) if code == 0 else _bf16
            back = (lambda a: a) if code == 0 else _from_bf16
            xs, ys, ws, bs = (np.ascontiguousarray(cast(a)) for a in (x, y, w, b))
            for add in (False, True):
                s_ = np.zeros_like(xs)
                out = np.zeros_like(xs)
                rc = lib.swinlab_add_layer_norm(
                    code, xs.ctypes.data, ys.ctypes.data if add else None, s_.ctypes.data if add else None,
                    out.ctypes.data, ws.ctypes.data, bs.ctypes.data, rows, c, 1e-5, 1)
                want_s = back(cast(back(xs) + back(ys))) if add else back(xs)
                v = want_s.astype(np.float64)
                want = ((v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5)
                        * back(ws).astype(np.float64) + back(bs).astype(np.float64))
                err = float(np.abs(back(out) - want).max()) if rc == 0 else float("inf")
                if (add and rc == 0 and not np.array_equal(back(s_), want_s)) or not err <= tol * float(
                        np.abs(want).max()):
                    dtype = "float32" if code == 0 else "bfloat16"
                    what = f"max error {err:.3g}" if rc == 0 else f"returned {rc}"
                    return (f"its LayerNorm self-check disagrees with float64 maths in {dtype} (c={c}, "
                            f"add={add}): {what}")
    return _norm_train_self_check(lib, rng) or _gelu_self_check(lib, rng)


def _gelu_self_check(lib, rng) -> str | None:
    """Training's bias + GELU (bfloat16, rows of 48 and 20 channels: whole vectors and a tail, with a bias
    and without, one thread and two) against float64 maths: gelu and gelu' of h + b within bf16 rounding,
    the backward's dh = dg * d as one float32 product rounded to bf16, and the bias gradient its float32
    column sums."""
    erf = np.vectorize(math.erf)
    for rows, c in ((6, 48), (5, 20)):
        h = _bf16((rng.standard_normal((rows, c)) * 3).astype(np.float32))
        h[0, :7] = _bf16(np.array([0.0, -0.0, 8.0, -8.0, 30.0, -30.0, 1e-3], dtype=np.float32))
        b = rng.standard_normal(c).astype(np.float32)
        dg = _bf16(rng.standard_normal((rows, c)).astype(np.float32))
        for bias, threads in ((b, 1), (None, 2)):
            g, d, dh = (np.zeros((rows, c), np.uint16) for _ in range(3))
            db = np.zeros(c, np.float32)
            rc = lib.swinlab_bias_gelu_forward(h.ctypes.data, None if bias is None else bias.ctypes.data,
                                               g.ctypes.data, d.ctypes.data, rows, c, threads)
            rc = rc or lib.swinlab_gelu_backward(dg.ctypes.data, d.ctypes.data, dh.ctypes.data,
                                                 db.ctypes.data, rows, c, threads)
            if rc != 0:
                return f"its training GELU's self-check returned {rc}"
            v = _from_bf16(h).astype(np.float64) + (0.0 if bias is None else bias.astype(np.float64))
            cdf = 0.5 * (1.0 + erf(v / math.sqrt(2.0)))
            want_dh = _from_bf16(_bf16(_from_bf16(dg) * _from_bf16(d)))
            slope = cdf + v * np.exp(-v * v / 2) / math.sqrt(2 * math.pi)
            for name, got, want in (("gelu", _from_bf16(g), v * cdf), ("gelu'", _from_bf16(d), slope),
                                    ("dh", _from_bf16(dh), want_dh),
                                    ("dbias", db, want_dh.astype(np.float64).sum(0))):
                err = np.abs(got - want) / (np.abs(want) + 1e-6)
                if not float(err.max()) <= (1e-5 if name in ("dh", "dbias") else 8e-3):
                    return (f"its training GELU's self-check disagrees with float64 maths in {name} (c={c}): "
                            f"largest relative error {float(err.max()):.3g}")
    return None


def _norm_train_self_check(lib, rng) -> str | None:
    """The training LayerNorm in float32 (40 rows of 24 channels, one thread and two) against float64 maths:
    the output, dx, dγ and dβ."""
    rows, c = 40, 24
    x, dy = (rng.standard_normal((rows, c)).astype(np.float32) for _ in range(2))
    w, b = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
    xd, dyd, wd = x.astype(np.float64), dy.astype(np.float64), w.astype(np.float64)
    xhat = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-5)
    g = dyd * wd
    dx = (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) / np.sqrt(
        xd.var(-1, keepdims=True) + 1e-5)
    exact = {"output": xhat * wd + b, "dx": dx, "dweight": (dyd * xhat).sum(0), "dbias": dyd.sum(0)}
    for threads in (1, 2):
        got = {k: np.zeros_like(v, dtype=np.float32) for k, v in exact.items()}
        mean, rstd = np.zeros(rows, np.float32), np.zeros(rows, np.float32)
        rc = lib.swinlab_layer_norm_forward(0, x.ctypes.data, w.ctypes.data, b.ctypes.data,
                                            got["output"].ctypes.data, mean.ctypes.data, rstd.ctypes.data,
                                            rows, c, 1e-5, threads)
        rc = rc or lib.swinlab_layer_norm_backward(
            0, x.ctypes.data, w.ctypes.data, mean.ctypes.data, rstd.ctypes.data, dy.ctypes.data,
            got["dx"].ctypes.data, got["dweight"].ctypes.data, got["dbias"].ctypes.data, rows, c, threads)
        if rc != 0:
            return f"its training LayerNorm's self-check returned {rc}"
        for name, want in exact.items():
            err = float(np.abs(got[name] - want).max())
            if not err <= 1e-5 * max(1.0, float(np.abs(want).max())):
                return (f"its training LayerNorm's self-check disagrees with float64 maths in {name} "
                        f"({threads} thread{'s' if threads > 1 else ''}): max error {err:.3g}")
    return None


def add_layer_norm(x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``s = x + y`` and ``LayerNorm(s)`` over the last axis in one pass (``y=None``: ``LayerNorm(x)``, no
    ``s``), by the library (call :func:`available` first). Contiguous CPU tensors of one dtype, float32 or
    bfloat16; no autograd (see :mod:`swinlab.kernels.norm`, which decides when this runs)."""
    c = x.shape[-1]
    s = None if y is None else torch.empty_like(x)
    out = torch.empty_like(x)
    _check(_KERNEL.lib.swinlab_add_layer_norm(
        int(x.dtype == torch.bfloat16), x.data_ptr(), None if y is None else y.data_ptr(),
        None if s is None else s.data_ptr(), out.data_ptr(), weight.data_ptr(), bias.data_ptr(),
        x.numel() // c, c, eps, torch.get_num_threads()))
    return s, out


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training LayerNorm's forward: ``x`` float32 or bfloat16, ``weight`` and ``bias`` float32, contiguous
    CPU tensors; ``(y, mean, rstd)``, ``y`` in ``x``'s dtype (as torch's mixed-type LayerNorm), the float32
    mean and 1/std per row."""
    c = x.shape[-1]
    rows = x.numel() // c
    y = torch.empty_like(x)
    mean, rstd = (torch.empty(rows, dtype=torch.float32) for _ in range(2))
    _check(_KERNEL.lib.swinlab_layer_norm_forward(
        int(x.dtype == torch.bfloat16), x.data_ptr(), weight.data_ptr(), bias.data_ptr(), y.data_ptr(),
        mean.data_ptr(), rstd.data_ptr(), rows, c, eps, torch.get_num_threads()))
    return y, mean, rstd


def layer_norm_backward(x, weight, mean, rstd, dy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training LayerNorm's backward from :func:`layer_norm_forward`'s ``mean`` and ``rstd``, ``dy``
    contiguous in ``x``'s dtype: ``(dx, dweight, dbias)``, ``dx`` in ``x``'s dtype, the others float32."""
    c = x.shape[-1]
    dx = torch.empty_like(x)
    dw, db = weight.new_empty(c), weight.new_empty(c)
    _check(_KERNEL.lib.swinlab_layer_norm_backward(
        int(x.dtype == torch.bfloat16), x.data_ptr(), weight.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
        dy.data_ptr(), dx.data_ptr(), dw.data_ptr(), db.data_ptr(), x.numel() // c, c,
        torch.get_num_threads()))
    return dx, dw, db


def bias_gelu_forward(h: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``gelu(h + bias)`` and ``gelu'(h + bias)`` (exact, erf form), both bfloat16: ``h`` a contiguous
    bfloat16 CPU tensor ``(..., C)``, ``bias`` ``(C,)`` float32 or ``None``; no autograd (see
    :mod:`swinlab.kernels.gelu`, which decides when this runs)."""
    c = h.shape[-1]
    g, d = torch.empty_like(h), torch.empty_like(h)
    _check(_KERNEL.lib.swinlab_bias_gelu_forward(
        h.data_ptr(), None if bias is None else bias.data_ptr(), g.data_ptr(), d.data_ptr(), h.numel() // c,
        c, torch.get_num_threads()))
    return g, d


def gelu_backward(dg: torch.Tensor, d: torch.Tensor,
                  bias_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``dh = dg * d`` (bfloat16, ``d`` from :func:`bias_gelu_forward`; both contiguous, one shape) and, if
    ``bias_grad``, the bias's gradient: ``dh`` summed over every axis but the last, in float32."""
    c = d.shape[-1]
    dh = torch.empty_like(d)
    db = torch.empty(c, dtype=torch.float32) if bias_grad else None
    _check(_KERNEL.lib.swinlab_gelu_backward(
        dg.data_ptr(), d.data_ptr(), dh.data_ptr(), None if db is None else db.data_ptr(), d.numel() // c, c,
        torch.get_num_threads()))
    return dh, db


__all__ = [
    "DEVICES",
    "add_layer_norm",
    "attend_windows",
    "auto_eligible",
    "available",
    "bias_gelu_forward",
    "build",
    "gelu_backward",
    "kernel_bias",
    "layer_norm_backward",
    "layer_norm_forward",
    "native_window_attention",
    "supports",
    "train_attend_windows",
    "train_eligible",
    "unavailable_reason",
    "window_attention",
]
