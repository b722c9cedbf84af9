"""``swinlab export CHECKPOINT OUT [--format onnx|exported-program] [--dynamic] [--img-size H [W]]``.

Writes the checkpoint as ONNX or a ``torch.export`` program with standard operators only, its class
names and preprocessing in the metadata, after checking it against the eager model (the max |Δ| at
each size checked is printed; nothing is written if it differs).
"""

from __future__ import annotations

import argparse
import json

from ..precision import PRECISIONS
from ._common import img_size, positive_int

HELP = "export a checkpoint to ONNX or a torch.export program, checked against the model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab export``."""
    p.add_argument("checkpoint", help="a swinlab .safetensors checkpoint")
    p.add_argument("out", help="the file to write: .onnx (ONNX Runtime, TensorRT) or .pt2 (torch.export)")
    p.add_argument("--format", choices=["onnx", "exported-program"],
                   help="default: from OUT's suffix")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic height and width too (the batch is always dynamic); Swin and ViT only")
    p.add_argument("--img-size", type=positive_int, nargs="+", metavar="H [W]",
                   help="the example input size (default: the model's img_size)")
    p.add_argument("--precision", choices=PRECISIONS, default="32-true",
                   help="32-true (default) or bf16-true (exported programs); the weights' dtype in the graph")
    p.add_argument("--no-check", action="store_true", help="skip running the export against the model")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Export and print where it went and how it compared."""
    from ..deploy import export  # torch.export and the ONNX exporter load in seconds; --help in none

    report = export(args.checkpoint, args.out, format=args.format, dynamic=args.dynamic,
                    img_size=img_size(args.img_size), precision=args.precision, check=not args.no_check)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    dims = ", ".join(f"{k} {lo}..{hi or '∞'}" for k, (lo, hi) in report.dynamic.items())
    print(f"wrote {report.path} ({report.format}, {report.precision}; dynamic: {dims})")
    for c in report.checks:
        print(f"  input {'×'.join(map(str, c['shape']))}: max |Δ| {c['max_abs']:.2e} "
              f"({c['max_rel']:.2e} of the largest logit; tolerance {report.tolerance:.0e})")
    return 0
