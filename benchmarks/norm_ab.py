"""A/B of the native LayerNorm kernels (:mod:`swinlab.kernels.norm`): CPU inference and training.

Per call: Swin-T's LayerNorm rows at batch 8 (stage 1-4 blocks and the patch mergings), torch's
``x + y`` then ``F.layer_norm`` against the kernel's one pass, and the LayerNorm alone, medians of
``--repeats``. Whole models, the kernels on and off in turn for ``--rounds`` rounds (``--steps`` timed steps
each, medians), the same process and weights: Swin-T at batch 8, 224², eager inference in each
``--precision``; bf16-mixed training steps (forward, cross-entropy, backward, fused AdamW) of
``swin_micro_28`` and the fashion-mnist recipe's model at batch 128 and Swin-T at batch 8. Nothing else
should run on the machine meanwhile.

    python benchmarks/norm_ab.py --out benchmarks/results/cpu_xeon_amx_native_layer_norm.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import swinlab
from swinlab.analysis import benchmark as bm
from swinlab.kernels import allocator, native
from swinlab.kernels import norm as norm_kernels

# Swin-T at batch 8, 224²: (rows, channels, calls per forward) of the blocks' norms and the mergings'
SHAPES = [(25088, 96, 2), (6272, 192, 2), (1568, 384, 6), (392, 768, 2), (6272, 384, 1), (1568, 768, 1),
          (392, 1536, 1)]


def _median_ms(fn, repeats: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _shape(m: int, c: int, calls: int, g: torch.Generator, repeats: int) -> dict:
    x, y = (torch.randn(m, c, generator=g).bfloat16() for _ in range(2))
    w, b = torch.randn(c, generator=g).bfloat16(), torch.randn(c, generator=g).bfloat16()
    row = {"rows": m, "channels": c, "calls_per_forward": calls, "dtype": "bfloat16",
           "torch_add_ln_ms": _median_ms(lambda: F.layer_norm(x + y, (c,), w, b), repeats),
           "native_add_ln_ms": _median_ms(lambda: native.add_layer_norm(x, y, w, b, 1e-5), repeats),
           "torch_ln_ms": _median_ms(lambda: F.layer_norm(x, (c,), w, b), repeats),
           "native_ln_ms": _median_ms(lambda: native.add_layer_norm(x, None, w, b, 1e-5), repeats)}
    row["gb_per_s_native_ln"] = 2 * m * c * 2 / row["native_ln_ms"] / 1e6
    return row


def per_call(repeats: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for m, c, calls in SHAPES:
            rows.append(_shape(m, c, calls, g, repeats))
            print(rows[-1], flush=True)
    return rows


# label: (model, overrides, batch, image side)
TRAIN_MODELS = {
    "swin_micro_28 b128": ("swin_micro_28", {}, 128, 28),
    "fashion-mnist recipe model b128": ("swin_demo_28", {"embed_dim": 64, "depths": [2, 4, 2],
                                                         "drop_path_rate": 0.1}, 128, 28),
    "swin_t b8 224": ("swin_t", {}, 8, 224),
}


def alternate(step, module, off, rounds: int, steps: int) -> dict[str, list[float]]:
    """``step`` timed with ``module._route`` as it is (``"native"``) and replaced by ``off`` (``"torch"``) in
    turn for ``rounds`` rounds: each round's median of ``steps`` steps per arm."""
    route = module._route
    arms = {"native": [], "torch": []}
    try:
        for _ in range(rounds):
            for arm in arms:
                module._route = route if arm == "native" else off
                arms[arm].append(_median_ms(step, steps))
    finally:
        module._route = route
    return arms


def summary(arms: dict[str, list[float]], batch: int, **fields) -> dict:
    out = dict(fields, batch=batch)
    for arm, times in arms.items():
        out[arm] = {"round_medians_ms": times, "median_ms": statistics.median(times),
                    "images_per_s": batch / statistics.median(times) * 1e3}
    out["ratio_torch_over_native"] = out["torch"]["median_ms"] / out["native"]["median_ms"]
    print(out, flush=True)
    return out


def finish(report: dict, out: Path | None) -> dict:
    """The report with the environment the steps ran in (read after them: malloc's state), written to
    ``out`` as JSON."""
    report["environment"] = bm.environment("cpu")
    if out:
        out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def whole_model(label: str, name: str, overrides: dict, batch: int, size: int, precision: str, mode: str,
                rounds: int, steps: int) -> dict:
    step = bm.prepare(swinlab.create_model(name, **overrides), batch_size=batch, img_size=size,
                      precision=precision, mode=mode)
    # the benchmark's switch: the module's rule, or always torch's add and nn.LayerNorm
    arms = alternate(step.fn, norm_kernels, lambda *a: "torch", rounds, steps)
    return summary(arms, batch, model=label, mode=mode, img_size=size, precision=precision)


def parse(p: argparse.ArgumentParser, argv, repeats: int) -> argparse.Namespace:
    """The A/Bs' shared options (``--repeats --rounds --steps --threads --out``) parsed, the threads set,
    malloc tuned (as bm.prepare does for the whole steps: per-call outputs reuse memory), the library
    checked."""
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator.tune()
    if not native.available():
        raise SystemExit(f"the native library is unavailable here: {native.unavailable_reason()}")
    return args


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", nargs="+", default=["bf16-true"])
    args = parse(p, argv, repeats=51)
    report = {"environment": None, "command": "python benchmarks/norm_ab.py "
              + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
              "per_call": per_call(args.repeats),
              "inference": [whole_model("swin_t b8 224", "swin_t", {}, 8, 224, prec, "infer", args.rounds,
                                        args.steps) for prec in args.precision],
              "training": [whole_model(label, *spec, "bf16-mixed", "train", args.rounds, args.steps)
                           for label, spec in TRAIN_MODELS.items()]}
    return finish(report, args.out)


if __name__ == "__main__":
    main()
