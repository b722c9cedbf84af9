"""swinlab.kernels.allocator: glibc's thresholds keep a training step's freed memory in the process.

Each check runs in a fresh interpreter, since ``mallopt`` changes the whole process for good."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from swinlab.kernels import allocator

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="the C library is not glibc")

# A step's pattern: many 8 MiB tensors alive at once, all freed at its end. Page faults of steps 3-8.
STEPS = """
import json, resource, sys, torch
from swinlab.kernels import allocator
state = allocator.tune() if sys.argv[1] == "tune" else allocator.state()
def step():
    tensors = [torch.ones(2 << 20) for _ in range(8)]
    del tensors
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    step()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "state": state}))
"""


def _steps(mode: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*allocator.ENVIRONMENT, "SWINLAB_TUNE_MALLOC")}
    out = subprocess.run([sys.executable, "-c", STEPS, mode], env={**clean, **env}, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _untuned_steps(mode: str, tries: int = 5, **env) -> dict:
    """The steps with malloc left alone, the run with the most faults of up to ``tries``: glibc's default
    returns the freed blocks and faults them in again in most runs, but in about one run in five a small
    allocation lands above them at the top of the heap, so none can be trimmed and they are reused. The
    setting exists for the usual case; asserting on one run made this test fail one time in five."""
    worst = _steps(mode, **env)
    for _ in range(tries - 1):
        if worst["faults"] > 6 * 8000:
            break
        run = _steps(mode, **env)
        worst = run if run["faults"] > worst["faults"] else worst
    return worst


@glibc
def test_tuned_steps_reuse_their_memory():
    # 64 MiB freed per step: by default glibc returns it and faults 16,384 pages in again every step
    default = _untuned_steps("default")
    assert default["state"] == "default: not tuned"
    assert default["faults"] > 6 * 8000, default
    # every tuned process reuses its memory; one alone would pass without the setting in ~1 run in 5 (above)
    for tuned in (_steps("tune") for _ in range(4)):
        assert tuned["state"] == "glibc: mmap threshold 32 MiB, trim threshold 2 GiB"
        assert tuned["faults"] < 6 * 500, tuned


@glibc
@pytest.mark.parametrize("env, reason", [({"SWINLAB_TUNE_MALLOC": "0"}, "SWINLAB_TUNE_MALLOC=0"),
                                         ({"MALLOC_TRIM_THRESHOLD_": "1048576"}, "MALLOC_TRIM_THRESHOLD_")])
def test_the_users_choice_wins(env, reason):
    result = _untuned_steps("tune", **env)
    assert result["state"].startswith("default:") and reason in result["state"], result
    assert result["faults"] > 6 * 8000, result  # left alone: glibc's own behaviour


def test_tune_is_recorded_once(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setenv("SWINLAB_TUNE_MALLOC", "0")
    assert allocator.state() == "default: not tuned"
    assert allocator.tune() == "default: SWINLAB_TUNE_MALLOC=0"
    monkeypatch.delenv("SWINLAB_TUNE_MALLOC")
    assert allocator.tune() == "default: SWINLAB_TUNE_MALLOC=0"  # decided once per process
    assert allocator.state() == "default: SWINLAB_TUNE_MALLOC=0"
