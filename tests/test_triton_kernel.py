"""The fused Triton window attention equals the reference: forward, dqkv and dtable, every dtype.

The kernels run in a child process (``tests/_triton_checks.py``): on CPU under Triton's interpreter
(``TRITON_INTERPRET=1`` has to be set before ``triton`` is imported, so it cannot be switched on in
this process without changing every other test), and on CUDA natively where a GPU is present.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from swinlab.kernels import available_backends, backend_devices

SCRIPT = Path(__file__).with_name("_triton_checks.py")

FAST = [  # tiny shapes: the interpreter runs every program in Python
    dict(id="8x8_w4_s2_table7x7", map=(8, 8), window=(4, 4), shift=(2, 2)),
    dict(id="8x8_w4_table4x4", map=(8, 8), window=(4, 4), shift=(2, 2), table_window=(4, 4), batch=1),
    dict(id="8x8_w4_noshift", map=(8, 8), window=(4, 4), shift=(0, 0)),
    dict(id="14x14_w7_s3", map=(14, 14), window=(7, 7), shift=(3, 3), batch=1),
    dict(id="8x12_w4_s2_d16", map=(8, 12), window=(4, 4), shift=(2, 2), d=16),
    dict(id="8x12_w4_s2_4win_per_program", map=(8, 12), window=(4, 4), shift=(2, 2), wpp=4),
    dict(id="8x8_w4_shift_cols_only", map=(8, 8), window=(4, 4), shift=(0, 2), batch=1),
    dict(id="8x8_w4_3heads_d12", map=(8, 8), window=(4, 4), shift=(2, 2), heads=3, d=12, batch=1),
    dict(id="8x8_w4_nomask", map=(8, 8), window=(4, 4), shift=(2, 2), mask=False),
    dict(id="8x8_w4_notable", map=(8, 8), window=(4, 4), shift=(2, 2), table=False),
    dict(id="8x8_w4_relonly", map=(8, 8), window=(4, 4), shift=(2, 2), use_qk=False),
    dict(id="8x8_w4_relonly_notable", map=(8, 8), window=(4, 4), shift=(2, 2), use_qk=False, table=False),
    dict(id="8x8_w4_float32", map=(8, 8), window=(4, 4), shift=(2, 2), dtype="float32", d=16),
    dict(id="8x8_w4_float16_table32", map=(8, 8), window=(4, 4), shift=(2, 2), dtype="float16",
         table_dtype="float32", d=16),
    dict(id="8x8_w4_bfloat16_table32", map=(8, 8), window=(4, 4), shift=(2, 2), dtype="bfloat16",
         table_dtype="float32", d=16),
    dict(id="8x8_w4_bfloat16", map=(8, 8), window=(4, 4), shift=(2, 2), dtype="bfloat16", d=16, batch=1),
]
SLOW = [
    dict(id="14x21_w7_s03", map=(14, 21), window=(7, 7), shift=(0, 3)),
    dict(id="6x9_w3_s1_d20", map=(6, 9), window=(3, 3), shift=(1, 1), d=20, heads=3),
    dict(id="24x24_w12_s6", map=(24, 24), window=(12, 12), shift=(6, 6), table_window=(12, 12), batch=1),
    dict(id="14x14_w7_s3_bfloat16", map=(14, 14), window=(7, 7), shift=(3, 3), dtype="bfloat16", d=32),
    dict(id="14x14_w7_s3_float16", map=(14, 14), window=(7, 7), shift=(3, 3), dtype="float16", d=32),
    dict(id="14x14_w7_s3_float32", map=(14, 14), window=(7, 7), shift=(3, 3), dtype="float32", d=32),
    dict(id="swin_pico", model="swin_pico", img=32),
    dict(id="swinv2_pico", model="swinv2_pico", img=32),
]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA GPU"))]


def _run(device: str, cases: list[dict]) -> dict[str, dict]:
    env = {**os.environ}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), device, json.dumps(cases)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["id"]] = r
    if proc.returncode or len(results) != len(cases):
        pytest.fail(f"{SCRIPT.name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return results


@pytest.fixture(scope="module", params=DEVICES)
def fast_results(request):
    return request.param, _run(request.param, FAST)


@pytest.mark.parametrize("case", [c["id"] for c in FAST])
def test_fused_kernel_matches_reference(fast_results, case):
    result = fast_results[1][case]
    assert result["ok"], result["error"]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_fused_kernel_matches_reference_larger_windows_and_whole_model(device):
    failed = [r for r in _run(device, SLOW).values() if not r["ok"]]
    assert not failed, "\n".join(r["error"] for r in failed)


def test_backend_is_registered_for_its_devices():
    assert "triton" in available_backends()
    assert "cuda" in backend_devices("triton")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter takes CPU tensors")
def test_cpu_tensor_without_interpreter_fails_clearly():
    from swinlab.kernels import WindowSpec, get_window_attention

    qkv = torch.randn(1, 8, 8, 48)
    with pytest.raises(RuntimeError, match=r"needs a CUDA tensor.*TRITON_INTERPRET=1.*'reference' or 'sdpa'"):
        get_window_attention("triton")(qkv, None, WindowSpec(num_heads=2, window=(4, 4), shift=(0, 0),
                                                             table_window=(4, 4), scale=0.25))
