"""The residual add + LayerNorm of CPU inference (:mod:`swinlab.kernels.norm`, the native library's
``swinlab_add_layer_norm``): the sum bitwise torch's, the norm torch's to bfloat16 rounding, the float32 path
of the library against float64, torch's own ops wherever a gradient, a graph capture or another dtype is
involved, and Swin's blocks giving the same logits either way.

Tolerance of the bfloat16 norm: one bfloat16 unit in the last place of the output (2^-8 relative): both
compute in float32 and round once; they differ only where float32 rounding of the mean or variance moves a
value across a rounding tie.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import swinlab
from conftest import BrokenLibrary, avx512_kernel_skip_reason, swin_pico_grads_under_bf16_autocast
from swinlab.kernels import native
from swinlab.kernels import norm as norm_kernels

# A kernel that does not build, or fails its self-check, where a compiler and AVX-512 exist is a failure
# (the `ran` fixture sees no call), not a skip.
pytestmark = pytest.mark.skipif(avx512_kernel_skip_reason() is not None,
                                reason=str(avx512_kernel_skip_reason()))

SHAPES = [(4, 7, 96), (3, 768), (5, 20), (2, 1), (1, 9, 4096)]  # whole vectors, tails, one channel, the limit


@pytest.fixture
def ran(monkeypatch):
    """Counts the kernel's runs: an equality test must not pass on the fallback."""
    calls = []
    real = native.add_layer_norm
    def counted(*args):
        calls.append((args[0].shape, "add" if args[1] is not None else "norm"))
        return real(*args)

    monkeypatch.setattr(native, "add_layer_norm", counted)
    return calls


def _norm(c: int, dtype=torch.bfloat16) -> nn.LayerNorm:
    norm = nn.LayerNorm(c)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm.to(dtype)


def _ulp(t: torch.Tensor) -> torch.Tensor:
    """One bfloat16 unit in the last place of each value."""
    return torch.ldexp(torch.ones_like(t, dtype=torch.float32), torch.frexp(t.float()).exponent - 8)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_add_layer_norm_is_torchs_sum_and_norm_in_bfloat16(shape, ran):
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(shape, generator=g).mul(3).add(1).bfloat16() for _ in range(2))
    norm = _norm(shape[-1])
    with torch.inference_mode():
        s, out = norm_kernels.add_layer_norm(x, y, norm)
        alone = norm_kernels.layer_norm(x, norm)
        want = norm(x + y)
    assert len(ran) == 2
    assert s.dtype == out.dtype == torch.bfloat16 and out.shape == shape
    assert torch.equal(s, x + y)
    assert ((out.float() - want.float()).abs() <= _ulp(want)).all()
    assert ((alone.float() - norm(x).float()).abs() <= _ulp(norm(x))).all()


def test_layer_norm_of_a_constant_row_is_its_bias(ran):
    x = torch.full((3, 96), 2.5, dtype=torch.bfloat16)
    norm = _norm(96)
    with torch.inference_mode():
        assert torch.equal(norm_kernels.layer_norm(x, norm), norm.bias.expand(3, 96))


def test_the_library_float32_path_matches_float64(ran):
    """The model does not take float32 (not measured faster); the library computes it: checked directly."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 40, generator=g), torch.randn(6, 40, generator=g)
    w, b = torch.randn(40, generator=g), torch.randn(40, generator=g)
    s, out = native.add_layer_norm(x, y, w, b, 1e-5)
    want = torch.nn.functional.layer_norm((x + y).double(), (40,), w.double(), b.double(), 1e-5)
    assert torch.equal(s, x + y)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("why", ["grad", "float32", "autocast-mixed", "broadcast", "no-affine", "too-wide",
                                 "compiling", "hooked"])
def test_torch_runs_where_the_kernel_does_not_apply(why, ran, monkeypatch):
    c = 5000 if why == "too-wide" else 32
    dtype = torch.float32 if why == "float32" else torch.bfloat16
    x = torch.randn(4, c, dtype=dtype, requires_grad=why == "grad")
    y = torch.randn(1 if why == "broadcast" else 4, c, dtype=dtype)
    norm = _norm(c, dtype)
    if why == "no-affine":
        norm = nn.LayerNorm(c, elementwise_affine=False).to(dtype)
    if why == "autocast-mixed":
        norm = _norm(c, torch.float32)  # bf16 input, float32 parameters: torch promotes, so must we
    if why == "compiling":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    seen = []
    if why == "hooked":
        norm.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.set_grad_enabled(why == "grad"):
        s, out = norm_kernels.add_layer_norm(x, y, norm)
        want = norm(x + y)
    if why == "broadcast":  # torch adds; the norm of the (4, c) sum may still run in the kernel
        assert [kind for _, kind in ran] == ["norm"]
        assert torch.equal(s, x + y) and ((out.float() - want.float()).abs() <= _ulp(want)).all()
        return
    assert not ran
    assert torch.equal(s, x + y) and torch.equal(out, want) and out.dtype == want.dtype
    assert len(seen) == (2 if why == "hooked" else 0)  # the module was called (then by the test)
    if why == "grad":
        out.sum().backward()
        assert x.grad is not None


@pytest.fixture
def trained(monkeypatch):
    """Counts the training kernels' forward runs."""
    calls = []
    real = native.layer_norm_forward
    monkeypatch.setattr(native, "layer_norm_forward", lambda *a: calls.append(a[0].dtype) or real(*a))
    return calls


@pytest.mark.parametrize("shape", [*SHAPES[:4], (2048, 96)], ids=str)
def test_training_layer_norm_matches_float64(shape, trained):
    """Output and dx against float64 maths on the same (rounded) input; dγ, dβ summed in float32 over every
    row (torch's own CPU backward for a bf16 input is far less exact there, so it is not the yardstick)."""
    g = torch.Generator().manual_seed(2)
    dtype = torch.bfloat16  # bf16-mixed's LayerNorm: bf16 input, float32 parameters
    norm = _norm(shape[-1], torch.float32)
    x = torch.randn(shape, generator=g).to(dtype).requires_grad_()
    dy = torch.randn(shape, generator=g).to(dtype)
    out = norm_kernels.layer_norm(x, norm)
    out.backward(dy)
    assert trained == [dtype] and out.dtype == x.grad.dtype == dtype
    exact = nn.LayerNorm(shape[-1]).double()
    exact.load_state_dict(norm.state_dict())
    xd = x.detach().double().requires_grad_()
    want = exact(xd)
    want.backward(dy.double())
    tol = 2**-8
    for got, ref in ((out, want), (x.grad, xd.grad)):
        torch.testing.assert_close(got.double(), ref.detach(), rtol=tol, atol=tol * ref.abs().max().item())
    for got, ref in ((norm.weight.grad, exact.weight.grad), (norm.bias.grad, exact.bias.grad)):
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item() + 1e-6)


def test_training_swin_gradients_match_torchs_under_bf16_autocast(trained, monkeypatch):
    """bf16-mixed training: every gradient but the norms' own (torch's dγ, dβ sum in lower precision for a
    bf16 input: see test_training_layer_norm_matches_float64) as torch's to bf16 rounding."""
    grads = swin_pico_grads_under_bf16_autocast(monkeypatch, norm_kernels, lambda *a: "torch")
    assert trained  # the first arm ran the kernels
    for n, g in grads["torch"].items():
        if "norm" not in n:
            tol = 0.05 * g.abs().max().item() + 1e-6
            torch.testing.assert_close(grads["native"][n], g, rtol=0.05, atol=tol, msg=n)


def test_float32_training_runs_torchs_layer_norm(trained):
    norm = _norm(32, torch.float32)
    x = torch.randn(4, 32, requires_grad=True)
    out = norm_kernels.layer_norm(x, norm)
    assert not trained and torch.equal(out, norm(x)) and out.grad_fn is not None


@pytest.mark.parametrize("name", ["swin_pico", "swin_micro_28"])
def test_swin_logits_are_the_same_either_way(name, ran, monkeypatch):
    model = swinlab.create_model(name, num_classes=10).eval().bfloat16()
    size = model.config.img_size
    x = torch.randn(4, model.config.in_chans, *size).bfloat16()
    with torch.inference_mode():
        fast = model(x).float()
        assert ran
        monkeypatch.setattr(norm_kernels, "_route", lambda *a: "torch")
        plain = model(x).float()
    # they differ at most by rare last-bit ties of single norms (measured: bitwise equal logits, both models)
    torch.testing.assert_close(fast, plain, rtol=0.01, atol=0.01 * plain.abs().max().item())
    assert (fast.argmax(-1) == plain.argmax(-1)).float().mean() >= 0.75


def test_a_norm_kernel_that_disagrees_fails_the_self_check():
    assert native.available(), native.unavailable_reason()
    assert native._norm_self_check(native._KERNEL.lib, np.random.default_rng(0)) is None
    broken = BrokenLibrary(native._KERNEL.lib, "swinlab_add_layer_norm")  # a norm that writes nothing
    problem = native._norm_self_check(broken, np.random.default_rng(0))
    assert problem is not None and "LayerNorm" in problem
    broken = BrokenLibrary(native._KERNEL.lib, "swinlab_layer_norm_backward")  # a backward writing nothing
    problem = native._norm_self_check(broken, np.random.default_rng(0))
    assert problem is not None and "training LayerNorm" in problem and "dx" in problem
