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

import math
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
                    random_erasing: float = 0.0, mean=None, std=None) -> v2.Compose | BatchAugment:
    """Augmentation for training on uint8 ``(C, H, W)`` tensors → normalized float.

    Without RandAugment and with ``crop_padding`` set, a :class:`BatchAugment` (the same augmentation,
    which also takes whole ``(B, C, H, W)`` batches); otherwise a ``v2.Compose`` of per-image transforms.

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
    if crop_padding is not None and not randaugment:
        return BatchAugment(size, channels=channels, crop_padding=crop_padding, hflip=hflip,
                            random_erasing=random_erasing, mean=mean, std=std)
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


class BatchAugment:
    """The small-image augmentation of :func:`train_transform` (resize, random crop of the image padded by
    reflection, horizontal flip, to float, normalize, random erasing with random-pixel fill), drawn per image
    but applied to a whole uint8 batch ``(B, C, H, W)`` in a few tensor operations; a single ``(C, H, W)``
    image works too.

    Each image gets its own crop offset, flip and erasing box, from the same distributions as
    ``v2.RandomCrop(size, padding, padding_mode="reflect")``, ``v2.RandomHorizontalFlip()`` and
    ``v2.RandomErasing(p, value="random")`` (scale 0.02-0.33 of the area, log-uniform aspect 0.3-3.3, up to
    ten tries to fit), from the global torch RNG; only the order of the random draws differs. Per-image v2
    transforms cost ~0.25 ms an image on Fashion-MNIST (15 s an epoch, a fifth of a small Swin's training
    time on 2 cores); a batch of 128 takes ~1 ms here.
    """

    handles_batches = True  # TransformedSubset may pass it a whole batch

    def __init__(self, img_size: Sequence[int], *, channels: int = 1, crop_padding: int = 0,
                 hflip: bool = True, random_erasing: float = 0.0, mean=None, std=None):
        self.size = tuple(img_size)
        if crop_padding < 0 or crop_padding >= min(self.size):
            raise ValueError(f"crop_padding={crop_padding} must be in [0, {min(self.size) - 1}] for "
                             f"{self.size[0]}×{self.size[1]} images (reflection padding needs a smaller pad)")
        self.padding, self.hflip, self.erasing = crop_padding, hflip, random_erasing
        self.normalize = _normalize(channels, mean, std)  # applied as a tensor op; kept to say what it is
        self.mean = torch.tensor(self.normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(self.normalize.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.resize = v2.Resize(self.size, antialias=True)

    def __repr__(self) -> str:
        return (f"BatchAugment(size={self.size}, crop_padding={self.padding}, hflip={self.hflip}, "
                f"random_erasing={self.erasing})")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        single = x.dim() == 3
        x = x[None] if single else x
        if tuple(x.shape[-2:]) != self.size:
            x = self.resize(x)
        x = self._crop_flip(x).to(torch.float32).div_(255.0)
        x = (x - self.mean) / self.std
        if self.erasing > 0:
            x = self._erase(x)
        return x[0] if single else x

    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        """One gather: output pixel (r, c) of image b reads the padded image at (top_b + r, left_b + c)
        (mirrored columns for flipped images), mapped back into the image by reflection."""
        b, _, h, w = x.shape
        p = self.padding
        top = torch.randint(0, 2 * p + 1, (b, 1)) if p else torch.zeros(b, 1, dtype=torch.long)
        left = torch.randint(0, 2 * p + 1, (b, 1)) if p else torch.zeros(b, 1, dtype=torch.long)
        cols = torch.arange(w).expand(b, w)
        if self.hflip:
            flip = torch.rand(b, 1) < 0.5
            cols = torch.where(flip, w - 1 - cols, cols)
        rows = _reflect(top + torch.arange(h) - p, h)
        cols = _reflect(left + cols - p, w)
        out = x[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()

    def _erase(self, x: torch.Tensor, tries: int = 10) -> torch.Tensor:
        b, _, h, w = x.shape
        area = h * w * torch.empty(b, tries).uniform_(0.02, 0.33)
        aspect = torch.exp(torch.empty(b, tries).uniform_(math.log(0.3), math.log(3.3)))
        eh = torch.sqrt(area * aspect).round().long()
        ew = torch.sqrt(area / aspect).round().long()
        fits = (eh < h) & (ew < w)
        first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits (v2 draws until one does)
        eh, ew = eh.gather(1, first), ew.gather(1, first)
        apply = (torch.rand(b, 1) < self.erasing) & fits.any(dim=1, keepdim=True)
        top = (torch.rand(b, 1) * (h - eh + 1)).long()
        left = (torch.rand(b, 1) * (w - ew + 1)).long()
        r, cc = torch.arange(h), torch.arange(w)
        box = (((r >= top) & (r < top + eh))[:, :, None] & ((cc >= left) & (cc < left + ew))[:, None, :])
        box = (box & apply[:, :, None])[:, None]  # (B, 1, H, W)
        return torch.where(box, torch.randn_like(x), x)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of reflection padding (no edge repeat, as ``F.pad(mode="reflect")``): -1 → 1, n → n - 2."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


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
