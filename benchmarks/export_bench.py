"""Exported Swin-T against eager swinlab, float32 on the CPU: ONNX Runtime (and the ``.pt2`` program).

One dynamic export per format (:func:`swinlab.deploy.export`, checked against the model), then every
runner timed *interleaved* at each batch size: one forward of each in turn, ``--warmup`` untimed
rounds, ``--repeats`` timed ones, medians. ONNX Runtime runs with as many intra-op threads as torch
(``torch.get_num_threads()``) and all graph optimizations. Writes ``OUT/<name>.json``.

    python benchmarks/export_bench.py --batch-sizes 1 8 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import swinlab
from swinlab.analysis import benchmark as bm
from swinlab.deploy import export, load_exported
from swinlab.files import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="swin_t")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--name", default="cpu_export_swin_t_float32")
    args = p.parse_args()

    torch.manual_seed(0)
    model = swinlab.create_model(args.model).eval()
    work = Path(tempfile.mkdtemp(prefix="swinlab-export-bench-"))
    reports = {}
    for fmt, suffix in (("onnx", ".onnx"), ("exported-program", ".pt2")):
        t0 = time.perf_counter()
        reports[fmt] = export(model, work / f"model{suffix}", dynamic=True, img_size=args.img_size)
        reports[fmt] = {**reports[fmt].to_dict(), "export_s": time.perf_counter() - t0}
        print(f"exported {fmt} in {reports[fmt]['export_s']:.0f} s, max rel |Δ| "
              f"{max(c['max_rel'] for c in reports[fmt]['checks']):.1e}", flush=True)

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(work / "model.onnx"), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    program = load_exported(work / "model.pt2")

    results = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, 3, args.img_size, args.img_size)
        xn = x.numpy()

        def eager(x=x):
            with torch.inference_mode():
                model(x)

        runners = {"swinlab eager (auto backends)": eager,
                   "onnxruntime (CPU EP)": lambda xn=xn: session.run(None, {input_name: xn}),
                   "torch.export program (eager ATen)": lambda x=x: program.logits(x)}
        times = {k: [] for k in runners}
        for r in range(args.warmup + args.repeats):
            for name, fn in runners.items():
                t0 = time.perf_counter()
                fn()
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["swinlab eager (auto backends)"])
        for name, ts in times.items():
            med = statistics.median(ts)
            results.append({"runner": name, "batch_size": batch, "median_s": med, "images_per_s": batch / med,
                            "vs_swinlab_eager": base / med, "times_s": ts})
            print(f"  batch {batch:>3}  {name:<36} {med * 1e3:8.1f} ms  {batch / med:7.1f} img/s  "
                  f"swinlab eager ×{med / base:.2f} of its time", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{args.name}.json", {
        "what": f"{args.model} float32 inference, {args.img_size}², exported (dynamic batch/height/width) "
                "vs eager swinlab, interleaved medians",
        "environment": {**bm.environment("cpu"), "onnxruntime": ort.__version__},
        "warmup": args.warmup, "repeats": args.repeats, "exports": reports, "results": results})
    print(f"wrote {out / (args.name + '.json')}")


if __name__ == "__main__":
    main()
