"""A/B of training's native bias + GELU (:mod:`swinlab.kernels.gelu`) on the CPU, bf16-mixed.

Per call: the MLP hidden tensors of Swin-T's blocks at batch 8 (rows × 4C, bfloat16). torch's share of
fc1 + GELU in a training step (the bias broadcast into fc1's output, ``gelu``, ``gelu_backward`` and the
bias gradient's column sum) against the kernels' (``bias_gelu_forward`` and ``gelu_backward`` with the sum),
medians of ``--repeats``. Whole steps (forward, cross-entropy, backward, fused AdamW), the kernels on and
off in turn for ``--rounds`` rounds (``--steps`` timed steps each, medians), one process and the same
weights: ``swin_micro_28`` and the fashion-mnist recipe's model at batch 128, Swin-T at batch 8. Nothing
else should run on the machine meanwhile.

    python benchmarks/gelu_ab.py --out benchmarks/results/cpu_xeon_amx_native_gelu_training.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import swinlab
from swinlab.analysis import benchmark as bm
from swinlab.kernels import gelu as gelu_kernels
from swinlab.kernels import native

sys.path.insert(0, str(Path(__file__).parent))
from norm_ab import (  # the LayerNorm A/B's timer and loop
    TRAIN_MODELS,
    _median_ms,
    alternate,
    finish,
    parse,
    summary,
)

# Swin-T at batch 8, 224²: (rows, hidden channels, calls per step)
SHAPES = [(25088, 384, 2), (6272, 768, 2), (1568, 1536, 6), (392, 3072, 2)]


def _shape(m: int, c: int, calls: int, g: torch.Generator, repeats: int) -> dict:
    h, dg = (torch.randn(m, c, generator=g).bfloat16() for _ in range(2))
    b = torch.randn(c, generator=g)
    bb = b.bfloat16()

    def torch_step():
        hb = h + bb  # addmm's bias broadcast (a copy of the output's size) stands in for the add
        F.gelu(hb)
        torch.ops.aten.gelu_backward(dg, hb).sum(0)

    def native_step():
        _, d = native.bias_gelu_forward(h, b)
        native.gelu_backward(dg, d, bias_grad=True)

    row = {"rows": m, "channels": c, "calls_per_step": calls, "dtype": "bfloat16",
           "torch_gelu_ms": _median_ms(lambda: F.gelu(h), repeats),
           "torch_gelu_backward_ms": _median_ms(lambda: torch.ops.aten.gelu_backward(dg, h), repeats),
           "native_forward_ms": _median_ms(lambda: native.bias_gelu_forward(h, b), repeats),
           "native_backward_ms": _median_ms(lambda: native.gelu_backward(dg, h, bias_grad=True), repeats),
           "torch_share_ms": _median_ms(torch_step, repeats),
           "native_share_ms": _median_ms(native_step, repeats)}
    print(row, flush=True)
    return row


def whole_step(label: str, name: str, overrides: dict, batch: int, size: int, rounds: int,
               steps: int) -> dict:
    step = bm.prepare(swinlab.create_model(name, **overrides), batch_size=batch, img_size=size,
                      precision="bf16-mixed", mode="train")
    arms = alternate(step.fn, gelu_kernels, lambda *a: False, rounds, steps)  # off: linear_gelu of torch
    return summary(arms, batch, model=label, img_size=size, precision="bf16-mixed")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(TRAIN_MODELS), choices=list(TRAIN_MODELS))
    args = parse(p, argv, repeats=31)
    g = torch.Generator().manual_seed(0)
    report = {"environment": None, "command": "python benchmarks/gelu_ab.py "
              + " ".join(argv if argv is not None else sys.argv[1:]),
              "per_call": [_shape(m, c, calls, g, args.repeats) for m, c, calls in SHAPES],
              "training": [whole_step(label, *TRAIN_MODELS[label], args.rounds, args.steps)
                           for label in args.models]}
    return finish(report, args.out)


if __name__ == "__main__":
    main()
