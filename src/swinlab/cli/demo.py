"""``swinlab demo``: train on Fashion-MNIST for a few CPU minutes and write a report."""

from __future__ import annotations

import argparse

HELP = "train on Fashion-MNIST for a few CPU minutes and write a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab demo``."""
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a seconds-long run on a few hundred images")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (default: Debian's)")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its headline figures."""
    # Imported here for start-up time only: Lightning takes seconds to import, `swinlab --help` none.
    from ..train.demo import run_demo

    m = run_demo(args.out, quick=args.quick, data_dir=args.data_dir)
    print(f"test top-1 {m['test_acc1']:.2%} (top-5 {m['test_acc5']:.2%}) on {m['test_images']} images after "
          f"{m['train_seconds']:.0f} s of training; report: {args.out}/report.md")
    return 0
