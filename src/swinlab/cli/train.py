"""``swinlab train``: train a recipe with Lightning into a run directory.

The config is resolved by :func:`swinlab.train.settings.train_config_from_args`: the recipe (or the
``--config`` file's ``recipe:``) < the YAML file < each ``--set FIELD=VALUE`` < the dedicated flags.
``--print-config`` prints it as YAML and stops; ``fit`` saves it as ``OUT/config.yaml``.
"""

from __future__ import annotations

import argparse
import json

from ..train.settings import add_train_config_arguments, config_to_yaml, train_config_from_args
from ._common import positive_int

HELP = "train a recipe with Lightning (checkpoints, logs, model.safetensors)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab train``."""
    p.add_argument("--recipe", help="a named recipe: fashion-mnist (default, or the --config file's "
                   "`recipe:`), demo, swin-imagenet, synthetic, ablations, simmim-fine-tune")
    add_run_arguments(p, out="runs/train")
    add_fine_tune_arguments(p)
    add_train_config_arguments(p)  # --config, --set, --print-config, ...; every field in the epilog


def add_run_arguments(p: argparse.ArgumentParser, *, out: str) -> None:
    """What ``swinlab train`` and ``swinlab pretrain`` share: model, data, epochs, the run directory and
    the Lightning Trainer's devices."""
    p.add_argument("--model", help="override the recipe's registered model")
    p.add_argument("--data", help="fashion-mnist | synthetic | folder:PATH (default: the recipe's)")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (or the image folder)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, help="per device")
    p.add_argument("--out", default=out, help=f"run directory (default {out})")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--devices", type=positive_int, default=1)
    p.add_argument("--num-nodes", type=positive_int, default=1)
    p.add_argument("--strategy", default="auto", help="auto | ddp | ddp_spawn | fsdp")
    p.add_argument("--accelerator", default="auto", help="auto | cpu | gpu")
    p.add_argument("--smoke", action="store_true", help="the recipe's seconds-long smoke version")
    p.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")


def add_fine_tune_arguments(p: argparse.ArgumentParser) -> None:
    """``--init``, ``--layer-decay``, ``--train-fraction``, ``--labels-per-class``."""
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--init", metavar="CHECKPOINT", help="start from this encoder (a swinlab .safetensors, "
                   "e.g. swinlab pretrain's model.safetensors); the head is new")
    g.add_argument("--layer-decay", metavar="D", help="layer-wise lr decay: lr × D^(depth from the top)")
    g.add_argument("--train-fraction", metavar="F", help="train on a stratified share F of the training "
                   "split (the same subset for a seed)")
    g.add_argument("--labels-per-class", metavar="N", help="train on N labelled images per class")


def run(args: argparse.Namespace) -> int:
    """Train, then print the run's summary (paths, validation metrics) as JSON."""
    from ..train import fit  # start-up time, as above

    config = train_config_from_args(args)
    if args.print_config:
        print(config_to_yaml(config), end="")
        return 0
    result = fit(config, args.out, resume=args.resume, devices=args.devices, num_nodes=args.num_nodes,
                 strategy=args.strategy, accelerator=args.accelerator)
    print(json.dumps(result, indent=2))
    return 0
