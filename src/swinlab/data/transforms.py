"""Train/eval transforms (torchvision.transforms.v2) and batch-level MixUp/CutMix.

The ImageNet recipe of Swin (Liu et al., 2021, Appendix A2.1) follows DeiT: RandomResizedCrop,
flip, RandAugment ``rand-m9-mstd0.5-inc1``, random erasing p=0.25, MixUp 0.8 / CutMix 1.0 (one of
the two per batch), label smoothing 0.1. Differences from timm's implementation, approximated here:

* Magnitude scale: timm's m9 means 9/10 of each op's range; torchvision's ``magnitude`` indexes
  ``num_magnitude_bins`` bins, so we use 101 bins and index 90 (= 0.9 of the range), not
  ``magnitude=9`` of the default 31 bins (= 0.3 of the range).
* ``mstd0.5``: torchvision has no magnitude noise, so :class:`RandAugmentMstd` draws the magnitude
  per image from N(9, 0.5) clipped to [0, 10] and rounds it to the 101-bin grid.
* ``inc1`` (op variants whose strength grows with magnitude): torchvision's ops already have
  signed, growing magnitudes, except that posterize/solarize run in their own direction; not matched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
SMALL_IMAGE = 64  # at or below this side, pad+crop instead of RandomResizedCrop; no eval resize ratio
CROP_RATIO = 0.875  # eval: resize to size/0.875, then center-crop size (224 ← 256)


class RandAugmentMstd(v2.RandAugment):
    """RandAugment with a magnitude drawn per image from N(``magnitude``, ``std``), on a 0–10 scale."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, std: float = 0.5, **kwargs):
        super().__init__(num_ops=num_ops, magnitude=round(magnitude * 10), num_magnitude_bins=101,
                         **kwargs)
        self.mean_magnitude, self.std = magnitude, std

    def forward(self, *inputs):
        m = self.mean_magnitude + self.std * torch.randn(()).item() if self.std > 0 else self.mean_magnitude
        self.magnitude = round(min(max(m, 0.0), 10.0) * 10)  # index into 101 bins
        return super().forward(*inputs)


def default_normalization(channels: int) -> tuple[list[float], list[float]]:
    """The ``(mean, std)`` a model of ``channels`` input channels is normalized with when its checkpoint
    names none: ImageNet's for RGB, Fashion-MNIST's for grayscale."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return list(FASHION_MEAN), list(FASHION_STD)


def _normalize(channels: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> v2.Normalize:
    if mean is None or std is None:
        mean, std = default_normalization(channels)
    if len(mean) != channels:  # e.g. RGB statistics for a grayscale model: their average
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return v2.Normalize(mean=list(mean), std=list(std))


def train_transform(img_size: Sequence[int], *, channels: int = 3, hflip: bool = True,
                    crop_padding: int | None = None, randaugment: bool = False,
                    random_erasing: float = 0.0, mean=None, std=None) -> v2.Compose:
    """Augmentation for training on uint8 ``(C, H, W)`` tensors → normalized float.

    Args:
        img_size: ``(H, W)`` the model takes.
        channels: 1 or 3 (RandAugment's color ops run on either).
        hflip: random horizontal flip.
        crop_padding: ``None``: RandomResizedCrop (large images, bicubic); ``p ≥ 0``: resize to
            ``img_size`` if needed, pad by ``p`` (reflect) and randomly crop back (small images).
        randaugment: RandAugment 2 ops, magnitude 9 ± 0.5 (see the module docstring).
        random_erasing: probability of RandomErasing (after normalization, random-pixel fill).
    """
    size = tuple(img_size)
    ops: list = []
    if crop_padding is None:
        ops.append(v2.RandomResizedCrop(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True))
    else:
        ops.append(v2.Resize(size, antialias=True))
        if crop_padding:
            ops.append(v2.RandomCrop(size, padding=crop_padding, padding_mode="reflect"))
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if randaugment:
        ops.append(RandAugmentMstd(num_ops=2, magnitude=9.0, std=0.5,
                                   interpolation=v2.InterpolationMode.BILINEAR))
    ops += [v2.ToDtype(torch.float32, scale=True), _normalize(channels, mean, std)]
    if random_erasing > 0:
        ops.append(v2.RandomErasing(p=random_erasing, value="random"))
    return v2.Compose(ops)


def eval_transform(img_size: Sequence[int], *, channels: int = 3, mean=None, std=None) -> v2.Compose:
    """Resize to ``size / 0.875`` and center-crop (large images); resize only (small images)."""
    size = tuple(img_size)
    if max(size) > SMALL_IMAGE:
        resize = [round(s / CROP_RATIO) for s in size]
        ops = [v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
               v2.CenterCrop(size)]
    else:
        ops = [v2.Resize(size, antialias=True)]
    return v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True), _normalize(channels, mean, std)])


def mixup_cutmix(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
    """A batch transform ``(images, labels) → (images, soft labels (B, K))``, or ``None`` if both off.

    With both on, one of MixUp/CutMix is chosen per batch with equal probability (timm's switch
    probability 0.5). Label smoothing is applied by the loss to the soft targets.
    """
    ops = []
    if mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
