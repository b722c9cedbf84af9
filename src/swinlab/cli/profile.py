"""``swinlab profile MODEL``: params, MACs, window-attention sizes, activation and peak memory."""

from __future__ import annotations

import argparse

from ..analysis.profiler import profile as profile_model
from ._common import build_model, img_size, millions, positive_int, write_json_arg

HELP = "params, MACs, window-attention sizes and activation memory of a model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab profile``."""
    p.add_argument("model", help="a registered model name (see `swinlab list`)")
    p.add_argument("--img-size", nargs="+", type=positive_int, metavar=("H", "W"),
                   help="input size H [W] (default: the preset's img_size); the model is built for it")
    p.add_argument("--batch-size", type=positive_int, default=1,
                   help="images in the training pass that measures activation memory (default 1)")
    p.add_argument("--device", default="meta",
                   help="where the passes run: meta (default: shapes only, instant), cpu, or cuda "
                        "(real kernels; reports peak memory)")
    p.add_argument("--json", metavar="PATH", help="also write the full profile as JSON to PATH")
    p.add_argument("--scaling", nargs="+", type=positive_int, metavar="S",
                   help="also profile at S×S for each S (e.g. 224 448 896): attention entries and "
                        "MACs per pixel, windowed against global attention")


def run(args: argparse.Namespace) -> int:
    """Profile the model, print the table (and the scaling table), write ``--json``."""
    size = img_size(args.img_size)
    overrides = {"img_size": size} if size else {}
    model = build_model(args.model, device=args.device, **overrides)
    result = profile_model(model, batch_size=args.batch_size, name=args.model, device=args.device)
    print(format_profile(result))
    if args.scaling:
        rows = [profile_model(model, img_size=s, name=args.model, device=args.device, memory=False)
                for s in args.scaling]
        result["scaling"] = [scaling_row(r) for r in rows]
        print()
        print(format_scaling(result["scaling"]))
    if args.json:
        write_json_arg(args.json, result)
    return 0


def format_profile(r: dict) -> str:
    """The profile of one model as an aligned text table."""
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
        lines += ["", f"  global context: +{millions(gc['params'])} params "
                      f"({gc['params'] / r['params']:.1%} of the total), +{gc['macs'] / 1e9:.3f}G MACs "
                      f"({gc['macs'] / r['macs']:.1%}), matrices {shapes}"]
    return "\n".join(lines)


def scaling_row(r: dict) -> dict:
    """A profile at one size reduced to its per-pixel figures."""
    pixels = r["img_size"][0] * r["img_size"][1]
    return {
        "img_size": r["img_size"],
        "macs": r["macs"],
        "macs_per_pixel": r["macs"] / pixels,
        "attention_entries_per_pixel": (r["attention_entries"] or 0) / pixels,
        "global_attention_entries_per_pixel": (r["global_attention_entries"] or 0) / pixels,
    }


def format_scaling(rows: list[dict]) -> str:
    """The per-pixel scaling rows as a text table."""
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
