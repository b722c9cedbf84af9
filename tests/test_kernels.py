"""Every window-attention backend equals the reference (forward and gradients) within dtype tolerance."""

import pytest
import torch

import swinlab
from conftest import assert_same_training_gradients
from swinlab.kernels import (
    WindowSpec,
    available_backends,
    backend_devices,
    backend_inference_only,
    get_window_attention,
)
from swinlab.kernels.reference import window_attention as reference

CPU_BACKENDS = [b for b in available_backends() if backend_devices(b) is None or "cpu" in backend_devices(b)]
BACKENDS = [b for b in CPU_BACKENDS if b != "reference"]  # these tests run on CPU tensors
# inference-only backends ("native") are checked on forwards only, without a gradient
CASES = [  # (map H, W, window, shift, table, mask_shifted, use_qk)
    (14, 14, (7, 7), (0, 0), True, True, True),
    (14, 14, (7, 7), (3, 3), True, True, True),
    (14, 21, (7, 7), (0, 3), True, True, True),
    (8, 12, (4, 4), (2, 2), False, True, True),
    (8, 8, (4, 4), (2, 2), True, False, True),
    (8, 8, (4, 4), (2, 2), True, True, False),
    (6, 9, (3, 3), (1, 1), True, True, True),
    (8, 8, (4, 4), (0, 0), False, True, False),  # logits neither QKᵀ nor B: uniform within each window
    (8, 8, (4, 4), (2, 2), False, True, False),  # the mask alone
]


def _inputs(h, w, heads=2, d=8, batch=2, dtype=torch.float64, table_window=(7, 7), table=True):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(batch, h, w, 3 * heads * d, generator=g, dtype=dtype).requires_grad_()
    rows = (2 * table_window[0] - 1) * (2 * table_window[1] - 1)
    tab = torch.randn(rows, heads, generator=g, dtype=dtype).requires_grad_() if table else None
    return qkv, tab


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_backend_matches_reference_forward_and_backward(backend, case):
    h, w, window, shift, has_table, mask_shifted, use_qk = case
    qkv, table = _inputs(h, w, table=has_table)
    spec = WindowSpec(num_heads=2, window=window, shift=shift, table_window=(7, 7), scale=8**-0.5,
                      mask_shifted=mask_shifted, use_qk=use_qk)
    ref = reference(qkv, table, spec)
    with torch.set_grad_enabled(not backend_inference_only(backend)):
        out = get_window_attention(backend)(qkv, table, spec)
    assert out.shape == ref.shape == (2, h, w, 16)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    if backend_inference_only(backend):
        return
    grad = torch.randn_like(ref)
    wrt = [t for t in (qkv, table) if t is not None]
    g_ref = torch.autograd.grad(ref, wrt, grad)
    g_out = torch.autograd.grad(out, wrt, grad)
    for a, b in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
def test_backend_in_lower_precision(backend, dtype, tol):
    qkv, table = _inputs(14, 14, dtype=dtype)
    spec = WindowSpec(num_heads=2, window=(7, 7), shift=(3, 3), table_window=(7, 7), scale=8**-0.5)
    ref = reference(qkv.double(), table.double(), spec)
    with torch.set_grad_enabled(not backend_inference_only(backend)):
        out = get_window_attention(backend)(qkv, table, spec)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_model_matches_and_inference_cache_follows_weight_changes(backend):
    ref = swinlab.create_model("swin_pico").eval()
    fast = swinlab.create_model("swin_pico", attention_backend=backend).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # change the bias tables in place: a cached bias must not survive this
        for m in (ref, fast):
            for name, p in m.named_parameters():
                if name.endswith("rel_pos.table"):
                    p.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    if backend_inference_only(backend):
        return
    assert_same_training_gradients(fast, ref, x)


def test_switching_backend_keeps_weights():
    model = swinlab.create_model("swin_pico").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        for backend in CPU_BACKENDS:
            model.set_attention_backend(backend)
            torch.testing.assert_close(model(x), y, rtol=1e-5, atol=1e-5)
    assert model.config.attention_backend == CPU_BACKENDS[-1]


def test_auto_chooses_by_device_and_gradient(monkeypatch):
    from swinlab import kernels

    # CPU inference: the native kernel where it built and was measured faster, else SDPA's fused kernel
    inference = "native" if kernels.native.auto_eligible() else "sdpa"
    assert kernels.select_backend("cpu") == inference
    # CPU training: the native training kernels on AVX-512 CPUs where they built, else the reference
    training = "native" if kernels.native.train_eligible() else "reference"
    assert kernels.select_backend("cpu", requires_grad=True) == training
    assert kernels.select_backend("cuda") == kernels.select_backend("cuda", requires_grad=True) == "sdpa"
    ran = []
    def spy(name, real):
        return lambda *a, **k: ran.append(name) or real(*a, **k)

    for name in ("reference", "sdpa", "native"):
        monkeypatch.setitem(kernels._WINDOWED, name, spy(name, kernels._WINDOWED[name]))
    model = swinlab.create_model("swin_pico")
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        model.eval()(x)
    assert set(ran) == {inference}
    ran.clear()
    model.train()(x).sum().backward()
    assert set(ran) == {training}
