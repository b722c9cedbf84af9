"""Training on Lightning: the LightningModule, optimizer groups and schedule, recipes, fit/eval/predict."""

from .module import ClassificationModule, soft_target_cross_entropy
from .optim import build_optimizer, param_groups, scaled_lr, warmup_cosine, warmup_cosine_factor
from .recipes import RECIPES, TrainConfig, get_recipe
from .run import AtomicCheckpointIO, evaluate, export, fit, load_checkpoint, predict

__all__ = ["RECIPES", "AtomicCheckpointIO", "ClassificationModule", "TrainConfig", "build_optimizer",
           "evaluate", "export", "fit", "get_recipe", "load_checkpoint", "param_groups", "predict",
           "scaled_lr", "soft_target_cross_entropy", "warmup_cosine", "warmup_cosine_factor"]
