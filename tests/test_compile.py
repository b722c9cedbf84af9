"""Swin compiles with ``torch.compile(fullgraph=True)`` (no graph breaks) and equals eager.

``fullgraph=True`` makes any graph break an error. The fast test traces with ``backend="aot_eager"``
(dynamo + AOTAutograd, forward and backward graphs, no code generation: ~7 s of CPU each); the slow
one runs inductor's generated C++ as users would (one to two minutes each on 2 cores).
"""

import copy

import pytest
import torch

import swinlab

BACKENDS = ["reference", "sdpa"]  # "auto" trains with "reference" on CPU; "native": test_native_kernel.py


def _check(backend: str, compiler: str, training: bool) -> None:
    torch._dynamo.reset()
    eager = swinlab.create_model("swin_pico", attention_backend=backend).train(training)
    model = copy.deepcopy(eager)
    compiled = torch.compile(model, fullgraph=True, backend=compiler)
    x = torch.randn(2, 3, 32, 32)
    if not training:
        with torch.inference_mode():
            torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # weights changed in place: a compiled graph must not keep a stale bias
            for m in (eager, model):
                for name, p in m.named_parameters():
                    if name.endswith("rel_pos.table"):
                        p.add_(0.5)
        with torch.inference_mode():
            torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
        return
    out_c, out_e = compiled(x), eager(x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    out_c.square().mean().backward()
    out_e.square().mean().backward()
    grads = dict(eager.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_swin_compiles_without_graph_breaks_and_equals_eager(backend, training):
    _check(backend, "aot_eager", training)


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "training"), [("sdpa", False), ("reference", True)],
                         ids=["sdpa-eval", "reference-train"])
def test_swin_compiles_with_inductor(backend, training):
    """What ``auto`` runs on the CPU (sdpa in inference, reference in training) through inductor's
    generated code; the other two pairs trace without graph breaks above (80-130 s each here)."""
    _check(backend, "inductor", training)

