"""The ``swinlab`` command line.

    swinlab list [PATTERN]
    swinlab profile MODEL [--img-size H [W]] [--batch-size N] [--device D] [--json PATH]
                          [--scaling S [S ...]]

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
from .models.registry import create_model, describe, get_config, list_models

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


# --- the parser ----------------------------------------------------------------------------------

Command = tuple[Callable[[argparse.ArgumentParser], None],
                Callable[[argparse.Namespace, argparse.ArgumentParser], int], str]

_COMMANDS: dict[str, Command] = {
    "list": (_add_list, _run_list, "list registered models with their parameter counts"),
    "profile": (_add_profile, _run_profile,
                "params, MACs, window-attention sizes and activation memory of a model"),
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
