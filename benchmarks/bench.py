"""swinlab's Swin-T against timm's and torchvision's, in one run, on the same weights and inputs.

Every model is timed by :mod:`swinlab.analysis.benchmark` *interleaved* (one step of each model in
turn, repeated), so that noise from other work on a shared machine hits them all alike: read the
ratios, which are measured in the same run. Steps: inference (``torch.inference_mode``) and/or a
training step (forward, cross-entropy, backward, AdamW). swinlab runs once per ``--backends`` entry
(``auto`` resolves per device, see ``swinlab.kernels.select_backend``); ``--compile`` adds a
``torch.compile``d swinlab (and timm) to the same run; ``--linear-backends auto torch`` adds swinlab
with its linear layers on torch's own ``F.linear`` (MKL on the CPU) beside the default (oneDNN on x86
CPUs), to show what each part is worth.

``--scaling 224 448 ...`` instead times Swin-T and DeiT-S (swinlab and timm) at each resolution
(batch ``--scaling-batch``): the cost per pixel stays flat for Swin (window attention is linear in
the tokens) and grows for DeiT (global attention is quadratic).

Writes ``OUT/<name>.json`` (results, ratios, machine, versions, date) and ``OUT/<name>.png``.

    python benchmarks/bench.py                                  # CPU-sized: batch 8, 224², float32
    python benchmarks/bench.py --mode infer train --backends reference sdpa --compile
    python benchmarks/bench.py --device cuda --dtype bfloat16 --batch-size 128 --backends auto sdpa triton
    python benchmarks/bench.py --scaling 224 448 672
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import timm
import torch
import torchvision

import swinlab
from swinlab.analysis.benchmark import COMPILE_MODES, environment, prepare, run
from swinlab.kernels import linear as linear_kernels
from swinlab.weights import convert, load_state_dict

TIMM_NAMES = {"swin_t": "swin_tiny_patch4_window7_224", "deit_s": "deit_small_patch16_224"}


def _progress(name: str, repeat: int, seconds: float) -> None:
    print(f"  {name:<32} step {repeat + 1:>2}: {seconds * 1e3:8.1f} ms", flush=True)


def _swin_models(backends: list[str], compile_: str | None,
                 linear_backends: list[str]) -> dict[str, tuple[torch.nn.Module, bool | str, str | None]]:
    """``{label: (model, compile, linear backend)}``: timm, torchvision and swinlab per attention backend
    (and per linear backend after the first), timm's weights in all."""
    torch.manual_seed(0)
    peer = timm.create_model(TIMM_NAMES["swin_t"])
    weights = convert(peer.state_dict(), "timm")
    models = {"timm": (peer, False, None), "torchvision": (torchvision.models.swin_t(), False, None)}

    def ours(backend):
        model = swinlab.create_model("swin_t", attention_backend=backend)
        load_state_dict(model, weights)
        return model

    for backend in backends:
        models[f"swinlab[{backend}]"] = (ours(backend), False, None)
        for linear in linear_backends[1:]:
            models[f"swinlab[{backend}, linear={linear}]"] = (ours(backend), False, linear)
    if compile_:
        models[f"swinlab[{backends[0]}]+compile"] = (ours(backends[0]), compile_, None)
        twin = timm.create_model(TIMM_NAMES["swin_t"])
        twin.load_state_dict(peer.state_dict())
        models["timm+compile"] = (twin, compile_, None)
    return models


def compare(args) -> dict:
    """Swin-T: every model, every mode, interleaved; ratios against timm and torchvision."""
    out = {}
    for mode in args.mode:
        print(f"{mode}: batch {args.batch_size}, {args.img_size}², {args.dtype}, {args.device}", flush=True)
        models = _swin_models(args.backends, args.compile, args.linear_backends)
        steps = {name: prepare(model, batch_size=args.batch_size, img_size=args.img_size, dtype=args.dtype,
                               mode=mode, compile=comp, device=args.device, name=name, linear_backend=linear)
                 for name, (model, comp, linear) in models.items()}
        results = run(steps, warmup=args.warmup, repeats=args.repeats, callback=_progress)
        for r in results.values():
            if args.brief:
                r.pop("times_s")
            r["speedup_vs_timm"] = results["timm"]["median_s"] / r["median_s"]
            r["speedup_vs_torchvision"] = results["torchvision"]["median_s"] / r["median_s"]
        out[mode] = results
        for name, r in results.items():
            print(f"{name:<28} {r['median_s'] * 1e3:8.1f} ms (p10 {r['p10_s'] * 1e3:7.1f}, "
                  f"p90 {r['p90_s'] * 1e3:7.1f})  {r['images_per_s']:7.2f} img/s  "
                  f"×{r['speedup_vs_timm']:.2f} vs timm  ×{r['speedup_vs_torchvision']:.2f} vs torchvision",
                  flush=True)
    return out


def scaling(args) -> list[dict]:
    """Swin-T and DeiT-S (swinlab, timm) at every size, all interleaved; cost per pixel."""
    steps, meta = {}, {}
    for size in args.scaling:
        for family in ("swin_t", "deit_s"):
            torch.manual_seed(0)
            peer = timm.create_model(TIMM_NAMES[family], img_size=size)
            ours = swinlab.create_model(family, img_size=size)
            for impl, model in (("swinlab", ours), ("timm", peer)):
                name = f"{impl}:{family}@{size}"
                steps[name] = prepare(model, batch_size=args.scaling_batch, img_size=size, dtype=args.dtype,
                                      mode="infer", device=args.device, name=name)
                meta[name] = (impl, family, size)
    results = run(steps, warmup=1, repeats=args.repeats, callback=_progress)
    rows = []
    for name, r in results.items():
        impl, family, size = meta[name]
        ns = r["median_s"] / r["batch_size"] / size**2 * 1e9
        rows.append({**r, "impl": impl, "model": family, "size": size, "ns_per_pixel": ns})
    for row in rows:
        base = next(r for r in rows if r["impl"] == row["impl"] and r["model"] == row["model"])
        row["relative_cost_per_pixel"] = row["ns_per_pixel"] / base["ns_per_pixel"]
        print(f"{row['impl']:<8} {row['model']:<7} {row['size']:>5}²  {row['ns_per_pixel']:8.1f} ns/pixel  "
              f"×{row['relative_cost_per_pixel']:.2f} of {args.scaling[0]}²", flush=True)
    return rows


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = report["environment"]["machine"]
    where = env["gpu"] or f"{env['cpu']}, {env['torch_threads']} threads"
    s = report["settings"]
    if "scaling" in report:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for impl, style in (("swinlab", "-o"), ("timm", "--s")):
            for family in ("swin_t", "deit_s"):
                rows = [r for r in report["scaling"] if r["impl"] == impl and r["model"] == family]
                ax.plot([r["size"] for r in rows], [r["ns_per_pixel"] for r in rows], style,
                        label=f"{impl} {family}")
        ax.set_xlabel("image side (pixels)")
        ax.set_ylabel("ns per pixel (inference, median)")
        ax.set_title(f"Cost per pixel vs resolution, batch {s['scaling_batch']}, {s['dtype']}\n{where}",
                     fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    else:
        modes = list(report["results"])
        fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
            res = report["results"][mode]
            names = list(res)
            ips = [res[n]["images_per_s"] for n in names]
            lo = [res[n]["batch_size"] / res[n]["p90_s"] for n in names]
            hi = [res[n]["batch_size"] / res[n]["p10_s"] for n in names]
            colors = ["tab:blue" if n.startswith("swinlab") else "tab:gray" for n in names]
            err = [[i - a for i, a in zip(ips, lo, strict=True)],
                   [b - i for i, b in zip(ips, hi, strict=True)]]
            ax.barh(names, ips, color=colors, xerr=err)
            for y, n in enumerate(names):
                ax.text(hi[y], y, f" ×{res[n]['speedup_vs_timm']:.2f}", va="center", fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("images / s (median; bars p10-p90)")
            ax.set_title(f"Swin-T {mode}, batch {s['batch_size']}, {s['img_size']}², {s['dtype']}",
                         fontsize=9)
        fig.suptitle(f"{where}; ×: speed-up against timm in the same run", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--mode", nargs="+", choices=["infer", "train"], default=["infer", "train"])
    p.add_argument("--backends", nargs="+", default=["auto"], help="swinlab attention backends to time")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   choices=COMPILE_MODES,
                   help="also time torch.compile'd swinlab and timm (MODE: torch.compile's mode; "
                        "reduce-overhead uses CUDA graphs)")
    p.add_argument("--linear-backends", nargs="+", default=["auto"], choices=linear_kernels.BACKENDS,
                   help="swinlab linear-layer backends (swinlab.kernels.linear): the first for every model, "
                        "each further one adds a swinlab model per attention backend (e.g. auto torch)")
    p.add_argument("--scaling", nargs="+", type=int, help="instead: cost per pixel at these sizes")
    p.add_argument("--scaling-batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--brief", action="store_true", help="leave the per-step times out of the JSON")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", help="file name stem (default: from the settings)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    linear_kernels.set_backend(args.linear_backends[0])

    report = {"environment": environment(args.device), "settings": vars(args)}
    if args.scaling:
        report["scaling"] = scaling(args)
        stem = args.name or f"{args.device}_scaling_{args.dtype}"
    else:
        report["results"] = compare(args)
        stem = args.name or f"{args.device}_swin_t_b{args.batch_size}_{args.img_size}_{args.dtype}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / f"{stem}.png")
    print(f"wrote {out / stem}.json and .png")
    return report


if __name__ == "__main__":
    main()
