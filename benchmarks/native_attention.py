"""A/B timing of the native window-attention kernel (``attention_backend="native"``) against ``"sdpa"`` on
the CPU, in one process, interleaved (one call of each in turn), medians.

* per call: Swin-T's four attention shapes at batch 8, 224² (N = 49 tokens, d = 32 channels; stage s has
  8·(64 >> 2s) windows and 3·2^s heads), W-MSA (one bias for every window) and SW-MSA (a bias + region
  mask per window), bfloat16 and float32: each backend's ``attend_windows`` as the model calls it, bias
  caches warm;
* the whole model: Swin-T, batch 8, 224², ``torch.inference_mode()``, ``model.bfloat16()`` (bf16-true)
  and float32, the same model switched between the two backends step by step.

    PYTHONPATH=src python benchmarks/native_attention.py --threads 2 \
        --out benchmarks/results/cpu_native_attention.json

``--training``: the training kernels against ``"reference"`` (the backend ``auto`` trained with before),
forward + backward of each call (the demo's three shapes, swin_demo_28 at batch 128, and Swin-T's at batch
8; qkv in bfloat16 as bf16-mixed hands it over, the bias table in float32), and whole training steps
(bf16-mixed autocast, fused AdamW) of swin_demo_28 at batch 128 and Swin-T at batch 8, 224²:

    PYTHONPATH=src python benchmarks/native_attention.py --training --threads 2 \
        --out benchmarks/results/cpu_native_attention_training.json

Prints a table and writes the JSON (machine, versions, date, load average before and after: the
development machine is shared, so ratios from one run are what to compare, not absolute times).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import torch

import swinlab
from swinlab.kernels import WindowSpec, native
from swinlab.kernels import sdpa as sdpa_mod


def _cpu() -> dict:
    info = {"model": platform.processor(), "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["model"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    keep = ("avx512f", "avx512_bf16", "amx", "avx2")
                    info["flags"] = [x for x in flags if x.startswith(keep)]
                    break
    except OSError:
        pass
    return info


def _stats(ts: list[float]) -> dict:
    s = sorted(ts)
    return {"median_ms": statistics.median(s) * 1e3, "p10_ms": s[len(s) // 10] * 1e3,
            "p90_ms": s[(9 * len(s)) // 10] * 1e3, "n": len(s)}


def _ab(fns: dict, repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        for f in fns.values():
            f()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t)
    return {k: _stats(v) for k, v in ts.items()}


def per_call(repeats: int) -> list[dict]:
    rows = []
    for stage in range(4):
        side, heads = 56 >> stage, 3 << stage
        nw = (side // 7) ** 2
        for shift in ((0, 0), (3, 3)) if side > 7 else ((0, 0),):
            spec = WindowSpec(num_heads=heads, window=(7, 7), shift=shift, table_window=(7, 7),
                              scale=32**-0.5)
            for dtype in (torch.bfloat16, torch.float32):
                g = torch.Generator().manual_seed(stage)
                qkv = torch.randn(8 * nw, 49, 3 * 32 * heads, generator=g).to(dtype)
                table = torch.nn.Parameter(torch.randn(169, heads, generator=g).to(dtype))
                kw = {"map_size": (side, side)}
                with torch.inference_mode():
                    args = (qkv, table, spec)
                    fns = {"sdpa": lambda args=args, kw=kw: sdpa_mod.attend_windows(*args, **kw),
                           "native": lambda args=args, kw=kw: native.attend_windows(*args, **kw)}
                    err = (fns["native"]().float() - fns["sdpa"]().float()).abs().max().item()
                    res = _ab(fns, repeats)
                row = {"stage": stage + 1, "windows": 8 * nw, "heads": heads, "problems": 8 * nw * heads,
                       "shifted": shift != (0, 0), "dtype": str(dtype).removeprefix("torch."),
                       "sdpa": res["sdpa"], "native": res["native"],
                       "ratio_sdpa_over_native": res["sdpa"]["median_ms"] / res["native"]["median_ms"],
                       "max_abs_diff": err}
                rows.append(row)
                print(f"stage {stage + 1} {'SW' if row['shifted'] else 'W '}-MSA {row['dtype']:>8}: sdpa "
                      f"{res['sdpa']['median_ms']:7.3f} ms  native {res['native']['median_ms']:7.3f} ms  "
                      f"x{row['ratio_sdpa_over_native']:.2f}  (max |diff| {err:.1e})", flush=True)
    return rows


def whole_model(repeats: int) -> list[dict]:
    rows = []
    x32 = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for precision in ("bf16-true", "32-true"):
        model = swinlab.create_model("swin_t").eval()
        x = x32
        if precision == "bf16-true":
            model, x = model.bfloat16(), x32.bfloat16()

        def step(backend, model=model, x=x):
            model.set_attention_backend(backend)
            model(x)

        with torch.inference_mode():
            res = _ab({b: (lambda b=b: step(b)) for b in ("sdpa", "native")}, repeats, warmup=2)
        row = {"model": "swin_t", "batch": 8, "img_size": 224, "precision": precision, "sdpa": res["sdpa"],
               "native": res["native"],
               "saved_ms": res["sdpa"]["median_ms"] - res["native"]["median_ms"],
               "ratio_sdpa_over_native": res["sdpa"]["median_ms"] / res["native"]["median_ms"]}
        rows.append(row)
        print(f"Swin-T b8 224² {precision:>9}: sdpa {res['sdpa']['median_ms']:7.1f} ms  native "
              f"{res['native']['median_ms']:7.1f} ms  saved {row['saved_ms']:.1f} ms  "
              f"x{row['ratio_sdpa_over_native']:.3f}", flush=True)
    return rows


# (label, windows, tokens per window, window, shift, heads, channels per head)
TRAIN_SHAPES = [
    ("swin_demo_28 b128 stage 1 SW-MSA", 512, 16, (4, 4), (2, 2), 2, 16),
    ("swin_demo_28 b128 stage 2", 128, 16, (4, 4), (0, 0), 4, 16),
    ("swin_demo_28 b128 stage 3", 128, 4, (2, 2), (0, 0), 8, 16),
    ("swin_t b8 stage 1 SW-MSA", 512, 49, (7, 7), (3, 3), 3, 32),
    ("swin_t b8 stage 3", 32, 49, (7, 7), (0, 0), 12, 32),
]


def training_calls(repeats: int) -> list[dict]:
    from swinlab.kernels import reference as ref_mod

    rows = []
    for label, bnw, n, window, shift, heads, d in TRAIN_SHAPES:
        spec = WindowSpec(num_heads=heads, window=window, shift=shift, table_window=window, scale=d**-0.5)
        g = torch.Generator().manual_seed(0)
        qkv = torch.randn(bnw, n, 3 * heads * d, generator=g).bfloat16().requires_grad_()
        table = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, generator=g).requires_grad_()
        map_size = tuple(2 * w if s else w for w, s in zip(window, shift, strict=True))
        grad = torch.randn(bnw, n, heads * d, generator=g).bfloat16()

        def step(attend, qkv=qkv, table=table, spec=spec, map_size=map_size, grad=grad):
            with torch.autocast("cpu", torch.bfloat16):
                out = attend(qkv, table, spec, map_size=map_size)
            out.backward(grad)

        res = _ab({"reference": lambda step=step: step(ref_mod.attend_windows),
                   "native": lambda step=step: step(native.attend_windows)}, repeats)
        row = {"shape": label, "windows": bnw, "tokens": n, "heads": heads, "head_dim": d,
               "reference": res["reference"], "native": res["native"],
               "ratio_reference_over_native": res["reference"]["median_ms"] / res["native"]["median_ms"]}
        rows.append(row)
        print(f"{label:>34} fwd+bwd: reference {res['reference']['median_ms']:7.3f} ms  native "
              f"{res['native']['median_ms']:7.3f} ms  x{row['ratio_reference_over_native']:.2f}", flush=True)
    return rows


def training_steps(repeats: int) -> list[dict]:
    rows = []
    for name, batch in (("swin_demo_28", 128), ("swin_t", 8)):
        model = swinlab.create_model(name)
        opt = torch.optim.AdamW(model.parameters(), 1e-4, fused=True)
        x = torch.randn(batch, model.config.in_chans, *model.config.img_size,
                        generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, model.config.num_classes, (batch,), generator=torch.Generator().manual_seed(1))

        def step(backend, model=model, opt=opt, x=x, y=y):
            model.set_attention_backend(backend)
            with torch.autocast("cpu", torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        res = _ab({b: (lambda b=b, step=step: step(b)) for b in ("reference", "native")}, repeats, warmup=3)
        row = {"model": name, "batch": batch, "precision": "bf16-mixed", "optimizer": "AdamW (fused)",
               "reference": res["reference"], "native": res["native"],
               "images_per_s": {b: batch / (res[b]["median_ms"] / 1e3) for b in res},
               "ratio_reference_over_native": res["reference"]["median_ms"] / res["native"]["median_ms"]}
        rows.append(row)
        print(f"{name} b{batch} training step: reference {res['reference']['median_ms']:7.1f} ms  native "
              f"{res['native']['median_ms']:7.1f} ms  x{row['ratio_reference_over_native']:.3f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=31, help="interleaved calls per backend and shape")
    p.add_argument("--model-repeats", type=int, default=9, help="interleaved steps per backend")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--skip-calls", action="store_true", help="the whole model only")
    p.add_argument("--training", action="store_true", help="the training kernels against the reference")
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not native.available():
        raise SystemExit(f"native kernel unavailable: {native.unavailable_reason()}")
    cc = native.compiler()
    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": _cpu(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "swinlab": swinlab.__version__,
                        "compiler": subprocess.run([*cc, "--version"], capture_output=True,
                                                   text=True).stdout.splitlines()[0]},
           "threads": args.threads, "kernel_capabilities": native.capabilities(),
           "auto_takes_native": native.auto_eligible(), "load_average_before": os.getloadavg()}
    out = {"environment": env, "command": "PYTHONPATH=src python benchmarks/native_attention.py "
           f"--threads {args.threads} --repeats {args.repeats} --model-repeats {args.model_repeats}"
           + (" --skip-model" if args.skip_model else "") + (" --skip-calls" if args.skip_calls else "")
           + (" --training" if args.training else "")}
    # this process's CPU time over the wall time of each part: about the thread count when the cores were
    # ours (the machine is shared: other jobs' time slices show as a lower figure and as slow outliers)
    calls, model = (training_calls, training_steps) if args.training else (per_call, whole_model)
    env["auto_trains_with_native"] = native.train_eligible()
    parts = ([] if args.skip_calls else [("per_call", lambda: calls(args.repeats))]) + (
        [] if args.skip_model else [("whole_model", lambda: model(args.model_repeats))])
    for name, run in parts:
        wall0, cpu0 = time.perf_counter(), sum(os.times()[:2])
        out[name] = run()
        busy = (sum(os.times()[:2]) - cpu0) / (time.perf_counter() - wall0)
        env[f"{name}_cpu_seconds_per_wall_second"] = busy
    env["load_average_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
