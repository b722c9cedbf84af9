"""``swinlab list [PATTERN]``: registered models with their parameter counts and descriptions."""

from __future__ import annotations

import argparse
import sys

import torch

from ..models.registry import create_model, describe, list_models
from ._common import millions

HELP = "list registered models with their parameter counts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab list``."""
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style pattern (swin_*); without wildcards, a substring of the name")


def run(args: argparse.Namespace) -> int:
    """Print one line per matching model; exit status 1 when none matches."""
    pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
    names = list_models(pattern)
    if not names:
        print(f"no registered model matches {args.pattern!r}; `swinlab list` shows them all", file=sys.stderr)
        return 1
    width = max(len(n) for n in names)
    for name in names:
        with torch.device("meta"):  # parameter counts need shapes only
            params = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<{width}}  {millions(params):>8}  {describe(name)}")
    return 0
