"""glibc's ``malloc`` settings for CPU training: keep freed tensor memory in the process rather than fault
it in again every step.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a large request with a fresh
``mmap`` (from 128 KiB; the threshold rises by itself only to the largest block freed so far) and gives
the top of its heap back to the kernel once more than twice that threshold is free there. A training
step allocates and frees hundreds of megabytes of activations and gradients, so it pays a page fault
for every 4 KiB of them again in each step; on a virtual machine that costs tens of milliseconds.
:func:`tune` sets, with ``mallopt(3)``:

* ``M_MMAP_THRESHOLD`` to 32 MiB, glibc's maximum: requests below it come from the heap and are reused;
* ``M_TRIM_THRESHOLD`` to 2 GiB: freed heap memory stays in the process.

It is the same as starting the process with ``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=2147483647``. Setting the trim threshold alone is worse than leaving both alone,
because any explicit setting stops glibc from raising the mmap threshold itself (Swin-T went 632 ms to
920 ms a step that way).

Measured on a 2-core Xeon (AMX), torch 2.14.1, bf16-mixed training steps with fused AdamW, a fresh
process per arm, three rounds in turn (``benchmarks/malloc_ab.py``, its JSON in ``benchmarks/results/``):
Swin-T batch 8 at 224² 627 → 506 ms (×1.24; timm's Swin-T ×1.14, 633 → 553 ms), the fashion-mnist
recipe's model at batch 128 107 → 95 ms (×1.12), swin_study_28 at batch 128 281 → 276 ms (noise).

The cost: the process keeps its peak heap (its resident memory does not shrink after a large step).
:func:`tune` leaves ``malloc`` alone where the C library is not glibc, where the environment already
sets either threshold or preloads another allocator (jemalloc, tcmalloc: the user's choice wins), and
where ``SWINLAB_TUNE_MALLOC=0``. ``swinlab train`` (:func:`swinlab.train.run.fit` on the CPU) and the
CPU benchmarks call it; it changes the whole process, so in a benchmark it applies to every peer alike.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD = -1  # mallopt(3) parameter numbers, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int: 2 GiB
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None


_state: str | None = None


def tune() -> str:
    """Set glibc's mmap and trim thresholds for training (once per process; see the module's docstring).

    Returns:
        What holds now, for a run's record: ``"glibc: mmap threshold 32 MiB, trim threshold 2 GiB"``,
        or why ``malloc`` was left alone (``"default: ..."``).
    """
    global _state
    if _state is not None:
        return _state
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get("SWINLAB_TUNE_MALLOC", "1") == "0":
        _state = "default: SWINLAB_TUNE_MALLOC=0"
    elif any(name in os.environ for name in ENVIRONMENT):
        _state = "default: the environment sets " + ", ".join(n for n in ENVIRONMENT if n in os.environ)
    elif "jemalloc" in preload or "tcmalloc" in preload:
        _state = f"default: another allocator is preloaded ({preload})"
    elif (libc := _glibc()) is None:
        _state = "default: the C library is not glibc"
    elif libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or libc.mallopt(M_TRIM_THRESHOLD,
                                                                              TRIM_THRESHOLD) != 1:
        _state = "default: mallopt refused the thresholds"
    else:
        _state = "glibc: mmap threshold 32 MiB, trim threshold 2 GiB"
    return _state


def state() -> str:
    """What :func:`tune` set in this process, or ``"default: not tuned"`` (for a benchmark's record)."""
    return _state or "default: not tuned"
