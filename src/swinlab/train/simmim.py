"""SimMIM: masked image modelling without labels (Xie et al., "SimMIM: A Simple Framework for Masked
Image Modeling", CVPR 2022).

Random square *mask patches* of the image (``mask_patch_size``, 32×32 in the paper; 4×4 suits 28×28
images) are masked at a ``mask_ratio`` (0.6): their patch tokens are replaced by one learned mask token
right after the patch embedding (before any position embedding; window attention is unchanged), the
encoder runs as usual, and a single linear layer (a 1×1 convolution to ``stride² · C_in`` channels
followed by a pixel shuffle, ``stride`` = the encoder's last-stage stride) predicts the raw pixels. The
loss is the L1 distance on the masked pixels only, averaged over them and the channels (Eq. 1 and
Sec. 3 of the paper); ``norm_target`` regresses per-mask-patch normalized pixels instead (the paper's
"normalized pixels" variant).

:class:`SimMIM` is the model (an encoder from the registry: Swin with every switch, the global-context
variant, or ViT); :class:`PretrainModule` trains it in the same Lightning pipeline as
:class:`~swinlab.train.module.ClassificationModule` (precision, compile, checkpoints, exact resume, DDP).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .module import TrainingModule


def mask_grid(img_size: tuple[int, int], mask_patch_size: int, token_size: int) -> tuple[int, int]:
    """The ``(rows, cols)`` of mask patches on an image, checked against the encoder's patch size.

    Raises:
        ConfigError: when the mask patch is not a multiple of the encoder's patch, or does not tile the
            image (naming both and what would work).
    """
    if mask_patch_size % token_size:
        raise ConfigError(f"mask_patch_size {mask_patch_size} is not a multiple of the encoder's patch size "
                          f"{token_size}; use a multiple of {token_size}")
    if img_size[0] % mask_patch_size or img_size[1] % mask_patch_size:
        divisors = [d for d in range(token_size, min(img_size) + 1, token_size)
                    if img_size[0] % d == 0 and img_size[1] % d == 0]
        raise ConfigError(f"mask_patch_size {mask_patch_size} does not tile the {img_size[0]}×{img_size[1]} "
                          f"images; choose one of {divisors}")
    return img_size[0] // mask_patch_size, img_size[1] // mask_patch_size


def random_masks(batch: int, grid: tuple[int, int], ratio: float, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """``(B, rows, cols)`` bool masks with exactly ``⌈ratio · rows · cols⌉`` mask patches set per image
    (SimMIM's count), chosen uniformly at random."""
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"mask_ratio must be in (0, 1), got {ratio}")
    n = grid[0] * grid[1]
    count = math.ceil(n * ratio)
    scores = torch.rand(batch, n, generator=generator)
    order = scores.argsort(dim=1)
    masks = torch.zeros(batch, n, dtype=torch.bool)
    masks.scatter_(1, order[:, :count], True)
    return masks.view(batch, *grid).to(device)


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(..., h, w)`` → ``(..., h·factor, w·factor)``: each cell repeated over a ``factor²`` block."""
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


class SimMIM(nn.Module):
    """An encoder, a mask token and SimMIM's one-layer prediction head.

    Args:
        encoder: a swinlab Swin or ViT (its head is not used; build it with ``num_classes=0``).
        mask_patch_size: side of a mask patch in pixels (a multiple of the encoder's patch).
        norm_target: regress pixels normalized by the mean and std of their mask patch.
    """

    def __init__(self, encoder: nn.Module, *, mask_patch_size: int, norm_target: bool = False):
        super().__init__()
        cfg = encoder.config
        if not hasattr(encoder, "patch_embed") or not hasattr(encoder, "stride"):
            raise ConfigError(f"SimMIM pretrains Swin and ViT encoders; {type(encoder).__name__} has no "
                              "patch embedding to mask")
        self.encoder = encoder
        self.img_size = tuple(cfg.img_size)
        self.patch = cfg.patch_size
        self.grid = mask_grid(self.img_size, mask_patch_size, self.patch)
        self.mask_patch_size = mask_patch_size
        self.norm_target = norm_target
        self.in_chans = cfg.in_chans
        width = encoder.patch_embed.proj.out_channels
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        stride = encoder.stride
        self.decoder = nn.Sequential(nn.Conv2d(encoder.num_features, stride**2 * cfg.in_chans, kernel_size=1),
                                     nn.PixelShuffle(stride))

    def no_weight_decay(self) -> set[str]:
        inner = self.encoder.no_weight_decay() if hasattr(self.encoder, "no_weight_decay") else set()
        return {f"encoder.{n}" for n in inner} | {"mask_token"}

    def token_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """Mask-patch masks ``(B, rows, cols)`` → patch-token masks ``(B, H/P, W/P)``."""
        return upsample(masks, self.mask_patch_size // self.patch)

    def pixel_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """Mask-patch masks ``(B, rows, cols)`` → pixel masks ``(B, H, W)``."""
        return upsample(masks, self.mask_patch_size)

    def reconstruct(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` with ``masks`` ``(B, rows, cols)`` → predicted pixels ``(B, C, H, W)``."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise ConfigError(f"SimMIM was built for {self.img_size[0]}×{self.img_size[1]} images, got "
                              f"{x.shape[-2]}×{x.shape[-1]}; resize them or build the encoder for that size")
        w = self.token_mask(masks).unsqueeze(-1).to(x.dtype)  # (B, H/P, W/P, 1)

        def put_mask_token(tokens: torch.Tensor) -> torch.Tensor:  # (B, H/P, W/P, C)
            return tokens * (1 - w) + self.mask_token.to(tokens.dtype) * w

        feats = self.encoder.forward_features(x, embed_hook=put_mask_token)
        if feats.ndim == 3:  # ViT: (B, prefix + N, C) → (B, H/P, W/P, C)
            prefix = getattr(self.encoder, "num_prefix_tokens", 0)
            h, w_ = self.img_size[0] // self.patch, self.img_size[1] // self.patch
            feats = feats[:, prefix:].reshape(feats.shape[0], h, w_, -1)
        out = self.decoder(feats.permute(0, 3, 1, 2))  # (B, C_in, h·stride, w·stride)
        return out[..., :self.img_size[0], :self.img_size[1]]  # a last map padded up (e.g. 4·8 = 32 > 28)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What is regressed: the pixels, or with ``norm_target`` the pixels normalized per mask patch."""
        if not self.norm_target:
            return x
        k = self.mask_patch_size
        x = x.float()
        mean = F.avg_pool2d(x, k, k)  # (B, C, rows, cols)
        var = (F.avg_pool2d(x * x, k, k) - mean * mean).clamp_min(0)
        return (x - upsample(mean, k)) / upsample((var + 1e-6).sqrt(), k)

    def loss(self, rec: torch.Tensor, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The mean L1 distance of ``rec`` to the target over the masked pixels (and channels) only."""
        m = self.pixel_mask(masks).unsqueeze(1).float()  # (B, 1, H, W)
        err = (rec.float() - self.target(x).float()).abs() * m
        return err.sum() / (m.sum() * self.in_chans + 1e-5)

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The L1 loss over the masked pixels, and the reconstruction ``(B, C, H, W)``."""
        rec = self.reconstruct(x, masks)
        return self.loss(rec, x, masks), rec


class PretrainModule(TrainingModule):
    """Trains a :class:`SimMIM` model: random masks per training batch, fixed ones (seeded by the batch
    index) for validation so that its loss is comparable across epochs; logs ``train/loss`` and
    ``val/loss``. ``eval_model()`` is the encoder (what ``model.safetensors`` holds)."""

    def __init__(self, model: SimMIM, *, mask_ratio: float = 0.6, lr: float = 5e-4,
                 weight_decay: float = 0.05, warmup_epochs: float = 0.0, warmup_start: float = 1e-3,
                 min_lr_ratio: float = 1e-2,
                 compile: bool | str = False, precision: str = "32-true"):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        random_masks(1, model.grid, mask_ratio)  # a bad ratio fails here, not at the first step

    def eval_model(self) -> nn.Module:
        return self.model.encoder

    def _masks(self, batch: int, device, generator=None) -> torch.Tensor:
        return random_masks(batch, self.model.grid, self.hparams.mask_ratio, generator, device)

    def training_step(self, batch, batch_idx):
        x = batch[0]
        loss, _ = self.train_forward(x, self._masks(len(x), x.device))
        self._check_finite(loss, "train", batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        masks = self._masks(len(x), x.device, torch.Generator().manual_seed(batch_idx))
        loss, _ = self.model(x, masks)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(x))
        return loss
