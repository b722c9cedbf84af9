"""A/B of glibc's malloc settings (:mod:`swinlab.kernels.allocator`) for CPU training steps.

The setting changes the whole process, so each measurement is a fresh process: for every round, every
model is timed once with ``malloc`` left alone (``SWINLAB_TUNE_MALLOC=0``) and once tuned, in turn, so
that the machine's drift hits both arms alike. Each process times ``--repeats`` training steps
(:func:`swinlab.analysis.benchmark.time_model`: forward, cross-entropy, backward, fused AdamW) after
``--warmup``; the JSON keeps every process's median and the median over rounds.

    python benchmarks/malloc_ab.py --out benchmarks/results/cpu_xeon_amx_malloc_training.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# label: (implementation, model, overrides, batch, image side)
MODELS = {
    "swin_t b8 224 (swinlab)": ("swinlab", "swin_t", {}, 8, 224),
    "swin_t b8 224 (timm)": ("timm", "swin_tiny_patch4_window7_224", {}, 8, 224),
    "fashion-mnist recipe model b128": (
        "swinlab", "swin_demo_28", {"embed_dim": 64, "depths": [2, 4, 2], "drop_path_rate": 0.1}, 128, 28),
    "swin_study_28 b128": ("swinlab", "swin_study_28", {"drop_path_rate": 0.1}, 128, 28),
}

CHILD = """
import json, sys, torch
from swinlab.analysis import benchmark as bm
from swinlab.kernels import allocator
impl, name, overrides, batch, size, precision, warmup, repeats, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
if impl == "timm":
    import timm
    model = timm.create_model(name)
else:
    import swinlab
    model = swinlab.create_model(name, **overrides)
r = bm.time_model(model, batch_size=batch, img_size=size, precision=precision, mode="train", device="cpu",
                  warmup=warmup, repeats=repeats)
print(json.dumps({"median_s": r["median_s"], "times_s": r["times_s"], "malloc": allocator.state()}))
"""


def child(spec: tuple, arm: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["SWINLAB_TUNE_MALLOC"] = "1" if arm == "tuned" else "0"
    payload = json.dumps([*spec, args.precision, args.warmup, args.repeats, args.threads])
    out = subprocess.run([sys.executable, "-c", CHILD, payload], env=env, capture_output=True, text=True,
                         check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS), metavar="LABEL")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from swinlab.analysis import benchmark as bm  # the parent only records the machine

    runs = {label: {"default": [], "tuned": []} for label in args.models}
    for r in range(args.rounds):
        for label in args.models:
            for arm in ("default", "tuned"):
                result = child(MODELS[label], arm, args)
                runs[label][arm].append(result)
                print(f"round {r + 1} {label:<34} {arm:<8} {result['median_s'] * 1e3:8.1f} ms "
                      f"({result['malloc']})", flush=True)
    summary = {}
    for label, arms in runs.items():
        med = {arm: statistics.median(x["median_s"] for x in xs) for arm, xs in arms.items()}
        summary[label] = {"default_ms": med["default"] * 1e3, "tuned_ms": med["tuned"] * 1e3,
                          "speedup": med["default"] / med["tuned"]}
        print(f"{label:<34} default {med['default'] * 1e3:8.1f} ms  tuned {med['tuned'] * 1e3:8.1f} ms  "
              f"×{summary[label]['speedup']:.3f}")
    env = bm.environment("cpu")
    env["machine"]["malloc"] = "set per process: runs[model][arm][i]['malloc']"
    report = {"environment": env, "settings": {**vars(args), "out": str(args.out)},
              "summary": summary, "runs": runs}
    if args.out:
        from swinlab.files import write_json

        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
