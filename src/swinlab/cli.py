"""The ``swinlab`` command line.

    swinlab list [PATTERN]
    swinlab profile MODEL [--img-size H [W]] [--batch-size N] [--device D] [--json PATH]
                          [--scaling S [S ...]]
    swinlab train [--recipe NAME] [--model M] [--data fashion-mnist|synthetic|folder:PATH] [--data-dir D]
                  [--epochs N] [--batch-size B] [--out DIR] [--resume] [--devices N] [--num-nodes M]
                  [--strategy S] [--accelerator A] [--smoke] [--strict] [--config FILE.yaml]
                  [--set FIELD=VALUE ...] [--print-config] [--base-lr LR] [--precision P] [--num-workers N]
    swinlab eval CHECKPOINT [--data ...] [--data-dir D] [--model M] [--limit N] [--json]
    swinlab predict CHECKPOINT IMAGE [IMAGE ...] [--topk K] [--json]
    swinlab demo [--out runs/demo] [--quick] [--data-dir D]
    swinlab study ablations [--data D] [--seeds N] [--epochs N] [--train-limit N] [--out DIR]
                            [--only NAME ...] [--work DIR] [--report-only] [--smoke] [--threads N]

Each subcommand is two functions registered in :data:`_COMMANDS`: ``add(parser)`` declares its
arguments and ``run(args, parser) -> int`` does the work, reporting bad input through
``parser.error`` (a message on stderr naming the problem and the fix, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
from torch import nn

from .analysis import profile
from .kernels import linear as linear_kernels
from .models.registry import create_model, describe, get_config, list_models
from .train.settings import add_train_config_arguments, config_to_yaml, train_config_from_args

# the benchmark module by its full name: the package re-exports a function called `benchmark` over it
bm = sys.modules["swinlab.analysis.benchmark"]

# --- shared helpers ------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _img_size(values: list[int] | None, parser: argparse.ArgumentParser) -> tuple[int, int] | None:
    """``--img-size H [W]`` → ``(H, W)``."""
    if values is None:
        return None
    if len(values) > 2:
        parser.error(f"--img-size takes H or H W, got {len(values)} numbers: {values}")
    return (values[0], values[-1])


def _build(name: str, parser: argparse.ArgumentParser, *, device: str = "meta", **overrides) -> nn.Module:
    """The registered model ``name`` on ``device`` (``meta``: shapes only, built instantly)."""
    try:
        get_config(name, **overrides)
    except (ValueError, TypeError) as e:
        parser.error(f"{e}. Run `swinlab list` to see every registered model.")
    try:
        dev = torch.device(device)
    except RuntimeError:
        parser.error(f"--device {device!r} is not a device; use meta, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device meta or cpu")
    with dev:
        return create_model(name, **overrides)


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


# --- swinlab list --------------------------------------------------------------------------------


def _add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style pattern (swin_*); without wildcards, a substring of the name")


def _run_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
    names = list_models(pattern)
    if not names:
        print(f"no registered model matches {args.pattern!r}; `swinlab list` shows them all", file=sys.stderr)
        return 1
    width = max(len(n) for n in names)
    for name in names:
        with torch.device("meta"):  # parameter counts need shapes only
            params = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<{width}}  {_millions(params):>8}  {describe(name)}")
    return 0


# --- swinlab profile -----------------------------------------------------------------------------


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model name (see `swinlab list`)")
    p.add_argument("--img-size", nargs="+", type=_positive_int, metavar=("H", "W"),
                   help="input size H [W] (default: the preset's img_size); the model is built for it")
    p.add_argument("--batch-size", type=_positive_int, default=1,
                   help="images in the training pass that measures activation memory (default 1)")
    p.add_argument("--device", default="meta",
                   help="where the passes run: meta (default: shapes only, instant), cpu, or cuda "
                        "(real kernels; reports peak memory)")
    p.add_argument("--json", metavar="PATH", help="also write the full profile as JSON to PATH")
    p.add_argument("--scaling", nargs="+", type=_positive_int, metavar="S",
                   help="also profile at S×S for each S (e.g. 224 448 896): attention entries and "
                        "MACs per pixel, windowed against global attention")


def _run_profile(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    size = _img_size(args.img_size, parser)
    overrides = {"img_size": size} if size else {}
    model = _build(args.model, parser, device=args.device, **overrides)
    result = profile(model, batch_size=args.batch_size, name=args.model, device=args.device)
    print(_format_profile(result))
    if args.scaling:
        rows = [profile(model, img_size=s, name=args.model, device=args.device, memory=False)
                for s in args.scaling]
        result["scaling"] = [_scaling_row(r) for r in rows]
        print()
        print(_format_scaling(result["scaling"]))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
        except OSError as e:
            parser.error(f"cannot write --json {args.json!r}: {e.strerror}; choose a writable path")
    return 0


def _format_profile(r: dict) -> str:
    h, w = r["img_size"]
    lines = [
        f"{r['name']} at {h}×{w} (passes run on {r['device']})",
        f"  params        {r['params'] / 1e6:9.2f} M",
        f"  MACs          {r['macs'] / 1e9:9.2f} G   (the paper's \"FLOPs\"), per image",
        f"  FLOPs         {r['flops'] / 1e9:9.2f} G   (2 × MACs), per image",
    ]
    if r["activation_bytes"] is not None:
        lines.append(f"  activations   {r['activation_bytes'] / 2**20:9.1f} MiB saved for backward by one "
                     f"training forward pass of {r['batch_size']} image(s)")
    peak = r["peak_memory_bytes"]
    lines.append(f"  peak memory   {peak / 2**20:9.1f} MiB allocated on the device during that pass"
                 if peak is not None else "  peak memory         n/a (measured on CUDA only)")
    if not r["stages"]:
        lines.append("  (no window attention)")
        return "\n".join(lines)
    lines += ["", "  attention matrix entries per image, per head, per block",
              f"  {'stage':>5}  {'map':>9}  {'blocks':>6}  {'heads':>5}  {'window':>7}  {'shifts':<11}"
              f"{'windows':>7}  {'windowed':>13}  {'global':>15}  {'ratio':>7}"]
    for s in r["stages"]:
        shifts = []
        for b in s["windows"]:
            text = ",".join(map(str, b["shift"]))
            if text not in shifts:
                shifts.append(text)
        mh, mw = s["windows"][0]["window"]
        lines.append(
            f"  {s['index'] + 1:>5}  {'×'.join(map(str, s['map_size'])):>9}  {s['blocks']:>6}  "
            f"{s['num_heads']:>5}  {f'{mh}×{mw}':>7}  {' '.join(shifts):<11}{s['num_windows']:>7}  "
            f"{s['attention_entries']:>13,}  {s['global_attention_entries']:>15,}  {s['ratio']:>7.2%}")
    total, full = r["attention_entries"], r["global_attention_entries"]
    lines.append(f"  all blocks and heads: {total:,} windowed vs {full:,} global ({total / full:.2%})")
    gc = r.get("global_context")
    if gc:
        shapes = ", ".join(f"{m['queries']}×{m['keys']}" for m in gc["matrices"])
        lines += ["", f"  global context: +{_millions(gc['params'])} params "
                      f"({gc['params'] / r['params']:.1%} of the total), +{gc['macs'] / 1e9:.3f}G MACs "
                      f"({gc['macs'] / r['macs']:.1%}), matrices {shapes}"]
    return "\n".join(lines)


def _scaling_row(r: dict) -> dict:
    pixels = r["img_size"][0] * r["img_size"][1]
    return {
        "img_size": r["img_size"],
        "macs": r["macs"],
        "macs_per_pixel": r["macs"] / pixels,
        "attention_entries_per_pixel": (r["attention_entries"] or 0) / pixels,
        "global_attention_entries_per_pixel": (r["global_attention_entries"] or 0) / pixels,
    }


def _format_scaling(rows: list[dict]) -> str:
    lines = ["  scaling with image size, per image (windowed attention: constant per pixel; "
             "global: grows with the pixel count)",
             f"  {'size':>11}  {'MACs (G)':>9}  {'MACs/pixel':>11}  {'windowed entries/px':>19}  "
             f"{'global entries/px':>17}"]
    for row in rows:
        h, w = row["img_size"]
        lines.append(f"  {f'{h}×{w}':>11}  {row['macs'] / 1e9:>9.2f}  {row['macs_per_pixel']:>11,.0f}  "
                     f"{row['attention_entries_per_pixel']:>19,.1f}  "
                     f"{row['global_attention_entries_per_pixel']:>17,.1f}")
    return "\n".join(lines)


# --- swinlab train / eval / predict / demo -------------------------------------------------------
# Lightning and the training stack are imported inside the commands: `swinlab list` stays instant.

_DATA_ERRORS = (FileNotFoundError, NotADirectoryError)


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="a named recipe: fashion-mnist (default, or the --config file's "
                   "`recipe:`), demo, swin-imagenet, synthetic, ablations")
    p.add_argument("--model", help="override the recipe's registered model")
    p.add_argument("--data", help="fashion-mnist | synthetic | folder:PATH (default: the recipe's)")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (or the image folder)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int, help="per device")
    p.add_argument("--out", default="runs/train", help="run directory (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--devices", type=_positive_int, default=1)
    p.add_argument("--num-nodes", type=_positive_int, default=1)
    p.add_argument("--strategy", default="auto", help="auto | ddp | ddp_spawn | fsdp")
    p.add_argument("--accelerator", default="auto", help="auto | cpu | gpu")
    p.add_argument("--smoke", action="store_true", help="the recipe's seconds-long smoke version")
    p.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    add_train_config_arguments(p)  # --config, --set, --print-config, ...; every field in the epilog


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .train import fit

    try:
        config = train_config_from_args(args)
        if args.print_config:
            print(config_to_yaml(config), end="")
            return 0
        result = fit(config, args.out, resume=args.resume, devices=args.devices, num_nodes=args.num_nodes,
                     strategy=args.strategy, accelerator=args.accelerator)
    except (*_DATA_ERRORS, ValueError, TypeError) as e:
        parser.error(str(e))
    print(json.dumps(result, indent=2))
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a swinlab .safetensors checkpoint (OUT/model.safetensors of train)")
    p.add_argument("--data", help="fashion-mnist | synthetic | folder:PATH (default: what it was trained on)")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (or the image folder)")
    p.add_argument("--model", help="check the checkpoint against this registered model")
    p.add_argument("--limit", type=_positive_int, help="evaluate the first N test images only")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .train import evaluate
    from .weights import CheckpointError

    try:
        r = evaluate(args.checkpoint, args.data, args.data_dir, model=args.model, batch_size=args.batch_size,
                     test_limit=args.limit)
    except (CheckpointError, *_DATA_ERRORS, ValueError) as e:
        parser.error(str(e))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{args.checkpoint} on {r['images']} test images: top-1 {r['acc1']:.2%}  "
              f"top-5 {r['acc5']:.2%}  loss {r['loss']:.4f}")
    return 0


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a swinlab .safetensors checkpoint")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, BMP)")
    p.add_argument("--topk", type=_positive_int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .data import ImageError
    from .train import predict
    from .weights import CheckpointError

    try:
        results = predict(args.checkpoint, args.images, topk=args.topk)
    except (CheckpointError, ImageError) as e:
        parser.error(str(e))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["path"])
        for rank, t in enumerate(r["top"], 1):
            print(f"  {rank}. {t['label']:<20} {t['prob']:7.2%}")
    return 0


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a seconds-long run on a few hundred images")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (default: Debian's)")


def _run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .train.demo import run_demo

    try:
        m = run_demo(args.out, quick=args.quick, data_dir=args.data_dir)
    except _DATA_ERRORS as e:
        parser.error(str(e))
    print(f"test top-1 {m['test_acc1']:.2%} (top-5 {m['test_acc5']:.2%}) on {m['test_images']} images after "
          f"{m['train_seconds']:.0f} s of training; report: {args.out}/report.md")
    return 0


# --- swinlab convert ----------------------------------------------------------------------------


def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("source_file", help="a peer checkpoint (.pth, .pt, .bin, .ckpt or .safetensors)")
    p.add_argument("output", help="the swinlab checkpoint to write (.safetensors, config inside)")
    p.add_argument("--source", required=True, choices=["timm", "torchvision", "official"],
                   help="the layout of the peer checkpoint")
    p.add_argument("--model", help="the registered model it is for (default: inferred from its shapes)")
    p.add_argument("--img-size", type=_positive_int, nargs="+", metavar="H [W]",
                   help="the image size the model is for (default: the preset's, or 224 / 384 for M=12)")


def _run_convert(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .weights import CheckpointError, load, save

    size = _img_size(args.img_size, parser)
    overrides = {"img_size": size} if size else {}
    if not args.output.endswith(".safetensors"):
        parser.error(f"output {args.output!r} must end in .safetensors")
    model = _build(args.model, parser, device="cpu", **overrides) if args.model else None
    try:
        model = load(args.source_file, model, source=args.source, **({} if model else overrides))
    except (CheckpointError, ValueError) as e:
        parser.error(str(e))
    path = save(model, args.output, metadata={"converted_from": f"{args.source}:{args.source_file}"})
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {path}: {type(model).__name__} {_millions(params)} params, config {model.config}")
    return 0


# --- swinlab study --------------------------------------------------------------------------------


def _add_study(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", choices=["ablations"],
                   help="ablations: Table 4 switches, global context, ViT/Mixer baselines")
    p.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist (default) | synthetic | folder:PATH")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (default: Debian's)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 per variant (default 3)")
    p.add_argument("--epochs", type=_positive_int, help="default: the ablations recipe's")
    p.add_argument("--train-limit", type=_positive_int,
                   help="first N training images (default: the recipe's)")
    p.add_argument("--test-limit", type=_positive_int, help="first N test images (default: all)")
    p.add_argument("--out", default="runs/ablations", help="results and report (default runs/ablations)")
    p.add_argument("--work", default="runs/ablations-work",
                   help="checkpoints and logs of the runs (default runs/ablations-work)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run these variants only (space or comma separated)")
    p.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    p.add_argument("--smoke", action="store_true", help="the recipe's seconds-long smoke version")
    p.add_argument("--threads", type=_positive_int,
                   help="torch threads (default: torch's); 1 on a CPU shared with other jobs")


def _run_study(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .train import get_recipe
    from .train.study import Throughput, run_ablations

    changes = {k: v for k, v in (("data", args.data), ("data_dir", args.data_dir), ("epochs", args.epochs),
                                 ("train_limit", args.train_limit), ("test_limit", args.test_limit))
               if v is not None}
    if args.smoke and args.data == "fashion-mnist":
        changes.pop("data")  # the smoke recipe's synthetic data unless asked otherwise
    speed = Throughput(batch_size=8, warmup=1, repeats=2) if args.smoke else Throughput()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        schedule = get_recipe("ablations", smoke=args.smoke, **changes)
        results = run_ablations(args.out, schedule=schedule, seeds=args.seeds, only=args.only, work=args.work,
                                throughput=speed, report_only=args.report_only)
    except (*_DATA_ERRORS, ValueError) as e:
        parser.error(str(e))
    done = sum(len(r) for r in results["runs"].values())
    print(f"{done} run(s) finished, {len(results['missing'])} missing; report: {args.out}/report.md")
    return 0


# --- swinlab bench -------------------------------------------------------------------------------


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered models (see `swinlab list`), or torchvision:NAME for torchvision's "
                        "(e.g. torchvision:swin_t); all are timed interleaved, ratios against the first")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="images per step (default 8)")
    p.add_argument("--img-size", nargs="+", type=_positive_int, metavar=("H", "W"),
                   help="input size H [W] (default 224)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="float32 (default), or bfloat16 / float16 under autocast")
    p.add_argument("--mode", nargs="+", choices=["infer", "train"], default=["infer"],
                   help="infer (inference_mode forward) and/or train (forward, cross-entropy, backward, "
                        "AdamW)")
    p.add_argument("--compile", nargs="?", const="default", default=False, metavar="MODE",
                   choices=bm.COMPILE_MODES,
                   help="torch.compile every model (compile time reported apart); MODE: torch.compile's "
                        "mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--backend", nargs="+", metavar="B",
                   help="time each Swin model once per window-attention backend (e.g. reference sdpa auto)")
    p.add_argument("--linear-backend", nargs="+", metavar="L", choices=linear_kernels.BACKENDS,
                   help="time each model once per linear-layer backend (auto: oneDNN on x86 CPUs)")
    p.add_argument("--scaling", nargs="+", type=_positive_int, metavar="S",
                   help="instead, time each model at S×S for each S (e.g. 224 448 896): cost per pixel")
    p.add_argument("--warmup", type=_positive_int, default=3, help="untimed steps per model (default 3)")
    p.add_argument("--repeats", type=_positive_int, default=10, help="timed steps per model (default 10)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--json", metavar="PATH", help="also write the results, machine and versions as JSON")


def _run_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    size = _img_size(args.img_size, parser) or (224, 224)
    if args.device is not None:
        try:
            dev = torch.device(args.device)
        except RuntimeError:
            parser.error(f"--device {args.device!r} is not a device; use cpu or cuda")
        if dev.type == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: CUDA is not available here; use --device cpu")
    specs = []  # (label, model name, attention backend, linear backend)
    for name in args.models:
        ours = not name.startswith(bm.TORCHVISION_PREFIX)
        swin = ours and hasattr(_config_or_error(name, parser), "attention_backend")
        for backend in (args.backend or [None]) if swin else [None]:
            for linear in (args.linear_backend or [None]) if ours else [None]:
                tags = [t for t in (backend, f"linear={linear}" if linear else None) if t]
                specs.append((f"{name}[{', '.join(tags)}]" if tags else name, name, backend, linear))
    kw = dict(batch_size=args.batch_size, dtype=args.dtype, compile=args.compile, device=args.device)
    env = bm.environment(args.device)
    report = {"environment": env, "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")}}

    def build(name, backend, s):
        try:
            return bm.build(name, img_size=s, backend=backend)
        except ValueError as e:
            parser.error(str(e))

    if args.scaling:
        rows = []
        for mode in args.mode:
            for label, name, backend, linear in specs:
                rows += bm.scaling(lambda s, n=name, b=backend: build(n, b, s), args.scaling, name=label,
                                   mode=mode, warmup=args.warmup, repeats=args.repeats,
                                   linear_backend=linear, **kw)
        report["scaling"] = rows
        print(f"{'model':<28} {'mode':<6} {'size':>9} {'ms/image':>10} {'ns/pixel':>9} {'relative':>9}")
        for r in rows:
            h, w = r["img_size"]
            print(f"{r['model']:<28} {r['mode']:<6} {f'{h}×{w}':>9} {r['seconds_per_image'] * 1e3:>10.1f} "
                  f"{r['ns_per_pixel']:>9.2f} {r['relative_cost_per_pixel']:>9.2f}")
    else:
        report["results"] = {}
        for mode in args.mode:
            steps = {label: bm.prepare(build(name, backend, size), img_size=size, mode=mode, name=label,
                                       linear_backend=linear, **kw)
                     for label, name, backend, linear in specs}
            results = bm.run(steps, warmup=args.warmup, repeats=args.repeats)
            report["results"][mode] = results
            print(_format_bench(mode, results, env))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
                f.write("\n")
        except OSError as e:
            parser.error(f"cannot write --json {args.json!r}: {e.strerror}; choose a writable path")
    return 0


def _config_or_error(name: str, parser: argparse.ArgumentParser):
    try:
        return get_config(name)
    except ValueError as e:
        parser.error(f"{e}. Run `swinlab list` to see every registered model.")


def _format_bench(mode: str, results: dict, env: dict) -> str:
    first = next(iter(results.values()))
    m = env["machine"]
    size = "×".join(map(str, first["img_size"]))
    lines = [f"{mode}, {first['dtype']}, batch {first['batch_size']}, {size}, {first['device']}"
             f" ({m['gpu'] or m['cpu']}, {m['torch_threads']} threads); "
             f"median of {first['repeats']} interleaved steps",
             f"  {'model':<28} {'ms/step':>9} {'p10':>9} {'p90':>9} {'img/s':>8} {'vs first':>9} "
             f"{'peak MiB':>9}"]
    for name, r in results.items():
        peak = f"{r['peak_memory_bytes'] / 2**20:9.0f}" if r["peak_memory_bytes"] is not None else "      n/a"
        lines.append(f"  {name:<28} {r['median_s'] * 1e3:>9.1f} {r['p10_s'] * 1e3:>9.1f} "
                     f"{r['p90_s'] * 1e3:>9.1f} {r['images_per_s']:>8.1f} "
                     f"{first['median_s'] / r['median_s']:>8.2f}× {peak}")
    return "\n".join(lines)


# --- the parser ----------------------------------------------------------------------------------

Command = tuple[Callable[[argparse.ArgumentParser], None],
                Callable[[argparse.Namespace, argparse.ArgumentParser], int], str]

_COMMANDS: dict[str, Command] = {
    "list": (_add_list, _run_list, "list registered models with their parameter counts"),
    "profile": (_add_profile, _run_profile,
                "params, MACs, window-attention sizes and activation memory of a model"),
    "train": (_add_train, _run_train, "train a recipe with Lightning (checkpoints, logs, model.safetensors)"),
    "eval": (_add_eval, _run_eval, "top-1/top-5 accuracy and loss of a checkpoint on a test split"),
    "predict": (_add_predict, _run_predict, "top-k classes of image files"),
    "demo": (_add_demo, _run_demo, "train on Fashion-MNIST for a few CPU minutes and write a report"),
    "convert": (_add_convert, _run_convert, "convert a timm / torchvision / official checkpoint to swinlab"),
    "study": (_add_study, _run_study, "train and report the ablation study (Table 4, extension, baselines)"),
    "bench": (_add_bench, _run_bench, "time models interleaved: images/s, ratios, memory, cost per pixel"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``swinlab`` parser with one subparser per entry of :data:`_COMMANDS`."""
    parser = argparse.ArgumentParser(prog="swinlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add, run, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``swinlab`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args._run(args, args._parser)


if __name__ == "__main__":
    sys.exit(main())
