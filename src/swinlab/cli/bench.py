"""``swinlab bench MODEL...``: time models interleaved (images/s, ratios, peak memory, cost per pixel).

The timing itself is :mod:`swinlab.analysis.benchmark`; ``benchmarks/bench.py`` drives the same
functions and declares its timing flags with :func:`add_timing_arguments`.
"""

from __future__ import annotations

import argparse

from .. import precision as precisions
from ..analysis import benchmark as bm
from ..errors import ConfigError
from ..kernels import linear as linear_kernels
from ._common import LIST_HINT, check_device, img_size, positive_int, write_json_arg

HELP = "time models interleaved: images/s, ratios, memory, cost per pixel"


def add_timing_arguments(p: argparse.ArgumentParser, *, modes: tuple[str, ...] = ("infer",), warmup: int = 3,
                         repeats: int = 10) -> None:
    """The flags every benchmark driver shares: batch, precisions, modes, compile, warm-up, repeats,
    device."""
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per step (default 8)")
    p.add_argument("--precision", nargs="+", choices=precisions.PRECISIONS, metavar="P",
                   help="time every model in each precision: 32-true (default), bf16-mixed (autocast), "
                        "bf16-true (bf16 weights), 16-mixed (CUDA), auto (the fastest accurate one here)")
    p.add_argument("--dtype", choices=list(bm.DTYPES),
                   help="the older form of --precision: float32 = 32-true, bfloat16 = bf16-mixed, "
                        "float16 = 16-mixed")
    p.add_argument("--mode", nargs="+", choices=list(bm.MODES), default=list(modes),
                   help="infer (inference_mode forward) and/or train (forward, cross-entropy, backward, "
                        f"AdamW); default: {' '.join(modes)}")
    p.add_argument("--compile", nargs="*", default=None, metavar="MODE", choices=bm.COMPILE_MODES,
                   help="also time every model under torch.compile (compile time reported apart), once per "
                        "MODE (default: torch.compile's default mode): reduce-overhead (CUDA graphs), "
                        "max-autotune, freeze (inference: inductor's weight freezing)")
    p.add_argument("--warmup", type=positive_int, default=warmup,
                   help=f"untimed steps per model (default {warmup})")
    p.add_argument("--repeats", type=positive_int, default=repeats,
                   help=f"timed steps per model (default {repeats})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def timing_choices(args: argparse.Namespace) -> tuple[list[str], list[bool | str]]:
    """``(precisions, compile modes)`` the timing flags ask for: eager always, then each ``--compile``
    mode; ``--precision``, else ``--dtype``'s precision, else ``32-true``."""
    precs = list(args.precision or [precisions.DTYPE_ALIASES[args.dtype] if args.dtype else "32-true"])
    compile_modes: list[bool | str] = [False]
    if args.compile is not None:
        compile_modes += list(dict.fromkeys(args.compile or ["default"]))
    return precs, compile_modes


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab bench``."""
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered models (see `swinlab list`), or torchvision:NAME for torchvision's "
                        "(e.g. torchvision:swin_t); all are timed interleaved, ratios against the first")
    p.add_argument("--img-size", nargs="+", type=positive_int, metavar=("H", "W"),
                   help="input size H [W] (default 224)")
    add_timing_arguments(p)
    p.add_argument("--backend", nargs="+", metavar="B",
                   help="time each Swin model once per window-attention backend (e.g. reference sdpa auto)")
    p.add_argument("--linear-backend", nargs="+", metavar="L", choices=linear_kernels.BACKENDS,
                   help="time each model once per linear-layer backend (auto: oneDNN on x86 CPUs)")
    p.add_argument("--scaling", nargs="+", type=positive_int, metavar="S",
                   help="instead, time each model at S×S for each S (e.g. 224 448 896): cost per pixel")
    p.add_argument("--json", metavar="PATH", help="also write the results, machine and versions as JSON")


def run(args: argparse.Namespace) -> int:
    """Time the models, print a table per mode, write ``--json``."""
    size = img_size(args.img_size) or (224, 224)
    if args.device is not None:
        check_device(args.device, choices="cpu or cuda")
    try:
        models = bm.candidates(args.models, backends=args.backend, linear_backends=args.linear_backend)
    except ConfigError as e:
        raise ConfigError(f"{e}. {LIST_HINT}") from e
    precs, compile_modes = timing_choices(args)
    timing = dict(batch_size=args.batch_size, device=args.device)
    if len(precs) == 1 and compile_modes == [False]:
        timing["precision"] = precs[0]  # one configuration: the labels stay the model names
    else:
        models = bm.configurations(models, precisions=precs, compile_modes=compile_modes)
    report = {"environment": None, "settings": settings(args)}
    if args.scaling:
        report["scaling"] = [row for mode in args.mode
                             for row in bm.scaling(models, args.scaling, mode=mode, warmup=args.warmup,
                                                   repeats=args.repeats, **timing)]
        report["environment"] = bm.environment(args.device)  # after the steps: the state they ran in (malloc)
        print(bm.format_scaling(report["scaling"]))
    else:
        report["results"] = bm.compare(models, img_size=size, modes=args.mode, warmup=args.warmup,
                                       repeats=args.repeats, **timing)
        env = report["environment"] = bm.environment(args.device)  # after the steps: the state they ran in
        for mode, results in report["results"].items():
            print(bm.format_results(mode, results, env))
            if len(results) > 1:
                best = bm.fastest(results)
                report.setdefault("fastest", {})[mode] = best
                print(bm.format_fastest(mode, best, ours=next(iter(best))))
    if args.json:
        write_json_arg(args.json, report)
    return 0


def settings(args: argparse.Namespace) -> dict:
    """The command's own arguments for the JSON (not the global flags or the dispatch entries)."""
    return {k: v for k, v in vars(args).items() if k not in ("run", "prog", "debug", "verbose", "quiet")}
