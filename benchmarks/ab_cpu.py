"""A/B timing of Swin-T on the CPU: whichever swinlab is importable (``PYTHONPATH=<checkout>/src``) beside
timm, in one process, interleaved, float32, median of ``--repeats`` steps after two warm-up steps.

Used to compare two checkouts (run it once per checkout, alternately) and linear backends:

    PYTHONPATH=old/src python benchmarks/ab_cpu.py; PYTHONPATH=new/src python benchmarks/ab_cpu.py
    python benchmarks/ab_cpu.py --linear-backends onednn torch

Prints one JSON line: medians (ms) and every step's time per model and mode. ``benchmarks/bench.py``
is the full harness (every peer, precision and compile); this script exists so that an *old*
checkout, whose harness differs, is timed by the same code as the new one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import swinlab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--linear-backends", nargs="*", default=[],
                   help="one swinlab model per linear backend (default: one model, its default backend)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 224, 224)  # (B, 3, 224, 224)
    y = torch.randint(0, 1000, (args.batch_size,))
    models = {"timm": timm.create_model("swin_tiny_patch4_window7_224")}
    for backend in args.linear_backends or [None]:
        kw = {"linear_backend": backend} if backend else {}
        models[f"swinlab[linear={backend}]" if backend else "swinlab"] = swinlab.create_model("swin_t", **kw)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

    def infer(k: str) -> None:
        with torch.inference_mode():
            models[k].eval()(x)

    def train(k: str) -> None:
        opts[k].zero_grad(set_to_none=True)
        F.cross_entropy(models[k].train()(x), y).backward()
        opts[k].step()

    report = {"swinlab": swinlab.__file__, "torch": torch.__version__, "timm": timm.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads}
    for mode, step in (("infer", infer), ("train", train)):
        times: dict[str, list[float]] = {k: [] for k in models}
        for k in models:
            step(k)
            step(k)
        for _ in range(args.repeats):
            for k in models:
                start = time.perf_counter()
                step(k)
                times[k].append(time.perf_counter() - start)
        medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        report[mode] = {k: {"median_ms": round(m, 1), "x_timm": round(medians["timm"] / m, 3),
                            "times_ms": [round(t * 1e3, 1) for t in times[k]]} for k, m in medians.items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
