"""``swinlab pretrain``: pretrain an encoder without labels (SimMIM masked image modelling) with the same
Lightning pipeline, options and run directory as ``swinlab train``; ``OUT/model.safetensors`` is the
encoder, for ``swinlab train --init OUT/model.safetensors``."""

from __future__ import annotations

import argparse

from ..train.settings import add_train_config_arguments
from .train import add_run_arguments
from .train import run as run

HELP = "pretrain an encoder without labels (SimMIM), for swinlab train --init"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab pretrain``: those of ``swinlab train`` (but fine-tuning's) and
    the method's."""
    p.add_argument("--method", default="simmim", choices=["simmim"], help="the pretraining method (simmim)")
    p.add_argument("--recipe", default="simmim-fashion-mnist",
                   help="a named recipe (default simmim-fashion-mnist; any `swinlab train` recipe works, "
                        "its labels unused)")
    p.add_argument("--mask-ratio", metavar="R", help="share of the mask patches masked (default 0.6)")
    p.add_argument("--mask-patch-size", metavar="PX", help="side of a mask patch in pixels (a multiple of "
                   "the model's patch that tiles the image; the recipe's 4 for 28×28)")
    add_run_arguments(p, out="runs/pretrain")
    add_train_config_arguments(p)
