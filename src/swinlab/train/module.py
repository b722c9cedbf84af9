"""The LightningModule that trains any swinlab classifier it is given."""

from __future__ import annotations

import random
import time

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from ..data.transforms import mixup_cutmix
from .optim import build_optimizer, warmup_cosine


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0):
    """Cross-entropy against soft targets ``(B, K)`` (MixUp/CutMix), with label smoothing on top."""
    if smoothing:
        target = target * (1.0 - smoothing) + smoothing / target.shape[-1]
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class TrainingModule(L.LightningModule):
    """What every swinlab LightningModule shares: the (optionally compiled) training forward of
    ``self.model``, throughput and lr logging, AdamW with warmup + cosine (layer-wise lr decay when the
    hyper-parameters have ``layer_decay``), gradient clipping under bf16, and the RNG streams in
    checkpoints for an exact resume. A subclass saves its hyper-parameters (``lr``, ``weight_decay``,
    ``warmup_epochs``, ``warmup_start``, ``min_lr_ratio``, ``compile``, ``precision``), sets ``self.model``
    and defines the steps."""

    model: nn.Module
    _compiled = None  # torch.compile(self.model), made on the first training step

    def train_forward(self, *args):
        """The model's training forward: compiled when ``compile`` is set (the compiled wrapper is not a
        submodule, so checkpoints and exports hold the plain model's keys)."""
        mode = self.hparams.compile
        if not mode:
            return self.model(*args)
        if self._compiled is None:
            compiled = torch.compile(self.model, mode=None if mode in (True, "default") else mode)
            object.__setattr__(self, "_compiled", compiled)  # not registered as a submodule
        return self._compiled(*args)

    def _check_finite(self, loss: torch.Tensor, stage: str, batch_idx: int) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage} loss is {loss.item()} at global step {self.global_step} (epoch "
                f"{self.current_epoch}, batch index {batch_idx}); lower the learning rate, check the "
                "inputs for NaN/inf, or use 32-bit precision")

    # --- throughput, lr ----------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if getattr(self, "_t0", None) is not None:
            dt = time.perf_counter() - self._t0
            images = len(batch[0]) * self.trainer.world_size
            self.log("train/throughput", images / max(dt, 1e-9), on_step=True, on_epoch=False)
        self.log("lr", self.trainer.optimizers[0].param_groups[-1]["lr"], on_step=True, on_epoch=False)

    # --- optimizer and schedule -------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        # fused AdamW except with a loss scaler (16-mixed), whose unscale-then-clip Lightning cannot do for it
        fused = None if hp.precision != "16-mixed" else False
        opt = build_optimizer(self.model, hp.lr, hp.weight_decay, fused=fused,
                              layer_decay=hp.get("layer_decay"))
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total / max(self.trainer.max_epochs or 1, 1)
        sched = warmup_cosine(opt, round(hp.warmup_epochs * per_epoch), total, hp.warmup_start,
                              hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip as Lightning does, except under bf16-mixed: there Lightning's mixed-precision plugin refuses
        to clip for a fused optimizer because one with a loss scaler unscales inside its step; bf16 has no
        scaler, so there is nothing to unscale and the plain clip (as in 32-bit training) is exact."""
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val,
                                     GradClipAlgorithmType(gradient_clip_algorithm or "norm"))
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # --- exact resume: the global RNG streams (augmentation, MixUp, drop path, masks) -----------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["swinlab_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(),
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("swinlab_rng")
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])


class ClassificationModule(TrainingModule):
    """Wraps ``model`` for training, validation and testing with one shared step.

    Args:
        model: a classifier ``(B, C, H, W) → (B, K)``.
        num_classes: K.
        lr: peak learning rate (already scaled for the total batch size).
        weight_decay, warmup_epochs, warmup_start, min_lr_ratio: see :mod:`swinlab.train.optim`.
        label_smoothing: ε of the cross-entropy.
        mixup_alpha, cutmix_alpha: batch mixing (0: off); targets become soft.
        ema_decay: keep an exponential moving average of the weights with this decay and evaluate
            it (``None``/0: off).
        class_names: stored in the hyper-parameters (and in the exported checkpoint).
        compile: run the training forward through :func:`torch.compile` (``True`` or a compile mode);
            the module keeps the plain model as ``self.model`` (state-dict keys unchanged) and
            validates, tests and exports it eagerly.
        precision: the resolved precision the Trainer runs (recorded in the hyper-parameters).
        layer_decay: layer-wise learning-rate decay for fine-tuning (see
            :func:`swinlab.train.optim.param_groups`); ``None``: one lr for every layer.
    """

    def __init__(self, model: nn.Module, *, num_classes: int, lr: float = 5e-4, weight_decay: float = 0.05,
                 warmup_epochs: float = 0.0, warmup_start: float = 1e-3, min_lr_ratio: float = 1e-2,
                 label_smoothing: float = 0.1, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 ema_decay: float | None = None, class_names: list[str] | None = None,
                 compile: bool | str = False, precision: str = "32-true", layer_decay: float | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.mix = mixup_cutmix(num_classes, mixup_alpha, cutmix_alpha)
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.ema = None
        if ema_decay:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)  # DDP must not wait for gradients of the average
        k5 = min(5, num_classes)
        self.metrics = nn.ModuleDict({
            f"{stage}_metrics": MetricCollection({
                "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(num_classes, top_k=k5, average="micro"),
            }, prefix=f"{stage}/")
            for stage in ("train", "val", "test")
        })
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def eval_model(self) -> nn.Module:
        """The weights evaluated and exported: the EMA when enabled, else the model."""
        return self.ema.module if self.ema is not None else self.model

    # --- the shared step ------------------------------------------------------------------------
    def _step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        x, y = batch
        if stage == "train":
            if self.mix is not None:
                x, soft = self.mix(x, y)
                logits = self.train_forward(x)
                loss = soft_target_cross_entropy(logits, soft, self.hparams.label_smoothing)
            else:
                logits = self.train_forward(x)
                loss = self.ce(logits.float(), y)
        else:
            logits = self.eval_model()(x)
            loss = F.cross_entropy(logits.float(), y)
        self._check_finite(loss, stage, batch_idx)
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(y))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=len(y))
        if stage == "test":
            self.confusion.update(logits.detach(), y)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, batch_idx, "test")

    # --- EMA --------------------------------------------------------------------------------------
    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        super().on_train_batch_end(outputs, batch, batch_idx)

    def on_test_epoch_start(self):
        self.confusion.reset()


def _numpy_state() -> list:
    # tensors and plain numbers only, so torch.load(weights_only=True) reads the checkpoint
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
