"""Training, evaluation and prediction entry points (used by ``swinlab train/eval/predict/demo``).

``fit`` writes under ``out_dir``::

    config.yaml                                      the resolved TrainConfig (``--config`` reads it)
    checkpoints/last.ckpt, checkpoints/best.ckpt   Lightning checkpoints (atomic writes)
    metrics.csv, hparams.yaml                        CSVLogger (a resumed run's earlier pieces:
                                                     metrics.part1.csv, …; ``history.read_metrics``)
    tb/                                              TensorBoard events
    model.safetensors                                the final weights (EMA if enabled) + config,
                                                     class names, normalization and the recipe
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from .. import precision as precisions
from ..data import ImageDataModule, ImageError, eval_transform, load_image
from ..data.transforms import default_normalization
from ..deploy.runtime import SUFFIX_FORMATS, load_exported
from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError
from ..files import atomic_open
from ..kernels import allocator
from ..models.registry import create_model, get_config
from ..weights import io as wio
from ..weights.io import saved_class_names
from . import history
from .module import ClassificationModule
from .optim import scaled_lr
from .recipes import TrainConfig
from .settings import check_resume_config, dump_train_config

logger = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in its own folder, fsync, then ``os.replace``.

    Lightning's ``_atomic_save`` writes through an fsspec transaction whose temporary file lives in
    the system temp dir and is ``shutil.move``d into place: when that dir is on another filesystem
    the move is a copy, so a kill mid-copy leaves a truncated ``last.ckpt``. Remote URLs go
    through Lightning unchanged.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


def build_datamodule(config: TrainConfig, img_size, channels: int, *, data: str | None = None,
                     data_dir: str | None = None, batch_size: int | None = None) -> ImageDataModule:
    """The DataModule ``config`` describes, for a model taking ``img_size`` × ``channels``."""
    return ImageDataModule(
        data or config.data, data_dir if data_dir is not None else config.data_dir, img_size=img_size,
        channels=channels, batch_size=batch_size or config.batch_size, num_workers=config.num_workers,
        val_size=config.val_size, train_limit=config.train_limit, test_limit=config.test_limit,
        seed=config.seed, augment=config.augment_kwargs(), shuffle=config.shuffle, strict=config.strict,
        synthetic_size=config.synthetic_size, train_fraction=config.train_fraction,
        labels_per_class=config.labels_per_class,
    )


def fit(config: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, devices: int = 1,
        num_nodes: int = 1, strategy: str = "auto", accelerator: str = "auto",
        callbacks: list | None = None) -> dict:
    """Train ``config`` into ``out_dir`` and export ``out_dir/model.safetensors``.

    Args:
        resume: continue from ``out_dir/checkpoints/last.ckpt`` exactly where it stopped (epoch
            boundaries are exact: optimizer, schedule, EMA, data order and RNG streams restored).
            ``config`` must equal the run's ``config.yaml`` but for ``settings.RESUMABLE_FIELDS``
            (else :class:`ConfigError`); ``config.yaml`` is written at the start of every run.
        devices, num_nodes, strategy, accelerator: as Lightning's Trainer (``ddp``, ``ddp_spawn``,
            ``fsdp``; on CPU, DDP runs over gloo). The learning rate scales with the total batch.
        callbacks: extra Lightning callbacks.

    Returns:
        ``{"out_dir", "model", "last", "best", "val": {metric: value}, "global_step", "precision"
        (resolved), "malloc"`` (:func:`swinlab.kernels.allocator.tune`'s record on the CPU, else ``None``),
        ``"train_images"}``.
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    if resume and not (ckpt_dir / "last.ckpt").is_file():
        raise CheckpointNotFoundError(f"--resume: {ckpt_dir / 'last.ckpt'} does not exist; start without "
                                "--resume, or point --out at the run to continue")
    if resume:  # same config as the run it continues, up to settings.RESUMABLE_FIELDS (epochs, workers)
        check_resume_config(config, out / "config.yaml")
    if rank_zero_only.rank == 0:  # `ddp` re-runs this script in each process
        dump_train_config(config, out / "config.yaml")
        if resume:  # Lightning's CSV logger would delete the earlier pieces' rows
            history.keep_earlier_piece(out)
    L.seed_everything(config.seed, workers=True, verbose=False)
    device = precisions.device_of(accelerator)
    precision = precisions.resolve(config.precision, device, training=True)
    logger.info("training in %s (asked: %s)", precision, config.precision)
    malloc = allocator.tune() if device.type == "cpu" else None  # fewer page faults per step
    logger.info("malloc: %s", malloc)
    mcfg = get_config(config.model, **config.model_overrides)
    dm = build_datamodule(config, mcfg.img_size, mcfg.in_chans)
    dm.prepare_data()
    if dm.num_classes != mcfg.num_classes:
        mcfg = mcfg.replace(num_classes=dm.num_classes)
    world = devices * num_nodes if isinstance(devices, int) else len(devices) * num_nodes
    schedule = dict(lr=scaled_lr(config.base_lr, config.batch_size, world), weight_decay=config.weight_decay,
                    warmup_epochs=config.warmup_epochs, warmup_start=config.warmup_start,
                    min_lr_ratio=config.min_lr_ratio, compile=config.compile, precision=precision)
    pretraining = config.method == "simmim"
    # SimMIM pretrains the encoder alone (no head: num_classes=0); labels are not read
    model = create_model(config.model, **{**config.model_overrides,
                                          "num_classes": 0 if pretraining else mcfg.num_classes})
    if config.init:
        transferred = load_encoder(model, config.init)
        logger.info("initialized %d encoder tensors from %s", len(transferred), config.init)
    if pretraining:
        from .simmim import PretrainModule, SimMIM

        simmim = SimMIM(model, mask_patch_size=config.mask_patch_size, norm_target=config.norm_target)
        module = PretrainModule(simmim, mask_ratio=config.mask_ratio, **schedule)
        monitor, mode = "val/loss", "min"
    else:
        module = ClassificationModule(
            model, num_classes=mcfg.num_classes, label_smoothing=config.label_smoothing,
            mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha, ema_decay=config.ema_decay,
            class_names=dm.classes, layer_decay=config.layer_decay, **schedule,
        )
        monitor, mode = "val/acc1", "max"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode,
                                 save_top_k=1, enable_version_counter=False)
    # last.ckpt after every validation, improved or not: a callback of its own, since Lightning (2.6)
    # writes a monitoring callback's save_last copy only when that validation saved a top-k checkpoint,
    # which left last.ckpt at the best epoch and made --resume repeat the epochs after it
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=int(config.epochs), accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy=strategy, precision=precision, gradient_clip_val=config.clip_grad,
        deterministic=config.deterministic, default_root_dir=out,
        logger=[CSVLogger(out, name="", version=""), TensorBoardLogger(out, name="tb", version="")],
        callbacks=[checkpoint, last, LearningRateMonitor(logging_interval="step"),
                   _Export(out / "model.safetensors", config, precision), *(callbacks or [])],
        plugins=[AtomicCheckpointIO()], log_every_n_steps=config.log_every_n_steps,
        val_check_interval=config.val_check_interval, num_sanity_val_steps=0,
        enable_progress_bar=config.progress_bar, enable_model_summary=not config.smoke,
        use_distributed_sampler=False,  # the DataModule splits the data across processes itself
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_dir / "last.ckpt") if resume else None)
    # the export ran in the rank-0 training process (with ddp_spawn this process holds no weights)
    return {"out_dir": str(out), "model": str(out / "model.safetensors"),
            "last": str(ckpt_dir / "last.ckpt"), "best": checkpoint.best_model_path or None,
            "global_step": trainer.global_step, "precision": precision, "malloc": malloc,
            "train_images": len(dm.train_set) if dm.train_set is not None else None,  # None: ddp_spawn
            "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}}


class _Export(L.Callback):
    """Write ``model.safetensors`` at the end of fit, from global rank 0 (where the weights are), with
    the class names of the data it was trained on and the precision it was trained in."""

    def __init__(self, path: Path, config: TrainConfig, precision: str):
        self.path, self.config, self.precision = path, config, precision

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            # the DataModule's names (Fashion-MNIST's, the folder names, synthetic's pattern0, ...),
            # else the copy the module keeps in its hyper-parameters
            names = getattr(trainer.datamodule, "classes", None) or pl_module.hparams.get("class_names")
            model = pl_module.eval_model()
            export(model, self.path, list(names or []) if model.config.num_classes else [], self.config,
                   precision=self.precision)
            logger.info("exported %s", self.path)


def export(model: nn.Module, path: str | os.PathLike, class_names: list[str] | None,
           config: TrainConfig, precision: str | None = None) -> Path:
    """Save ``model`` as a swinlab safetensors file with what ``predict`` and ``evaluate`` need in its
    metadata: the class names (index order), the input normalization, the data, the recipe and the
    precision it was trained in (``precision``: the resolved one; the weights are saved in their dtype).

    Args:
        class_names: one per output class; empty or ``None``: the class indices as names.

    Raises:
        ValueError: for class names that do not match the model's number of classes.
    """
    channels, num_classes = model.config.in_chans, model.config.num_classes
    names = [str(n) for n in class_names] if class_names else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model of {num_classes} classes: {names}")
    mean, std = default_normalization(channels)
    meta = {"swinlab.class_names": json.dumps(names),
            "swinlab.normalize": json.dumps({"mean": mean, "std": std}),
            "swinlab.data": config.data, "swinlab.recipe": json.dumps(config.to_dict(), default=str),
            "swinlab.train_precision": precision or config.precision}
    return wio.save(model, path, metadata=meta)


# Config fields a fine-tuned model may set differently from the encoder it starts from.
_FINE_TUNE_FIELDS = frozenset({"num_classes", "drop_rate", "drop_path_rate", "attention_backend",
                               "linear_backend", "extra"})


def load_encoder(model: nn.Module, checkpoint: str | os.PathLike) -> list[str]:
    """Copy every weight of a pretrained encoder (a swinlab ``.safetensors``: ``swinlab pretrain``'s
    ``model.safetensors``, or any trained model) into ``model``, except the head, which stays new.

    Returns:
        The names of the tensors copied (every one of ``model``'s but ``head.*``).

    Raises:
        CheckpointError: for a checkpoint of another architecture (naming the config fields that
            differ), or one that lacks or misshapes an encoder weight (naming it).
    """
    sd, meta = wio.read_state_dict(checkpoint)
    if "swinlab.config" in meta:
        saved = wio.config_from_json(meta["swinlab.config"])
        ours = model.config
        if type(saved) is not type(ours):
            raise CheckpointError(f"{checkpoint} holds a {type(saved).__name__} encoder; this model is a "
                                  f"{type(ours).__name__}: pretrain the same architecture")
        differ = [f"{f.name}: checkpoint {getattr(saved, f.name)!r}, model {getattr(ours, f.name)!r}"
                  for f in dataclasses.fields(ours)
                  if f.name not in _FINE_TUNE_FIELDS and getattr(saved, f.name) != getattr(ours, f.name)]
        if differ:
            raise CheckpointError(f"{checkpoint} is an encoder of another architecture:\n  "
                                  + "\n  ".join(differ)
                                  + "\nfine-tune the model it was pretrained as (or pretrain this one)")
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    problems = [f"  {k}: missing from the checkpoint" for k in own if k not in sd]
    problems += [f"  {k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if problems:
        raise CheckpointError(f"{checkpoint} does not hold this model's encoder:\n"
                              + "\n".join(problems[:10]))
    model.load_state_dict({k: sd[k] for k in own}, strict=False)
    return sorted(own)


def load_checkpoint(checkpoint: str | os.PathLike, model: str | None = None) -> tuple[nn.Module, dict]:
    """The model saved in ``checkpoint`` (swinlab ``.safetensors``) and its metadata.

    Args:
        model: a registered model name that the checkpoint must fit (else :class:`CheckpointError`
            naming each mismatched key with both shapes); ``None`` builds the saved config.
    """
    _, meta = wio.read_state_dict(checkpoint)
    target = None
    if model is not None:
        saved = wio.config_from_json(meta["swinlab.config"]) if "swinlab.config" in meta else None
        overrides = {"num_classes": saved.num_classes} if saved is not None else {}
        target = create_model(model, **overrides)
    net = wio.load(checkpoint, target)
    return net.eval(), meta


def evaluate(checkpoint: str | os.PathLike, data: str | None = None, data_dir: str | None = None, *,
             model: str | None = None, batch_size: int = 256, test_limit: int | None = None,
             accelerator: str = "auto", devices: int = 1, confusion: bool = False,
             precision: str = "32-true") -> dict:
    """Top-1/top-5 accuracy and loss of ``checkpoint`` on the test split of ``data``.

    Args:
        checkpoint: a swinlab ``.safetensors`` (as ``fit`` exports).
        data, data_dir: the dataset (default: the one it was trained on, from the metadata).
        model: check the checkpoint against this registered model (see :func:`load_checkpoint`).
        confusion: also return the confusion matrix (rows: true class) as nested lists.
        precision: a :mod:`swinlab.precision` name: float32-exact by default; ``auto`` is
            ``bf16-true`` where the device has native bf16.

    Returns:
        ``{"acc1", "acc5", "loss", "images", "classes", "precision"[, "confusion"]}``.
    """
    net, meta = load_checkpoint(checkpoint, model)
    cfg = net.config
    data = data or meta.get("swinlab.data") or "fashion-mnist"
    recipe = json.loads(meta.get("swinlab.recipe", "{}"))  # the trained-on split (synthetic size, seed)
    if data_dir is None and data == recipe.get("data"):
        data_dir = recipe.get("data_dir")
    dm = ImageDataModule(data, data_dir, img_size=cfg.img_size, channels=cfg.in_chans, batch_size=batch_size,
                         test_limit=test_limit, augment=None, seed=recipe.get("seed", 0),
                         val_size=recipe.get("val_size", 0.1),
                         synthetic_size=recipe.get("synthetic_size", 512), num_classes=cfg.num_classes)
    dm.prepare_data()
    if dm.num_classes != cfg.num_classes:
        raise CheckpointError(f"{checkpoint} has {cfg.num_classes} classes but {data!r} has "
                                  f"{dm.num_classes}; evaluate it on the data it was trained for")
    prec = precisions.resolve(precision, precisions.device_of(accelerator), training=False)
    module = ClassificationModule(net, num_classes=cfg.num_classes, class_names=dm.classes, precision=prec)
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False,
                        precision=prec)
    metrics = trainer.test(module, datamodule=dm, verbose=False)[0]
    result = {"acc1": float(metrics["test/acc1"]), "acc5": float(metrics["test/acc5"]),
              "loss": float(metrics["test/loss"]), "images": len(dm.test_set),
              "classes": saved_class_names(meta, cfg.num_classes), "precision": prec}
    if confusion:
        result["confusion"] = module.confusion.compute().cpu().tolist()
    return result


@torch.no_grad()
def predict(checkpoint: str | os.PathLike, image_paths: list[str | os.PathLike], topk: int = 5,
            batch_size: int = 64, precision: str | None = None) -> list[dict]:
    """Top-``topk`` classes with probabilities for each image file; an unreadable file is reported in
    its entry and the others are still predicted.

    Args:
        checkpoint: a swinlab ``.safetensors``, or a model exported by :func:`swinlab.deploy.export`
            (``.onnx``, run by ONNX Runtime; ``.pt2``, a ``torch.export`` program), so a deployment
            artefact is checked with the same command.
        precision: a :mod:`swinlab.precision` name for a checkpoint (default ``32-true``, float32-exact;
            ``auto``: ``bf16-true`` on a CPU with native bf16), on the CPU. An exported model runs in
            the precision it was exported in; naming another is an error.

    Returns:
        One entry per path, in order: ``{"path": str, "top": [{"label": str, "index": int,
        "prob": float}, ...]}``, or ``{"path": str, "error": str}`` for a file that is missing or
        cannot be decoded (the message names the file and why).

    Raises:
        CheckpointError: for a missing or unloadable checkpoint (nothing is predicted then).
    """
    if Path(checkpoint).suffix in SUFFIX_FORMATS:
        exported = load_exported(checkpoint)
        if precision is not None and precisions.check(precision) != exported.precision:
            raise ConfigError(f"{checkpoint} was exported in {exported.precision} and runs only in it; "
                              f"drop --precision {precision}, or export again in it")
        names, channels, size = exported.class_names, exported.channels, exported.img_size
        mean, std, run = exported.mean, exported.std, exported.logits
    else:
        net, meta = load_checkpoint(checkpoint)
        prec = precisions.resolve(precision or "32-true", "cpu", training=False)
        net = precisions.cast_model(net, prec)
        cfg = net.config
        names, channels, size = saved_class_names(meta, cfg.num_classes), cfg.in_chans, cfg.img_size
        norm = json.loads(meta["swinlab.normalize"]) if "swinlab.normalize" in meta else None
        mean, std = (norm["mean"], norm["std"]) if norm else default_normalization(cfg.in_chans)

        def run(x: torch.Tensor) -> torch.Tensor:
            with precisions.autocast(prec):
                return net(precisions.cast_input(x, prec))

    tf = eval_transform(size, channels=channels, mean=mean, std=std)
    k = min(topk, len(names))
    results: list[dict] = [{"path": str(p)} for p in image_paths]
    for start in range(0, len(results), batch_size):
        entries, images = [], []  # the readable files of this chunk, decoded one chunk at a time
        for entry in results[start:start + batch_size]:
            try:
                images.append(tf(load_image(entry["path"], channels)))
                entries.append(entry)
            except ImageError as e:
                entry["error"] = str(e)
                logger.debug("not predicted: %s", e)
        if not images:
            continue
        probs = run(torch.stack(images)).float().softmax(-1)  # (B, K)
        p, idx = probs.topk(k, dim=-1)  # (B, k)
        for entry, pj, ij in zip(entries, p.tolist(), idx.tolist(), strict=True):
            entry["top"] = [{"label": names[c], "index": int(c), "prob": float(q)}
                            for q, c in zip(pj, ij, strict=True)]
    return results
