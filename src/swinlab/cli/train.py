"""``swinlab train``: train a recipe with Lightning into a run directory.

The recipe is built by :func:`config_from_args` (recipe name, ``--smoke``, then the flags that
replace its fields) and trained by :func:`run`; new ways to change the recipe plug in there.
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ._common import model_config, positive_int

HELP = "train a recipe with Lightning (checkpoints, logs, model.safetensors)"

# Recipe fields replaced by the flag of the same name (dashes for underscores) when it is given.
_FIELD_FLAGS = ("model", "data", "data_dir", "epochs", "batch_size")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``swinlab train``."""
    p.add_argument("--recipe", default="fashion-mnist",
                   help="a named recipe: fashion-mnist (default), demo, swin-imagenet, synthetic")
    p.add_argument("--model", help="override the recipe's registered model")
    p.add_argument("--data", help="fashion-mnist | synthetic | folder:PATH (default: the recipe's)")
    p.add_argument("--data-dir", help="the Fashion-MNIST idx directory (or the image folder)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, help="per device")
    p.add_argument("--out", default="runs/train", help="run directory (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--devices", type=positive_int, default=1)
    p.add_argument("--num-nodes", type=positive_int, default=1)
    p.add_argument("--strategy", default="auto", help="auto | ddp | ddp_spawn | fsdp")
    p.add_argument("--accelerator", default="auto", help="auto | cpu | gpu")
    p.add_argument("--smoke", action="store_true", help="the recipe's seconds-long smoke version")
    p.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")


def config_from_args(args: argparse.Namespace):
    """The :class:`~swinlab.train.TrainConfig` the arguments describe.

    Raises:
        ConfigError: for an unknown recipe or model.
    """
    # Imported here for start-up time only: Lightning takes seconds to import, `swinlab --help` none.
    from ..train.recipes import get_recipe

    changes = {f: getattr(args, f) for f in _FIELD_FLAGS if getattr(args, f) is not None}
    if args.strict:
        changes["strict"] = True
    if args.model:
        model_config(args.model)
    try:
        return get_recipe(args.recipe, smoke=args.smoke, **changes)
    except ValueError as e:  # recipes name an unknown recipe with a plain ValueError
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from e


def run(args: argparse.Namespace) -> int:
    """Train, then print the run's summary (paths, validation metrics) as JSON."""
    from ..train import fit  # start-up time, as above

    config = config_from_args(args)
    result = fit(config, args.out, resume=args.resume, devices=args.devices, num_nodes=args.num_nodes,
                 strategy=args.strategy, accelerator=args.accelerator)
    print(json.dumps(result, indent=2))
    return 0
