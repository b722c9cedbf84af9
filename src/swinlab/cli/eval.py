"""``swinlab eval CHECKPOINT``: top-1/top-5 accuracy and loss on a test split."""

from __future__ import annotations

import argparse
import json

from ..precision import PRECISIONS
from ._common import positive_int

HELP = "top-1/top-5 accuracy and loss of a checkpoint on a test split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab eval``."""
    p.add_argument("checkpoint", help="a swinlab .safetensors checkpoint (OUT/model.safetensors of train)")
    p.add_argument("--data", help="fashion-mnist | synthetic | folder:PATH (default: what it was trained on)")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (or the image folder)")
    p.add_argument("--model", help="check the checkpoint against this registered model")
    p.add_argument("--limit", type=positive_int, help="evaluate the first N test images only")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--precision", choices=PRECISIONS, default="32-true",
                   help="32-true (default, float32-exact), bf16-true, bf16-mixed, auto (bf16-true where "
                        "the hardware has native bf16)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one line (or JSON)."""
    # Imported here for start-up time only: Lightning takes seconds to import, `swinlab --help` none.
    from ..train import evaluate

    r = evaluate(args.checkpoint, args.data, args.data_dir, model=args.model, batch_size=args.batch_size,
                 test_limit=args.limit, precision=args.precision)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{args.checkpoint} on {r['images']} test images ({r['precision']}): top-1 {r['acc1']:.2%}  "
              f"top-5 {r['acc5']:.2%}  loss {r['loss']:.4f}")
    return 0
