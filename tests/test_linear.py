"""The linear-layer backends (swinlab.kernels.linear): oneDNN equals torch's F.linear, forward and
gradients, with and without the fused GELU; the selection rule; the self-check and its fallback; the
per-model choice; export sees standard ops only."""

import itertools
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

import swinlab
from conftest import randomize_
from swinlab.errors import ConfigError
from swinlab.kernels import linear as lin
from swinlab.layers import Linear, Mlp

needs_onednn = pytest.mark.skipif(not lin.onednn_available(), reason="torch has no oneDNN on this machine")


def _case(shape=(2, 5, 7, 24), out=40, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(out, shape[-1], generator=g) / shape[-1] ** 0.5
    b = torch.randn(out, generator=g) if bias else None
    return x, w, b


def _exact(x, w, b, gelu=False):
    """The float64 value of the float32 computation."""
    y = F.linear(x.double(), w.double(), None if b is None else b.double())
    return F.gelu(y) if gelu else y


def _fn(gelu):
    return lin.linear_gelu if gelu else lin.linear


@needs_onednn
@pytest.mark.parametrize("shape", [(30, 24), (2, 5, 7, 24), (3, 17, 24)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gelu", [False, True])
def test_onednn_forward_equals_float64(shape, bias, gelu):
    x, w, b = _case(shape, bias=bias)
    with torch.inference_mode():
        y = _fn(gelu)(x, w, b, backend="onednn")
        y_torch = _fn(gelu)(x, w, b, backend="torch")
    exact = _exact(x, w, b, gelu)
    assert y.dtype == torch.float32 and y.shape == exact.shape
    torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, y_torch, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_takes_strided_inputs():
    x, w, b = _case((30, 24))
    xt = x.t().contiguous().t()  # (30, 24), column-major
    assert not xt.is_contiguous()
    y = lin.linear(xt, w, b, backend="onednn")
    torch.testing.assert_close(y.double(), _exact(xt, w, b), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("gelu", [False, True])
def test_onednn_gradients_equal_float64(gelu):
    x, w, b = _case((3, 9, 24))
    leaves = [t.requires_grad_() for t in (x, w, b)]
    grad = torch.randn(3, 9, 40)
    got = torch.autograd.grad(_fn(gelu)(x, w, b, backend="onednn"), leaves, grad)
    wide = [t.detach().double().requires_grad_() for t in leaves]
    expected = torch.autograd.grad(_exact(*wide, gelu), wide, grad.double())
    for name, a, e in zip(["x", "w", "b"], got, expected, strict=True):
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
    (gw,) = torch.autograd.grad(lin.linear(x, w, b, backend="onednn").sum(), [w])
    torch.testing.assert_close(gw, torch.ones(40, 50) @ x, rtol=1e-5, atol=1e-4)


def test_selection_rule(monkeypatch):
    x = torch.randn(4, 8)
    avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    assert lin.select_backend("auto", x) == ("onednn" if lin.onednn_available() and avx512 else "torch")
    assert lin.select_backend("auto", x.double()) == "torch"  # oneDNN's product: float32 / bfloat16 only
    assert lin.select_backend("torch", x) == "torch"
    with torch.autocast("cpu", dtype=torch.float16):  # float16 autocast is F.linear's
        assert lin.select_backend("auto", x) == "torch"
    with pytest.raises(ConfigError, match="unknown linear backend 'mkl'"):
        lin.select_backend("mkl", x)
    with pytest.raises(ConfigError, match="unknown linear backend 'mkl'"):
        Linear(8, 3, backend="mkl")
    with pytest.raises(ValueError, match=r"x \(4, 8\) and weight \(3, 5\)"):
        lin.linear(x, torch.randn(3, 5))


@pytest.mark.parametrize("native", [True, False])
def test_bf16_rule_inference_on_onednn_where_bf16_is_native(monkeypatch, native):
    """bfloat16 (bf16-true, or float32 under bf16 autocast): oneDNN in inference on CPUs with native bf16,
    F.linear where a gradient is taken (measured faster in a training step) and where bf16 is emulated."""
    monkeypatch.setattr(lin, "_AUTO_ONEDNN_BF16", native)
    x = torch.randn(4, 8)
    assert lin.select_backend("auto", x.bfloat16()) == ("onednn" if native else "torch")
    assert lin.select_backend("auto", x.bfloat16(), grad=True) == "torch"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin.onednn_dtype(x) == torch.bfloat16
        assert lin.select_backend("auto", x) == ("onednn" if native else "torch")
        assert lin.select_backend("auto", x, grad=True) == "torch"
    monkeypatch.setattr(lin, "_AUTO_ONEDNN_BF16", True)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    assert lin.select_backend("auto", x.bfloat16()) == "torch"  # exported graphs hold aten.linear


needs_bf16 = pytest.mark.skipif(not lin.onednn_available(torch.bfloat16),
                                reason="this CPU has no native bf16 (AVX-512 BF16 / AMX)")


@needs_bf16
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("how", ["bf16-true", "autocast"])
def test_onednn_bf16_equals_f_linear_in_bf16(gelu, how):
    x, w, b = _case((3, 17, 24))
    with torch.inference_mode():
        if how == "bf16-true":
            args = (x.bfloat16(), w.bfloat16(), b.bfloat16())
            y, ref = _fn(gelu)(*args, backend="onednn"), _fn(gelu)(*args, backend="torch")
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y, ref = _fn(gelu)(x, w, b, backend="onednn"), _fn(gelu)(x, w, b, backend="torch")
    assert y.dtype == ref.dtype == torch.bfloat16
    exact = _exact(x, w, b, gelu)
    scale = exact.abs().max().item()
    # both round operands and result to bf16 (8 bits): within a few bf16 steps of the magnitude
    assert (y.double() - exact).abs().max() <= 2e-2 * scale
    assert (y.float() - ref.float()).abs().max() <= 2e-2 * scale


@needs_bf16
def test_onednn_bf16_gradients_under_autocast_reach_the_float32_weights():
    x, w, b = _case((6, 24))
    w.requires_grad_()
    b.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin.linear(x, w, b, backend="onednn")
    assert y.dtype == torch.bfloat16
    gw, gb = torch.autograd.grad(y.float().sum(), [w, b])
    assert gw.dtype == gb.dtype == torch.float32  # the casts' backward: float32 grads for float32 weights
    torch.testing.assert_close(gw, torch.ones(40, 6) @ x, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(gb, torch.full((40,), 6.0))


@needs_onednn
def test_auto_takes_onednn_only_where_it_was_measured_faster(monkeypatch):
    x = torch.randn(4, 8)
    monkeypatch.setattr(lin, "_AUTO_ONEDNN", True)  # an AVX-512 CPU
    assert lin.select_backend("auto", x) == "onednn"
    monkeypatch.setattr(lin, "_AUTO_ONEDNN_TRAIN", False)  # an Intel one: MKL's AVX-512 trains faster
    assert lin.select_backend("auto", x, grad=True) == "torch"
    assert lin.select_backend("auto", x) == "onednn"
    monkeypatch.setattr(lin, "_AUTO_ONEDNN_TRAIN", True)  # an AMD one: MKL runs AVX2 there
    assert lin.select_backend("auto", x, grad=True) == "onednn"
    monkeypatch.setattr(lin, "_AUTO_ONEDNN", False)  # AVX2 only
    assert lin.select_backend("auto", x) == "torch"
    assert lin.select_backend("onednn", x) == "onednn"  # still there when named


def test_training_rule_follows_the_cpu_vendor():
    vendor = lin._cpu_vendor()
    if vendor:
        with open("/proc/cpuinfo") as f:
            assert f"vendor_id\t: {vendor}" in f.read()
    assert (lin._AUTO_ONEDNN and vendor != "GenuineIntel") == lin._AUTO_ONEDNN_TRAIN


def test_auto_runs_standard_ops_while_exporting(monkeypatch):
    x = torch.randn(4, 8)
    monkeypatch.setattr(lin, "_AUTO_ONEDNN", lin.onednn_available())  # as on an AVX-512 CPU
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    assert lin.select_backend("auto", x) == "torch"


@needs_onednn
def test_explicit_onednn_refuses_what_it_cannot_take():
    says = r"float32 CPU tensors.*set_linear_backend\('auto'\)"
    with pytest.raises(RuntimeError, match=says):
        lin.linear(torch.randn(4, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64),
                   backend="onednn")


def test_self_check_catches_a_broken_or_wrong_operator():
    def raises(x, w, b, attr):
        raise RuntimeError("schema changed")

    def wrong(x, w, b, attr):
        y = F.linear(x, w, b) + 1e-2
        return F.gelu(y) if attr == "gelu" else y

    def wrong_gelu(x, w, b, attr):
        return F.linear(x, w, b)  # ignores the post-op

    assert "failed in torch.float32: RuntimeError: schema changed" in lin.self_check(raises)
    assert "disagrees with F.linear on x Wᵀ + b in torch.float32" in lin.self_check(wrong)
    assert "disagrees with F.linear on gelu" in lin.self_check(wrong_gelu)
    assert "disagrees with F.linear on gelu" in lin.self_check(wrong_gelu, dtype=torch.bfloat16)
    if lin.onednn_available():
        assert lin.self_check() is None
    if lin.onednn_available(torch.bfloat16):
        assert lin.self_check(dtype=torch.bfloat16) is None


def test_a_failed_self_check_warns_once_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(lin, "_onednn_present", lambda: True)
    monkeypatch.setattr(lin, "self_check",
                        lambda op=None, dtype=None: "oneDNN's linear operator failed: boom")
    with pytest.warns(RuntimeWarning, match="boom; swinlab's 'auto' linear layers use F.linear"):
        ok = lin._check_once()
    assert ok is False
    monkeypatch.setattr(lin, "_ONEDNN", ok)
    monkeypatch.setattr(lin, "_AUTO_ONEDNN", ok)
    monkeypatch.setattr(lin, "_AUTO_ONEDNN_TRAIN", ok)
    monkeypatch.setattr(lin, "_ONEDNN_BF16", ok)
    monkeypatch.setattr(lin, "_AUTO_ONEDNN_BF16", ok)
    x = torch.randn(4, 8)
    assert lin.select_backend("auto", x) == "torch"
    assert lin.select_backend("auto", x.bfloat16()) == "torch"
    with pytest.raises(ConfigError, match="'onednn' cannot run here: oneDNN's linear operator failed: boom"):
        Linear(8, 3, backend="onednn")
    layer = Linear(8, 3)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_linear_layer_is_nn_linear():
    layer = Linear(8, 3)
    assert isinstance(layer, torch.nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias"}
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError):
        layer(x, residual=x)  # nn.Linear's forward(input), nothing more


@pytest.mark.parametrize("backend", ["auto", pytest.param("onednn", marks=needs_onednn)])
def test_mlp_fused_gelu_equals_the_plain_mlp(backend):
    mlp = Mlp(in_features=16, hidden_features=64).eval()
    mlp.fc1.backend = mlp.fc2.backend = backend
    x = torch.randn(2, 7, 16)
    plain = mlp.fc2(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)))
    with torch.inference_mode():
        torch.testing.assert_close(mlp(x), plain, rtol=1e-5, atol=1e-5)
    tanh = Mlp(in_features=16, hidden_features=64, act_layer=lambda: torch.nn.GELU(approximate="tanh"))
    tanh.load_state_dict(mlp.state_dict())
    assert not torch.allclose(tanh.eval()(x), plain, atol=1e-6)  # not the exact-GELU fusion


def test_mlp_calls_a_hooked_or_replaced_fc1_as_a_module():
    mlp = Mlp(in_features=16, hidden_features=64).eval()
    x = torch.randn(2, 7, 16)
    seen = []
    handle = mlp.fc1.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    with torch.inference_mode():
        mlp(x)
    assert seen == [torch.Size([2, 7, 64])]  # the hook ran: fc1 was called, not fused around
    handle.remove()

    class Lora(torch.nn.Module):  # a wrapper as LoRA tools make: base layer plus a low-rank update
        def __init__(self, base):
            super().__init__()
            self.base, self.a, self.b = base, torch.nn.Linear(16, 2, bias=False), torch.nn.Linear(2, 64)

        def forward(self, x):
            return self.base(x) + self.b(self.a(x))

    plain = mlp(x)
    mlp.fc1 = Lora(mlp.fc1)
    torch.nn.init.ones_(mlp.fc1.b.bias)
    assert not torch.allclose(mlp(x), plain, atol=1e-4)  # the wrapper's update is in the output


@pytest.mark.parametrize("name", ["swin_pico", "vit_pico", "mixer_micro_28"])
def test_backend_is_chosen_per_model_and_recorded(name):
    model = swinlab.create_model(name, linear_backend="torch")
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert linears and {m.backend for m in linears} == {"torch"}
    assert model.config.linear_backend == "torch"
    other = swinlab.create_model(name)  # another model in the same process keeps its own choice
    assert {m.backend for m in other.modules() if isinstance(m, Linear)} == {"auto"}
    model.set_linear_backend("auto")
    assert model.config.linear_backend == "auto"
    assert {m.backend for m in linears} == {"auto"}
    model.reset_classifier(3)
    assert model.get_classifier().backend == "auto"
    with pytest.raises(ValueError, match="linear_backend must be one of"):
        swinlab.create_model(name, linear_backend="mkl")


@needs_onednn
@pytest.mark.parametrize("name", ["swin_pico", "vit_micro_28", "mixer_micro_28"])
def test_models_equal_on_both_backends(name):
    model = randomize_(swinlab.create_model(name, drop_path_rate=0.0))
    cfg = model.config
    x = torch.randn(2, cfg.in_chans, *cfg.img_size)
    outputs, grads = {}, {}
    for backend in ("torch", "onednn"):
        model.set_linear_backend(backend)
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
def test_compiled_graph_keeps_the_onednn_operator():
    targets = set()

    def record(gm, example_inputs):
        targets.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    model = swinlab.create_model("swin_pico", linear_backend="onednn").eval()
    with torch.inference_mode():
        torch.compile(model, backend=record, fullgraph=True)(torch.randn(1, 3, 32, 32))
    torch._dynamo.reset()
    assert "swinlab.onednn_linear" in targets


@pytest.mark.parametrize("name", ["swin_pico", "vit_pico"])
def test_torch_export_sees_standard_ops_only(name, monkeypatch):
    monkeypatch.setattr(lin, "_AUTO_ONEDNN", lin.onednn_available())  # auto takes oneDNN, as on AVX-512
    model = swinlab.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (x,))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [op for op in ops if "swinlab" in op or "mkldnn" in op], ops
    assert any("linear" in op for op in ops)
    with torch.inference_mode():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)


def test_swinlab_imports_its_triton_kernels_only_when_asked(tmp_path):
    """`import swinlab` and a forward leave swinlab's Triton module unloaded; a Triton that fails to
    import breaks nothing but the 'triton' backend."""
    broken = tmp_path / "triton"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this triton is broken')\n")
    script = textwrap.dedent("""
        import sys, torch, swinlab
        model = swinlab.create_model("swin_pico")
        model(torch.randn(1, 3, 32, 32))
        print("loaded" if "swinlab.kernels.triton" in sys.modules else "not loaded")
        try:
            swinlab.create_model("swin_pico", attention_backend="triton")
        except ImportError as e:
            print("asked:", e)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "not loaded" in out.stdout
    assert "asked: this triton is broken" in out.stdout
