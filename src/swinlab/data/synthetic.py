"""A deterministic, learnable synthetic dataset for smoke tests: one pattern family per class.

Class ``k`` draws an oriented sinusoidal grating (orientation and frequency set by ``k``) with a
random phase, contrast and additive noise, so a small model separates the classes within a few
hundred steps while no two samples are equal. Sample ``i`` is a function of ``(seed, i)`` only.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset


class SyntheticPatterns(Dataset):
    """``size`` images ``(channels, H, W)`` uint8 with labels ``0..num_classes-1`` (``i % num_classes``)."""

    def __init__(self, size: int = 512, *, num_classes: int = 10, img_size: tuple[int, int] = (32, 32),
                 channels: int = 3, seed: int = 0, noise: float = 0.15, transform=None):
        self.num_classes, self.transform = num_classes, transform
        self.classes = [f"pattern{k}" for k in range(num_classes)]
        g = torch.Generator().manual_seed(seed)
        h, w = img_size
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        self.targets = torch.arange(size) % num_classes
        k = self.targets.float()[:, None, None]
        angle = k * math.pi / num_classes
        freq = 2.0 + (self.targets % 3).float()[:, None, None] * 1.5
        phase = torch.rand(size, 1, 1, generator=g) * 2 * math.pi
        wave = torch.sin(2 * math.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
        contrast = 0.3 + 0.2 * torch.rand(size, 1, 1, generator=g)
        img = 0.5 + contrast * wave  # (N, H, W)
        img = img[:, None].expand(size, channels, h, w)
        img = img + noise * torch.randn(size, channels, h, w, generator=g)
        self.images = (img.clamp(0, 1) * 255).round().to(torch.uint8)  # (N, C, H, W)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.targets[i])
