"""``swinlab predict CHECKPOINT IMAGE...``: the top-k classes of each image file.

Every readable image is predicted; each unreadable one is reported on stderr (one line naming the
file and why) and in the JSON as ``{"path": ..., "error": ...}``, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..precision import PRECISIONS
from ._common import positive_int

HELP = "top-k classes of image files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab predict``."""
    p.add_argument("checkpoint", help="a swinlab .safetensors checkpoint, or an exported .onnx / .pt2 "
                                      "(swinlab export; ONNX runs through ONNX Runtime)")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, BMP)")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="32-true (default for a checkpoint, float32-exact), bf16-true, bf16-mixed, auto "
                        "(bf16-true where the CPU has native bf16); an exported model runs in its own")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Predict every image; 0 if all were read, 1 if any could not be."""
    # Imported here for start-up time only: Lightning takes seconds to import, `swinlab --help` none.
    from ..train import predict

    results = predict(args.checkpoint, args.images, topk=args.topk, precision=args.precision)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"{args.prog}: error: {r['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "top" in r:
                print(r["path"])
                for rank, t in enumerate(r["top"], 1):
                    print(f"  {rank}. {t['label']:<20} {t['prob']:7.2%}")
    return 1 if failed else 0
