"""Checks of the fused Triton window attention against the reference, run in a child process.

``tests/test_triton_kernel.py`` starts this script with ``TRITON_INTERPRET=1`` (CPU tensors) or, on a
machine with a GPU, without it (CUDA tensors): the interpreter must be chosen before ``triton`` is
first imported, so these checks cannot share a process with the rest of the suite.

Usage: ``python tests/_triton_checks.py DEVICE CASES_JSON`` → one JSON line per case:
``{"id", "ok", "error", "max_err", "seconds"}``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback

import torch

import swinlab
from conftest import randomize_  # tests/ is on sys.path: this script runs from it
from swinlab.kernels import WindowSpec, get_window_attention
from swinlab.kernels.reference import window_attention as reference
from swinlab.kernels.triton import window_kernel as fused_module

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2}


def check_attention(case: dict, device: str) -> dict:
    """Forward, dqkv and dtable of the fused kernel against the fp64 reference on the same inputs."""
    dtype = DTYPES[case.get("dtype", "float64")]
    table_dtype = DTYPES[case.get("table_dtype", case.get("dtype", "float64"))]
    heads, d, batch = case.get("heads", 2), case.get("d", 8), case.get("batch", 2)
    (h, w), tw = case["map"], tuple(case.get("table_window", (7, 7)))
    g = torch.Generator().manual_seed(0)
    qkv64 = torch.randn(batch, h, w, 3 * heads * d, generator=g, dtype=torch.float64)
    tab64 = torch.randn((2 * tw[0] - 1) * (2 * tw[1] - 1), heads, generator=g, dtype=torch.float64)
    grad64 = torch.randn(batch, h, w, heads * d, generator=g, dtype=torch.float64)
    has_table = case.get("table", True)
    spec = WindowSpec(num_heads=heads, window=tuple(case["window"]), shift=tuple(case["shift"]),
                      table_window=tw, scale=d**-0.5, mask_shifted=case.get("mask", True),
                      use_qk=case.get("use_qk", True))

    qkv = qkv64.to(device, dtype).requires_grad_()
    table = tab64.to(device, table_dtype).requires_grad_() if has_table else None
    out = fused_module.attend(qkv, table, spec, windows_per_program=case.get("wpp"))
    wrt = [t for t in (qkv, table) if t is not None]
    grads = torch.autograd.grad(out, wrt, grad64.to(device, dtype))

    ref_in = [t.detach().cpu().double().requires_grad_() for t in wrt]  # the same (rounded) inputs
    ref = reference(ref_in[0], ref_in[1] if has_table else None, spec)
    ref_grads = torch.autograd.grad(ref, ref_in, grad64.to(dtype).double())

    assert out.dtype == dtype and grads[0].dtype == dtype, (out.dtype, grads[0].dtype)
    if has_table:
        assert grads[1].dtype == table_dtype, grads[1].dtype
    tol, errs = TOL[dtype], {}
    for name, a, b in zip(("out", "dqkv", "dtable"), (out, *grads), (ref, *ref_grads), strict=False):
        errs[name] = (a.detach().cpu().double() - b).abs().max().item()
        torch.testing.assert_close(a.detach().cpu().double(), b, rtol=tol, atol=tol, msg=name)
    return errs


def check_model(case: dict, device: str) -> dict:
    """A whole tiny Swin with the fused backend equals the reference one: outputs and every gradient."""
    ref = swinlab.create_model(case["model"]).to(device)
    if ref.config.res_post_norm:  # V2's zero-initialized post-norms would hide the attention entirely
        randomize_(ref)
    fast = swinlab.create_model(case["model"], attention_backend="triton").to(device)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, case["img"], case["img"], generator=torch.Generator().manual_seed(0)).to(device)
    errs = {}
    with torch.no_grad():
        errs["eval_out"] = (fast.eval()(x) - ref.eval()(x)).abs().max().item()
    outs = [m.train()(x) for m in (ref, fast)]
    for o in outs:
        o.square().mean().backward()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    g_ref = dict(ref.named_parameters())
    errs["grad"] = 0.0
    for name, p in fast.named_parameters():
        errs["grad"] = max(errs["grad"], (p.grad - g_ref[name].grad).abs().max().item())
        torch.testing.assert_close(p.grad, g_ref[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    assert get_window_attention("triton") is fused_module.window_attention
    return errs


def main() -> None:
    device, cases = sys.argv[1], json.loads(sys.argv[2])
    if device == "cpu" and not fused_module.INTERPRETED:
        raise SystemExit("run with TRITON_INTERPRET=1 to check the Triton kernels on CPU")
    for case in cases:
        start = time.perf_counter()
        result = {"id": case["id"], "ok": True, "error": "", "max_err": {}}
        try:
            result["max_err"] = (check_model if "model" in case else check_attention)(case, device)
        except Exception:
            result.update(ok=False, error=traceback.format_exc())
        result["seconds"] = round(time.perf_counter() - start, 2)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
