"""The fused CPU inference kernel (``attention_backend="native"``, :mod:`swinlab.kernels.native`): equal to
the reference, built once per source/compiler/CPU and cached, harmless to load (the process's
floating-point mode and OpenMP runtime stay as they were), a safe fallback to ``"sdpa"`` when it
cannot build, one opaque operator under ``torch.compile``, and training kernels (forward and gradients)
equal to the reference.

Tolerances: float32 1e-5 (relative and absolute; the kernel's exp is within 2.3e-7 and it sums in
float32). bfloat16: 2e-2 against the float64 answer for the same bf16-rounded inputs: the output is
rounded to bf16 (2^-9 relative) and the softmax weights are rounded to bf16 before P·V, as PyTorch's
own bf16 CPU attention does (the kernel measures ≈ 4e-3 on values of magnitude ≈ 1-3).
"""

from __future__ import annotations

import copy
import platform
import subprocess
import warnings

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import swinlab
from conftest import BrokenLibrary, assert_same_training_gradients
from swinlab import kernels
from swinlab.analysis.profiler import _EXTRA_FLOPS
from swinlab.functional.windows import relative_bias, shifted_window_mask
from swinlab.kernels import WindowSpec, native
from swinlab.kernels import reference as ref_mod
from swinlab.kernels import sdpa as sdpa_mod


def _no_compiler() -> str | None:
    try:
        native.compiler()
    except native.BuildError as e:
        return str(e)
    return None


# Skipped only where there is no C compiler at all; a kernel that does not build or fails its self-check
# where one exists is a failure (test_the_kernel_builds_and_passes_its_self_check_here), not a skip.
pytestmark = pytest.mark.skipif(_no_compiler() is not None, reason=f"no C compiler: {_no_compiler()}")

BF16_TOL = 2e-2
X86 = platform.machine().lower() in ("x86_64", "amd64")

# (map H, W, window, shift, heads, d, table): 7×7, 4×4 and 4×7 windows; 1 and many heads; d = 32, 16
# and 24 (not a multiple of 16); with a bias table or none; unshifted (bias shared: NB = 1) and shifted
# (per-window region masks: NB = nW).
CASES = [
    (14, 14, (7, 7), (0, 0), 3, 32, True),
    (14, 14, (7, 7), (3, 3), 3, 32, True),
    (14, 21, (7, 7), (3, 3), 1, 32, True),
    (8, 8, (4, 4), (2, 2), 4, 16, True),
    (8, 8, (4, 4), (0, 0), 6, 16, False),
    (8, 14, (4, 7), (2, 3), 2, 24, True),
    (8, 14, (4, 7), (0, 0), 1, 24, True),
    (7, 7, (7, 7), (0, 0), 12, 32, False),
    (14, 14, (7, 7), (3, 3), 2, 24, False),  # the mask alone
]


def _windows(case, dtype, batch=2, seed=0):
    h, w, window, shift, heads, d, has_table = case
    g = torch.Generator().manual_seed(seed)
    nw = (h // window[0]) * (w // window[1])
    n = window[0] * window[1]
    qkv = torch.randn(batch * nw, n, 3 * heads * d, generator=g).to(dtype)
    table = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, generator=g) if has_table else None
    spec = WindowSpec(num_heads=heads, window=window, shift=shift, table_window=window, scale=d**-0.5)
    return qkv, table, spec, (h, w)


def _exact(qkv, table, spec, map_size):
    """The reference in float64 on the same (possibly bf16-rounded) inputs."""
    t = table.double() if table is not None else None
    return ref_mod.attend_windows(qkv.double(), t, spec, map_size=map_size)


@pytest.fixture
def ran(monkeypatch):
    """Counts the kernel's own runs: an equality test must not pass on the fallback to sdpa."""
    calls = []
    real = native._call
    monkeypatch.setattr(native, "_call", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k))
    yield calls
    assert calls, f"the native kernel never ran ({native.unavailable_reason() or 'fell back to sdpa'})"


@pytest.fixture
def portable(request):
    """Run bfloat16 on the portable path (widened to float32) instead of AMX tiles."""
    old = native._KERNEL.portable_only
    native._KERNEL.portable_only = request.param
    yield request.param
    native._KERNEL.portable_only = old


def test_the_kernel_builds_and_passes_its_self_check_here():
    assert native.available(), native.unavailable_reason()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float32_equals_reference(case, ran):
    qkv, table, spec, map_size = _windows(case, torch.float32)
    with torch.inference_mode():
        out = native.attend_windows(qkv, table, spec, map_size=map_size)
        want = ref_mod.attend_windows(qkv, table, spec, map_size=map_size)
    assert out.dtype == torch.float32 and out.shape == want.shape
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("portable", [False, True], ids=["amx-or-portable", "portable"], indirect=True)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_bfloat16_equals_reference(case, portable, ran):
    qkv, table, spec, map_size = _windows(case, torch.bfloat16)
    if table is not None:
        table = table.bfloat16()
    with torch.inference_mode():
        out = native.attend_windows(qkv, table, spec, map_size=map_size)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), _exact(qkv, table, spec, map_size), rtol=BF16_TOL, atol=BF16_TOL)


def test_the_kernel_runs_and_one_or_two_threads_agree(monkeypatch):
    qkv, table, spec, map_size = _windows(CASES[1], torch.bfloat16, batch=3)
    calls = []
    real = native._call
    monkeypatch.setattr(native, "_call", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k))
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.inference_mode():
                outs.append(native.attend_windows(qkv, table, spec, map_size=map_size))
    finally:
        torch.set_num_threads(threads)
    assert calls == [qkv.shape, qkv.shape]  # the kernel itself ran (no silent fallback)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", ["swin_pico", "swin_micro_28"])
def test_whole_model_equals_reference(name, ran):
    ref = swinlab.create_model(name, attention_backend="reference").eval()
    fast = swinlab.create_model(name, attention_backend="native").eval()
    fast.load_state_dict(ref.state_dict())
    size, chans = ref.config.img_size, ref.config.in_chans
    x = torch.randn(2, chans, *size) if isinstance(size, tuple) else torch.randn(2, chans, size, size)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
        ref_bf, fast_bf = copy.deepcopy(ref).bfloat16(), copy.deepcopy(fast).bfloat16()
        want, got = ref_bf(x.bfloat16()).float(), fast_bf(x.bfloat16()).float()
        # both run bf16 end to end and round at different places: compare on the logits' scale
        assert (got - want).abs().max() <= 3e-2 * want.abs().max()
    with torch.no_grad():  # a changed bias table must reach the kernel (no stale cached bias)
        for m in (ref, fast):
            for pname, p in m.named_parameters():
                if pname.endswith("rel_pos.table"):
                    p.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)


def test_unsupported_calls_run_sdpa_silently(monkeypatch):
    calls = []
    real = native._call
    monkeypatch.setattr(native, "_call", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(0)
    big = WindowSpec(num_heads=1, window=(17, 17), shift=(0, 0), table_window=(17, 17), scale=0.1)  # N = 289
    wide = WindowSpec(num_heads=1, window=(2, 2), shift=(0, 0), table_window=(2, 2), scale=0.1)  # d = 136
    rel_only = WindowSpec(num_heads=2, window=(4, 4), shift=(2, 2), table_window=(4, 4), scale=0.25,
                          use_qk=False)
    problems = [(torch.randn(2, 289, 3, generator=g), big, (17, 17)),
                (torch.randn(2, 4, 3 * 136, generator=g), wide, (2, 2)),
                (torch.randn(4, 16, 3 * 32, generator=g), rel_only, (8, 8)),
                (torch.randn(4, 16, 3 * 32, generator=g, dtype=torch.float64), rel_only._replace(use_qk=True),
                 (8, 8))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for qkv, spec, map_size in problems:
            rows = (2 * spec.window[0] - 1) * (2 * spec.window[1] - 1)
            table = torch.randn(rows, spec.num_heads, generator=g, dtype=qkv.dtype)
            with torch.inference_mode():
                out = native.attend_windows(qkv, table, spec, map_size=map_size)
                want = ref_mod.attend_windows(qkv, table, spec, map_size=map_size)
            torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert calls == []


def test_kernel_bias_is_the_merged_bias_padded_and_cached():
    _, table, spec, map_size = _windows(CASES[1], torch.float32)
    with torch.inference_mode():
        bias = native.kernel_bias(table, spec, map_size, 3, 49, torch.device("cpu"))
        again = native.kernel_bias(table, spec, map_size, 3, 49, torch.device("cpu"))
    assert again is bias  # cached in inference
    assert bias.shape == (4, 3, 49, 64) and bias.dtype == torch.float32
    merged = relative_bias(table, spec.window, spec.table_window)[None] + shifted_window_mask(
        map_size, spec.window, spec.shift)[:, None]
    torch.testing.assert_close(bias[..., :49], merged * native.LOG2E)
    assert (bias[..., 49:] == native.PAD).all()


# --- loading is harmless ------------------------------------------------------------------------------

FTZ, DAZ = 1 << 15, 1 << 6


@pytest.mark.skipif(not X86, reason="MXCSR is x86's")
def test_loading_leaves_the_floating_point_mode_alone():
    assert native.available()
    assert native._KERNEL.lib.swinlab_wa_mxcsr() & (FTZ | DAZ) == 0  # as the library sees this thread
    tiny = torch.tensor(1e-40)
    assert (tiny * 1).item() != 0.0 and (tiny + 0).item() != 0.0  # denormals survive torch's own ops


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/maps")
def test_one_openmp_runtime_in_the_process():
    assert native.available()
    with open("/proc/self/maps") as f:
        gomp = {line.split()[-1] for line in f if "libgomp" in line}
    assert len(gomp) == 1, gomp  # the kernel bound to the runtime torch loaded: one thread pool


# --- the build ----------------------------------------------------------------------------------------


def _counting(monkeypatch):
    builds = []
    real = subprocess.run

    def run(cmd, *a, **k):
        if "-c" in cmd or "-shared" in cmd:
            builds.append(cmd)
        return real(cmd, *a, **k)

    monkeypatch.setattr(native.subprocess, "run", run)
    return builds


def test_build_is_cached_per_source_flags_and_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("SWINLAB_CACHE", str(tmp_path))
    builds = _counting(monkeypatch)
    path = native.build()
    assert len(builds) == 2 and path.parent == tmp_path and path.is_file()  # compile, link
    assert native.build() == path and len(builds) == 2  # the second call reuses the library
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left behind
    monkeypatch.setenv("SWINLAB_NATIVE_CFLAGS", "-DSWL_UNUSED=1")
    assert native.library_path() != path  # other flags: another library


@pytest.mark.skipif(not X86, reason="builds the AVX2 variant of an x86 kernel")
def test_portable_build_for_avx2_cpus_is_correct(tmp_path, monkeypatch):
    """What a CI machine without AVX-512 compiles: GCC vectors as two AVX2 registers (runs here too)."""
    monkeypatch.setenv("SWINLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("SWINLAB_NATIVE_CFLAGS", "-march=x86-64-v3")
    lib, caps = native._bind(native.build())
    assert caps & (native.CAP_AVX512 | native.CAP_AMX_COMPILED) == 0
    assert native.self_check(lib) is None
    for case in CASES[:6]:
        for dtype in (torch.float32, torch.bfloat16):
            qkv, table, spec, map_size = _windows(case, dtype)
            bias = native.kernel_bias(table, spec, map_size, spec.num_heads, qkv.shape[1], qkv.device)
            out = native._call(lib, qkv, bias, spec.num_heads, spec.scale)
            tol = 1e-5 if dtype == torch.float32 else BF16_TOL
            torch.testing.assert_close(out.double(), _exact(qkv, table, spec, map_size), rtol=tol, atol=tol)


@pytest.fixture
def fresh_kernel(monkeypatch):
    """A process state in which the kernel was never loaded."""
    monkeypatch.setattr(native, "_KERNEL", native._Kernel())
    return native._KERNEL


def test_failed_build_warns_once_and_auto_falls_back_to_sdpa(tmp_path, monkeypatch, fresh_kernel):
    monkeypatch.setenv("SWINLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    qkv, table, spec, map_size = _windows(CASES[1], torch.float32)
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning, match=r"no-such-compiler.*not found.*'sdpa' instead"):
            out = native.attend_windows(qkv, table, spec, map_size=map_size)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            again = native.attend_windows(qkv, table, spec, map_size=map_size)
            assert kernels.select_backend("cpu") == kernels.select_backend("cpu", torch.bfloat16) == "sdpa"
            model = swinlab.create_model("swin_pico", attention_backend="auto").eval()
            x = torch.randn(1, 3, 32, 32)
            y_auto = model(x)
        want = sdpa_mod.attend_windows(qkv, table, spec, map_size=map_size)
        model.set_attention_backend("sdpa")
        assert torch.equal(y_auto, model(x))
    assert torch.equal(out, want) and torch.equal(again, want)
    assert "not found" in native.unavailable_reason()


def test_a_kernel_that_fails_its_self_check_is_not_used(monkeypatch, fresh_kernel):
    monkeypatch.setattr(native, "self_check", lambda lib: "its self-check disagrees (simulated)")
    qkv, table, spec, map_size = _windows(CASES[0], torch.float32)
    with pytest.warns(RuntimeWarning, match="simulated"), torch.inference_mode():
        out = native.attend_windows(qkv, table, spec, map_size=map_size)
        torch.testing.assert_close(out, sdpa_mod.attend_windows(qkv, table, spec, map_size=map_size))
    assert not native.available() and not native.auto_eligible()


def test_first_use_inside_a_flop_counter_shows_the_kernel_alone(fresh_kernel):
    """The self-check at first use must not leak its own work into the user's dispatch modes."""
    qkv, table, spec, map_size = _windows(CASES[1], torch.float32)
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS) as counter:
        native.attend_windows(qkv, table, spec, map_size=map_size)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    bnw, n, c3 = qkv.shape
    assert counts == {"swinlab.native_window_attention": 4 * bnw * n * n * c3 // 3}


# --- training ------------------------------------------------------------------------------------------


@pytest.fixture
def trained(monkeypatch):
    """Counts the training kernels' runs: a gradient test must not pass on the fallback to the reference."""
    calls = []
    real = native._TrainAttention.apply
    monkeypatch.setattr(native._TrainAttention, "apply", lambda *a: calls.append(a[0].shape) or real(*a))
    yield calls
    assert calls, f"the training kernels never ran ({native.unavailable_reason() or 'fell back'})"


def _exact_grads(qkv, table, spec, map_size, grad):
    """Output and gradients (qkv, table) of the float64 reference on the same inputs."""
    x = qkv.detach().double().requires_grad_()
    t = table.detach().double().requires_grad_() if table is not None else None
    out = ref_mod.attend_windows(x, t, spec, map_size=map_size)
    wrt = [x] if t is None else [x, t]
    return out, torch.autograd.grad(out, wrt, grad.double())


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, BF16_TOL)])
@pytest.mark.parametrize("case", [*CASES, (4, 4, (2, 2), (0, 0), 8, 16, True),
                                  (6, 10, (3, 5), (1, 2), 2, 40, True)], ids=str)
def test_training_kernels_equal_the_reference_forward_and_gradients(case, dtype, tol, trained):
    """Output and gradients of qkv and of the bias table against the float64 reference on the same inputs,
    for 49-, 16-, 28-, 15- and 4-token windows, 8 to 40 channels per head (whole and padded vectors)."""
    qkv, table, spec, map_size = _windows(case, dtype)
    qkv.requires_grad_()
    if table is not None:
        table.requires_grad_()
    out = native.attend_windows(qkv, table, spec, map_size=map_size)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    wrt = [qkv] if table is None else [qkv, table]
    got = torch.autograd.grad(out, wrt, grad)
    want_out, want = _exact_grads(qkv, table, spec, map_size, grad)
    assert out.dtype == got[0].dtype == dtype and got[0].shape == qkv.shape
    torch.testing.assert_close(out.double(), want_out, rtol=tol, atol=tol)
    for g, w in zip(got, want, strict=True):  # on the gradient's own scale (bf16 rounds the inputs' products)
        assert (g.double() - w).abs().max() <= tol * max(1.0, w.abs().max().item())


def test_training_kernels_agree_on_one_or_two_threads_and_a_frozen_table(trained):
    qkv, table, spec, map_size = _windows(CASES[1], torch.float32, batch=3)
    threads = torch.get_num_threads()
    grads = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            x, t = qkv.clone().requires_grad_(), table.clone().requires_grad_()
            out = native.attend_windows(x, t, spec, map_size=map_size)
            grads.append((out, *torch.autograd.grad(out.square().sum(), [x, t])))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    torch.testing.assert_close(grads[0][2], grads[1][2], rtol=1e-5, atol=1e-5)  # per-thread sums, reordered
    x = qkv.clone().requires_grad_()  # a frozen table: the gradient of qkv alone
    out = native.attend_windows(x, table, spec, map_size=map_size)
    torch.testing.assert_close(torch.autograd.grad(out.square().sum(), x)[0], grads[0][1])


@pytest.mark.parametrize("name", ["swin_pico", "swin_demo_28"])
def test_whole_model_trains_as_the_reference(name, trained):
    ref = swinlab.create_model(name, attention_backend="reference")
    fast = swinlab.create_model(name, attention_backend="native")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, ref.config.in_chans, *ref.config.img_size)
    assert_same_training_gradients(fast, ref, x)
    with torch.autocast("cpu", torch.bfloat16):  # bf16-mixed: the kernel more exact than the reference
        for m in (ref, fast):
            m.zero_grad()
            m(x).float().square().mean().backward()
    for (pname, a), b in zip(fast.named_parameters(), ref.parameters(), strict=True):  # bf16 rounds in both
        assert (a.grad - b.grad).norm() <= 5e-2 * b.grad.norm() + 1e-6, pname


def test_training_kernels_that_disagree_fail_the_self_check():
    assert native._train_self_check(native._KERNEL.lib, np.random.default_rng(0)) is None
    broken = BrokenLibrary(native._KERNEL.lib, "swinlab_wa_train_backward")
    problem = native._train_self_check(broken, np.random.default_rng(0))
    assert problem is not None and "gradient of qkv" in problem


def test_training_under_a_flop_counter_runs_the_reference(monkeypatch):
    qkv, table, spec, map_size = _windows(CASES[1], torch.float32)
    calls = []
    monkeypatch.setattr(native._TrainAttention, "apply", lambda *a: calls.append(1))
    with FlopCounterMode(display=False) as counter:
        native.attend_windows(qkv.requires_grad_(), table, spec, map_size=map_size)
    assert not calls and counter.get_total_flops() > 0  # the reference's matmuls were counted


# --- auto, compile, export ----------------------------------------------------------------------------


def test_auto_takes_native_in_cpu_inference_where_eligible(monkeypatch):
    expected = "native" if native.auto_eligible() else "sdpa"
    for dtype in (torch.float32, torch.bfloat16):
        assert kernels.select_backend("cpu", dtype) == expected
        training = "native" if native.train_eligible() else "reference"
        assert kernels.select_backend("cpu", dtype, requires_grad=True) == training
    assert kernels.select_backend("cpu", torch.float64, requires_grad=True) == "reference"
    assert kernels.select_backend("cpu", torch.float64) == "sdpa"
    assert kernels.select_backend("cuda", torch.bfloat16) == "sdpa"
    monkeypatch.setattr(kernels, "exporting", lambda: True)  # torch.export / ONNX / jit.trace capturing
    assert kernels.select_backend("cpu") == "sdpa"


@pytest.mark.parametrize("caps, inference", [
    (native.CAP_AVX512 | native.CAP_AVX512BF16 | native.CAP_AMX_COMPILED | native.CAP_AMX, "native"),  # Xeon
    (native.CAP_AVX512 | native.CAP_AVX512BF16, "native"),  # AMD Zen 5: AVX-512 and bf16, no AMX
    (native.CAP_AVX512, "native"),
    (0, "sdpa"),  # AVX2 only (Zen 3), or not built: never measured faster there
])
def test_auto_takes_native_on_the_cpus_it_was_measured_faster_on(monkeypatch, caps, inference):
    monkeypatch.setattr(native, "capabilities", lambda: caps)
    for dtype in (torch.float32, torch.bfloat16):
        assert kernels.select_backend("cpu", dtype) == inference
        training = "native" if inference == "native" else "reference"
        assert kernels.select_backend("cpu", dtype, requires_grad=True) == training


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_jit_trace_of_auto_holds_no_custom_op():
    qkv, table, spec, map_size = _windows(CASES[1], torch.float32)
    traced = torch.jit.trace(lambda x: kernels._auto_windows(x, table, spec, map_size=map_size), qkv,
                             check_trace=False)
    assert "native_window_attention" not in str(traced.graph)
    torch.testing.assert_close(traced(qkv), ref_mod.attend_windows(qkv, table, spec, map_size=map_size),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["native", "auto"])
def test_torch_compile_keeps_the_op(backend):
    if backend == "auto" and not native.auto_eligible():
        pytest.skip("auto does not take the native kernel on this CPU")
    torch._dynamo.reset()
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager = swinlab.create_model("swin_pico", attention_backend=backend).eval()
    compiled = torch.compile(copy.deepcopy(eager), fullgraph=True, backend=recording)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
    targets = [n.target for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert sum(t is torch.ops.swinlab.native_window_attention.default or
               t is torch.ops.swinlab.native_window_attention for t in targets) == 4  # one per block
