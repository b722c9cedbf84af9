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
    python benchmarks/bench.py --precision 32-true bf16-mixed bf16-true --compile default freeze  # best
    python benchmarks/bench.py --device cuda --precision bf16-mixed --batch-size 128 --backends auto triton
    python benchmarks/bench.py --scaling 224 448 672
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import timm
import torch
import torchvision

import swinlab
from swinlab.analysis import benchmark as bm
from swinlab.cli.bench import add_timing_arguments, timing_choices
from swinlab.files import write_json
from swinlab.kernels import linear as linear_kernels
from swinlab.weights import convert, load_state_dict

TIMM_NAMES = {"swin_t": "swin_tiny_patch4_window7_224", "deit_s": "deit_small_patch16_224"}


def _progress(name: str, repeat: int, seconds: float) -> None:
    print(f"  {name:<32} step {repeat + 1:>2}: {seconds * 1e3:8.1f} ms", flush=True)


def _timm(family: str, size: tuple[int, int], state: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAMES[family], img_size=size)
    if state is not None:
        model.load_state_dict(state)
    return model


def _swinlab(family: str, size: tuple[int, int], backend: str | None = None,
             state: dict | None = None, linear: str = "auto") -> torch.nn.Module:
    model = swinlab.create_model(family, img_size=size, linear_backend=linear,
                                 **({"attention_backend": backend} if backend else {}))
    if state is not None:
        load_state_dict(model, state)
    return model


def swin_candidates(args) -> list[bm.Candidate]:
    """timm, torchvision and swinlab per attention backend (and per linear backend after the first),
    timm's weights in all but torchvision's; each in every ``--precision`` and, with ``--compile``,
    every compile mode too (eager always)."""
    size = (args.img_size, args.img_size)
    peer = _timm("swin_t", size).state_dict()
    ours = convert(peer, "timm")
    models = [bm.Candidate("timm", partial(_timm, "swin_t", state=peer), peer="timm"),
              bm.Candidate("torchvision", lambda s: torchvision.models.swin_t(), peer="torchvision")]
    for backend in args.backends:
        build = partial(_swinlab, "swin_t", backend=backend, state=ours, linear=args.linear_backends[0])
        models.append(bm.Candidate(f"swinlab[{backend}]", build, peer="swinlab"))
        models += [bm.Candidate(f"swinlab[{backend}, linear={linear}]", build, linear_backend=linear,
                                peer="swinlab")
                   for linear in args.linear_backends[1:]]
    precs, compile_modes = timing_choices(args)
    if len(precs) == 1 and compile_modes == [False]:
        return models  # one configuration: the labels stay timm, torchvision, swinlab[...]
    return bm.configurations(models, precisions=precs, compile_modes=compile_modes)


def compare(args) -> dict:
    """Swin-T: every model, every configuration, every mode, interleaved; ratios against timm and
    torchvision (their first configuration), and each implementation's fastest configuration."""
    precs, compile_modes = timing_choices(args)
    single = len(precs) == 1 and compile_modes == [False]
    print(f"batch {args.batch_size}, {args.img_size}², {', '.join(precs)}, {args.device}", flush=True)
    models = swin_candidates(args)
    baselines = [m.label for m in models if m.peer in ("timm", "torchvision")]
    baselines = [next(b for b in baselines if b.startswith(p)) for p in ("timm", "torchvision")]
    out = bm.compare(models, img_size=args.img_size, modes=args.mode, warmup=args.warmup,
                     repeats=args.repeats, baselines=baselines, callback=_progress,
                     batch_size=args.batch_size, device=args.device,
                     **({"precision": precs[0]} if single else {}))
    env = bm.environment(args.device)
    fastest = {}
    for mode, results in out.items():
        if args.brief:
            for r in results.values():
                r.pop("times_s")
        print(bm.format_results(mode, results, env), flush=True)
        fastest[mode] = bm.fastest(results)
        print(bm.format_fastest(mode, fastest[mode]), flush=True)
    return out, fastest


def scaling(args) -> list[dict]:
    """Swin-T and DeiT-S (swinlab, timm) at every size, all interleaved; cost per pixel."""
    models, owner = [], {}
    for family in ("swin_t", "deit_s"):
        ours = partial(_swinlab, family, linear=args.linear_backends[0])
        for impl, build in (("swinlab", ours), ("timm", partial(_timm, family))):
            models.append(bm.Candidate(f"{impl}:{family}", build))
            owner[f"{impl}:{family}"] = (impl, family)
    rows = bm.scaling(models, args.scaling, batch_size=args.scaling_batch, warmup=1, repeats=args.repeats,
                      callback=_progress, precision=timing_choices(args)[0][0], mode="infer",
                      device=args.device)
    print(bm.format_scaling(rows), flush=True)
    # the keys this script's JSON has always had: impl, model (the family), size (the side)
    return [{**r, "impl": owner[r["model"]][0], "model": owner[r["model"]][1], "size": r["img_size"][0]}
            for r in rows]


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
        ax.set_title(f"Cost per pixel vs resolution, batch {s['scaling_batch']}, "
                     f"{'+'.join(s['precision'] or [s['dtype'] or '32-true'])}\n{where}",
                     fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    else:
        modes = list(report["results"])
        rows = max(len(report["results"][m]) for m in modes)
        fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), max(4.0, 0.3 * rows + 1.5)),
                                 squeeze=False)
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
            vs_timm = next(k for k in res[names[0]] if k.startswith("speedup_vs_timm"))
            for y, n in enumerate(names):
                ax.text(hi[y], y, f" ×{res[n][vs_timm]:.2f}", va="center", fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("images / s (median; bars p10-p90)")
            ax.set_title(f"Swin-T {mode}, batch {s['batch_size']}, {s['img_size']}²",
                         fontsize=9)
        fig.suptitle(f"{where}; ×: speed-up against {vs_timm.removeprefix('speedup_vs_')} in the same run",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(p, modes=("infer", "train"), warmup=2, repeats=7)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--backends", nargs="+", default=["auto"], help="swinlab attention backends to time")
    p.add_argument("--linear-backends", nargs="+", default=["auto"], choices=linear_kernels.BACKENDS,
                   help="swinlab linear-layer backends (swinlab.kernels.linear): the first for every model, "
                        "each further one adds a swinlab model per attention backend (e.g. auto torch)")
    p.add_argument("--scaling", nargs="+", type=int, help="instead: cost per pixel at these sizes")
    p.add_argument("--scaling-batch", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--brief", action="store_true", help="leave the per-step times out of the JSON")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", help="file name stem (default: from the settings)")
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precs, _ = timing_choices(args)
    tag = "+".join(precs)
    if args.threads:
        torch.set_num_threads(args.threads)

    report = {"environment": None, "settings": vars(args)}
    if args.scaling:
        report["scaling"] = scaling(args)
        stem = args.name or f"{args.device}_scaling_{tag}"
    else:
        report["results"], report["fastest"] = compare(args)
        stem = args.name or f"{args.device}_swin_t_b{args.batch_size}_{args.img_size}_{tag}"
    report["environment"] = bm.environment(args.device)  # after the steps: the state they ran in (malloc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", report)
    plot(report, out / f"{stem}.png")
    print(f"wrote {out / stem}.json and .png")
    return report


if __name__ == "__main__":
    main()
