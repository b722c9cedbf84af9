"""Training's bias + GELU (:mod:`swinlab.kernels.gelu`, the native library's ``swinlab_bias_gelu_forward`` and
``swinlab_gelu_backward``): the kernels against float64 maths, the MLP's and Swin's gradients as torch's
under bf16 autocast, torch's own ops wherever the kernels do not apply, and the self-check catching a
kernel that writes nothing.

Tolerances: the forward rounds once to bfloat16 (2^-8 relative); ``dh = dg · gelu'`` rounds twice (gelu'
is kept in bfloat16), so 2^-7; the bias gradient sums the rounded ``dh`` in float32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import BrokenLibrary, avx512_kernel_skip_reason, swin_pico_grads_under_bf16_autocast
from swinlab.kernels import gelu as gelu_kernels
from swinlab.kernels import native
from swinlab.layers import Mlp

pytestmark = pytest.mark.skipif(avx512_kernel_skip_reason() is not None,
                                reason=str(avx512_kernel_skip_reason()))

SHAPES = [(4, 7, 384), (5, 20), (3, 1), (2, 9, 1536)]  # whole vectors, a tail, one channel, a wide row


@pytest.fixture
def ran(monkeypatch):
    """Counts the forward kernel's runs: an equality test must not pass on the fallback."""
    calls = []
    real = native.bias_gelu_forward
    monkeypatch.setattr(native, "bias_gelu_forward", lambda h, b: calls.append(h.shape) or real(h, b))
    return calls


def _exact(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 gelu(v) and gelu'(v)."""
    cdf = 0.5 * (1 + torch.erf(v / math.sqrt(2)))
    return v * cdf, cdf + v * torch.exp(-v * v / 2) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_kernels_match_float64(shape, with_bias):
    assert native.available(), native.unavailable_reason()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(shape, generator=g).mul(3).bfloat16()
    bias = torch.randn(shape[-1], generator=g) if with_bias else None
    dg = torch.randn(shape, generator=g).bfloat16()
    out, d = native.bias_gelu_forward(h, bias)
    dh, db = native.gelu_backward(dg, d, bias_grad=True)
    v = h.double() + (bias.double() if with_bias else 0)
    want, slope = _exact(v)
    assert out.dtype == d.dtype == dh.dtype == torch.bfloat16 and db.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, rtol=2**-8, atol=1e-6)
    torch.testing.assert_close(d.double(), slope, rtol=2**-8, atol=1e-6)
    exact_dh = dg.double() * slope
    torch.testing.assert_close(dh.double(), exact_dh, rtol=2**-7, atol=1e-6)
    rows = exact_dh.reshape(-1, shape[-1])
    assert ((db.double() - rows.sum(0)).abs() <= 2**-7 * rows.abs().sum(0) + 1e-6).all()
    # the bias gradient is the float32 sum of the dh the backward returns
    torch.testing.assert_close(db.double(), dh.double().reshape(-1, shape[-1]).sum(0), rtol=1e-5, atol=1e-5)


def test_the_lower_tail_and_the_extremes():
    """No cancellation below zero (Φ from erfc), large arguments saturate, zero is zero."""
    h = torch.tensor([-12.0, -6.0, -3.0, -1e-3, 0.0, 1e-3, 3.0, 6.0, 12.0, 300.0]).bfloat16()
    out, d = native.bias_gelu_forward(h.reshape(1, -1), None)
    want, slope = _exact(h.double())
    assert out[0, 4] == 0 and d[0, 4] == 0.5
    assert torch.equal(out[0, -1].float(), h[-1].float()) and d[0, -1] == 1
    torch.testing.assert_close(out[0].double(), want, rtol=2**-8, atol=1e-9)
    torch.testing.assert_close(d[0].double(), slope, rtol=2**-8, atol=1e-9)


def _mlp_grads(mlp: Mlp, x: torch.Tensor) -> dict[str, torch.Tensor]:
    mlp.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        y = mlp(xg)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return {"x": xg.grad, "y": y.detach().float(), **{n: p.grad.clone() for n, p in mlp.named_parameters()}}


def test_mlp_training_under_bf16_autocast_is_torchs(ran, monkeypatch):
    torch.manual_seed(0)
    mlp = Mlp(in_features=96, hidden_features=384)
    x = torch.randn(8, 49, 96)
    fast = _mlp_grads(mlp, x)
    assert ran == [(8, 49, 384)]
    monkeypatch.setattr(gelu_kernels, "_route", lambda *a: False)
    plain = _mlp_grads(mlp, x)
    assert len(ran) == 1
    for name, want in plain.items():
        got = fast[name]
        assert got.dtype == want.dtype, name
        torch.testing.assert_close(got, want, rtol=0.02, atol=0.02 * want.abs().max().item(), msg=name)


def test_swin_training_gradients_are_torchs_under_bf16_autocast(ran, monkeypatch):
    grads = swin_pico_grads_under_bf16_autocast(monkeypatch, gelu_kernels, lambda *a: False)
    assert len(ran) == 4  # every block's MLP, in the first arm only
    for n, g in grads["torch"].items():
        tol = 0.05 * g.abs().max().item() + 1e-6
        torch.testing.assert_close(grads["native"][n], g, rtol=0.05, atol=tol, msg=n)


@pytest.mark.parametrize("why", ["inference", "float32", "bf16-params", "float16-autocast", "backend-torch",
                                 "compiling"])
def test_torch_runs_where_the_kernels_do_not_apply(why, ran, monkeypatch):
    torch.manual_seed(0)
    mlp = Mlp(in_features=32, hidden_features=128)
    if why == "backend-torch":
        mlp.fc1.backend = "torch"
    if why == "bf16-params":
        mlp = mlp.bfloat16()
    if why == "compiling":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(4, 32, dtype=torch.bfloat16 if why == "bf16-params" else torch.float32)
    # bf16 parameters run under bf16 autocast too: the kernels take a float32 bias only
    autocast = {"float32": None, "float16-autocast": torch.float16}.get(why, torch.bfloat16)
    with (torch.autocast("cpu", autocast or torch.bfloat16, enabled=autocast is not None),
          torch.set_grad_enabled(why != "inference")):
        y = mlp(x)
    assert not ran
    if why != "inference":
        y.float().sum().backward()
        assert mlp.fc1.weight.grad is not None and mlp.fc1.bias.grad is not None


def test_a_gelu_kernel_that_writes_nothing_fails_the_self_check():
    assert native.available(), native.unavailable_reason()
    assert native._gelu_self_check(native._KERNEL.lib, np.random.default_rng(0)) is None
    for name, part in (("swinlab_bias_gelu_forward", "gelu"), ("swinlab_gelu_backward", "dh")):
        problem = native._gelu_self_check(BrokenLibrary(native._KERNEL.lib, name), np.random.default_rng(0))
        assert problem is not None and "training GELU" in problem and part in problem, problem
