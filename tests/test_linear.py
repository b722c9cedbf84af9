"""The linear-layer backends (swinlab.kernels.linear): oneDNN equals torch's F.linear, forward and
gradients, with and without the fused GELU / residual add; the selection rule; the models use it."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import swinlab
from conftest import randomize_
from swinlab.kernels import linear as lin
from swinlab.layers import Linear, Mlp

needs_onednn = pytest.mark.skipif(not lin.onednn_available(), reason="torch has no oneDNN on this machine")


def _case(shape=(2, 5, 7, 24), out=40, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(out, shape[-1], generator=g) / shape[-1] ** 0.5
    b = torch.randn(out, generator=g) if bias else None
    return x, w, b


def _exact(x, w, b, activation=None, residual=None):
    """The float64 value of the float32 computation."""
    y = F.linear(x.double(), w.double(), None if b is None else b.double())
    if activation == "gelu":
        y = F.gelu(y)
    return y if residual is None else y + residual.double()


@needs_onednn
@pytest.mark.parametrize("shape", [(30, 24), (2, 5, 7, 24), (3, 17, 24)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("fuse", [None, "gelu", "residual"])
def test_onednn_forward_equals_float64(shape, bias, fuse):
    x, w, b = _case(shape, bias=bias)
    residual = torch.randn(*shape[:-1], 40) if fuse == "residual" else None
    activation = "gelu" if fuse == "gelu" else None
    with lin.use_backend("onednn"), torch.inference_mode():
        y = lin.linear(x, w, b, activation=activation, residual=residual)
    with lin.use_backend("torch"), torch.inference_mode():
        y_torch = lin.linear(x, w, b, activation=activation, residual=residual)
    exact = _exact(x, w, b, activation, residual)
    assert y.dtype == torch.float32 and y.shape == exact.shape
    torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, y_torch, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_takes_strided_inputs():
    x, w, b = _case((30, 24))
    xt = x.t().contiguous().t()  # (30, 24), column-major
    assert not xt.is_contiguous()
    with lin.use_backend("onednn"):
        torch.testing.assert_close(lin.linear(xt, w, b).double(), _exact(xt, w, b), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("fuse", [None, "gelu", "residual"])
def test_onednn_gradients_equal_float64(fuse):
    x, w, b = _case((3, 9, 24))
    residual = torch.randn(3, 9, 40) if fuse == "residual" else None
    activation = "gelu" if fuse == "gelu" else None
    leaves = [t.requires_grad_() for t in (x, w, b)]
    if fuse == "residual":
        leaves.append(residual.requires_grad_())
    grad = torch.randn(3, 9, 40)
    with lin.use_backend("onednn"):
        y = lin.linear(x, w, b, activation=activation, residual=residual)
    got = torch.autograd.grad(y, leaves, grad)
    wide = [t.detach().double().requires_grad_() for t in leaves]
    ref = _exact(*wide[:3], activation, wide[3] if fuse == "residual" else None)
    expected = torch.autograd.grad(ref, wide, grad.double())
    for name, a, e in zip(["x", "w", "b", "residual"], got, expected, strict=False):
        torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5, msg=name)


@needs_onednn
def test_onednn_takes_transposed_operands_of_many_shapes():
    # the weight gradient hands oneDNN dyᵀ and xᵀ as column-major views: check them over shapes
    for m, k, n in itertools.product([1, 7, 50, 197], [1, 3, 24, 100], [1, 10, 96]):
        g, x = torch.randn(m, n), torch.randn(m, k)
        got = torch.ops.swinlab.onednn_linear(g.t(), x.t(), None, "none")
        torch.testing.assert_close(got.double(), g.double().t() @ x.double(), rtol=1e-5, atol=1e-4,
                                   msg=f"{(m, k, n)}")


@needs_onednn
def test_onednn_gradient_of_the_weight_only():
    x, w, b = _case((50, 24))
    w.requires_grad_()
    with lin.use_backend("onednn"):
        (gw,) = torch.autograd.grad(lin.linear(x, w, b).sum(), [w])
    torch.testing.assert_close(gw, torch.ones(40, 50) @ x, rtol=1e-5, atol=1e-4)


def test_selection_rule():
    x = torch.randn(4, 8)
    expected = "onednn" if lin.onednn_available() else "torch"
    assert lin.get_backend() == "auto"
    assert lin.select_backend(x) == expected
    assert lin.select_backend(x.double()) == "torch"  # oneDNN's fused op is float32 only
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast lowers F.linear to bfloat16: leave it be
        assert lin.select_backend(x) == "torch"
        assert lin.linear(x, torch.randn(3, 8)).dtype == torch.bfloat16
    with lin.use_backend("torch"):
        assert lin.select_backend(x) == "torch"
    assert lin.get_backend() == "auto"  # restored
    with pytest.raises(ValueError, match="unknown linear backend 'mkl'"):
        lin.set_backend("mkl")
    with pytest.raises(ValueError, match="activation must be one of"):
        lin.linear(x, torch.randn(3, 8), activation="relu")
    with pytest.raises(ValueError, match=r"x \(4, 8\) and weight \(3, 5\)"):
        lin.linear(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="not both"):
        lin.linear(x, torch.randn(3, 8), activation="gelu", residual=torch.randn(4, 3))


@needs_onednn
def test_explicit_onednn_refuses_what_it_cannot_take():
    says = r"float32 CPU tensors outside autocast.*set_backend"
    with lin.use_backend("onednn"), pytest.raises(RuntimeError, match=says):
        lin.linear(torch.randn(4, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64))


def test_linear_layer_is_nn_linear():
    layer = Linear(8, 3)
    assert isinstance(layer, torch.nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias"}
    x, r = torch.randn(5, 8), torch.randn(5, 3)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(x, residual=r), r + layer(x), rtol=1e-5, atol=1e-6)


def test_mlp_fused_paths_equal_the_plain_mlp():
    mlp = Mlp(in_features=16, hidden_features=64).eval()
    x, r = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    plain = mlp.fc2(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)))
    with torch.inference_mode():
        torch.testing.assert_close(mlp(x), plain, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mlp(x, residual=r), r + plain, rtol=1e-5, atol=1e-5)
    tanh = Mlp(in_features=16, hidden_features=64, act_layer=lambda: torch.nn.GELU(approximate="tanh"))
    tanh.load_state_dict(mlp.state_dict())
    assert not torch.allclose(tanh.eval()(x), plain, atol=1e-6)  # not the exact-GELU fusion


@needs_onednn
@pytest.mark.parametrize("name", ["swin_pico", "vit_micro_28", "mixer_micro_28"])
def test_models_equal_on_both_backends(name):
    model = randomize_(swinlab.create_model(name, drop_path_rate=0.0))
    cfg = model.config
    x = torch.randn(2, cfg.in_chans, *cfg.img_size)
    outputs, grads = {}, {}
    for backend in ("torch", "onednn"):
        with lin.use_backend(backend):
            with torch.inference_mode():
                outputs[backend] = model(x)
            model.zero_grad()
            model.train()
            model(x).square().mean().backward()
            model.eval()
            grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    scale = outputs["torch"].abs().max()
    torch.testing.assert_close(outputs["onednn"], outputs["torch"], rtol=1e-4, atol=1e-5 * scale)
    for n, g in grads["torch"].items():
        torch.testing.assert_close(grads["onednn"][n], g, rtol=1e-3, atol=1e-4 * g.abs().max() + 1e-8, msg=n)


@needs_onednn
def test_compiled_graph_keeps_the_onednn_operators():
    targets = set()

    def record(gm, example_inputs):
        targets.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    model = swinlab.create_model("swin_pico").eval()
    with torch.inference_mode():
        torch.compile(model, backend=record, fullgraph=True)(torch.randn(1, 3, 32, 32))
    torch._dynamo.reset()
    assert {"swinlab.onednn_linear", "swinlab.onednn_linear_add"} <= targets
