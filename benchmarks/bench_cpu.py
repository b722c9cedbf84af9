"""CPU throughput of swinlab's Swin-T against timm's and torchvision's in the same run.

Each model gets the same weights (converted), the same input, warm-up runs, then the median of
``--repeats`` timed runs of inference (``torch.inference_mode``) and of a training step
(forward + backward + SGD step). Ratios are what to read on a shared, noisy machine; the JSON
records the machine, versions and date with the figures.

    python benchmarks/bench_cpu.py --batch-size 8 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import swinlab
from swinlab.weights import convert, load_state_dict


def _median_seconds(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _models(backends: list[str]) -> dict[str, torch.nn.Module]:
    import timm
    import torchvision

    peer = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    models = {"timm": peer}
    tv = torchvision.models.swin_t()
    models["torchvision"] = tv
    for backend in backends:
        ours = swinlab.create_model("swin_t", attention_backend=backend)
        load_state_dict(ours, convert(peer.state_dict(), "timm"))
        models[f"swinlab[{backend}]"] = ours
    return models


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--backends", nargs="+", default=["reference"])
    p.add_argument("--no-train", action="store_true", help="time inference only")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    results = {}
    for name, model in _models(args.backends).items():
        model.eval()
        with torch.inference_mode():
            infer = _median_seconds(lambda m=model: m(x), args.warmup, args.repeats)
        row = {"infer_s": infer, "infer_img_per_s": args.batch_size / infer}
        if not args.no_train:
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)

            def step(m=model, o=opt):
                o.zero_grad(set_to_none=True)
                m(x).logsumexp(-1).mean().backward()
                o.step()

            train = _median_seconds(step, 1, max(3, args.repeats // 2))
            row.update(train_s=train, train_img_per_s=args.batch_size / train)
        results[name] = row
        print(f"{name:24s} infer {row['infer_img_per_s']:7.2f} img/s"
              + (f"   train {row['train_img_per_s']:6.2f} img/s" if "train_s" in row else ""), flush=True)
    for row in results.values():
        row["infer_speedup_vs_timm"] = results["timm"]["infer_s"] / row["infer_s"]
        if "train_s" in row:
            row["train_speedup_vs_timm"] = results["timm"]["train_s"] / row["train_s"]

    import timm
    import torchvision

    report = {
        "benchmark": "swin_t CPU float32",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "timm": timm.__version__, "swinlab": swinlab.__version__},
        "settings": vars(args),
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cpu_swin_t_b{args.batch_size}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
