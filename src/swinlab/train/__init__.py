"""Training on Lightning: the LightningModule, optimizer groups and schedule, recipes, fit/eval/predict.

The names below are imported on first use (PEP 562): ``swinlab.train.settings`` and
``swinlab.train.recipes`` load without Lightning, so the command line can build its parser (the
``swinlab train`` options and their help) and keep ``swinlab list`` instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .module import ClassificationModule, soft_target_cross_entropy
    from .optim import build_optimizer, param_groups, scaled_lr, warmup_cosine, warmup_cosine_factor
    from .recipes import RECIPES, TrainConfig, get_recipe
    from .run import AtomicCheckpointIO, evaluate, export, fit, load_checkpoint, predict
    from .settings import dump_train_config, load_train_config, resolve_train_config

_SOURCES = {
    "ClassificationModule": ".module", "soft_target_cross_entropy": ".module",
    "build_optimizer": ".optim", "param_groups": ".optim", "scaled_lr": ".optim", "warmup_cosine": ".optim",
    "warmup_cosine_factor": ".optim",
    "RECIPES": ".recipes", "TrainConfig": ".recipes", "get_recipe": ".recipes",
    "AtomicCheckpointIO": ".run", "evaluate": ".run", "export": ".run", "fit": ".run",
    "load_checkpoint": ".run", "predict": ".run",
    "dump_train_config": ".settings", "load_train_config": ".settings", "resolve_train_config": ".settings",
}


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_SOURCES[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})


__all__ = ["RECIPES", "AtomicCheckpointIO", "ClassificationModule", "TrainConfig", "build_optimizer",
           "dump_train_config", "evaluate", "export", "fit", "get_recipe", "load_checkpoint",
           "load_train_config", "param_groups", "predict", "resolve_train_config", "scaled_lr",
           "soft_target_cross_entropy", "warmup_cosine", "warmup_cosine_factor"]
