"""Images in class folders (``root/CLASS/*.jpg``), as torchvision's ImageFolder, read robustly.

Every PIL mode becomes RGB (or L for single-channel models): 16-bit and 32-bit integer images are
scaled to 8 bits, images with transparency are composited on white, CMYK/P/YCbCr are converted.
Corrupt or truncated files are skipped with a warning and counted (``strict=True`` raises instead).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError, DataNotFoundError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class ImageError(DataError):
    """An image file that cannot be decoded (or does not exist)."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image → 8-bit RGB (alpha composited on white, high bit depths scaled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64)
        # 16-bit data (PNG opens as I;16 or, in older Pillow, as I with values ≤ 65535)
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Decode ``path`` fully into a ``(channels, H, W)`` uint8 tensor (channels 1 or 3).

    Raises:
        ImageError: naming the file, if it is missing, corrupt, truncated or not an image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
    except (FileNotFoundError, IsADirectoryError) as e:
        raise ImageError(f"{path}: no such image file") from e
    except _READ_ERRORS as e:
        raise ImageError(f"{path}: cannot decode the image ({e}); it is corrupt, truncated or "
                         "not an image") from e
    if channels == 1:
        rgb = rgb.convert("L")
    elif channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    a = np.asarray(rgb)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous()  # (C, H, W)


class ImageFolder(Dataset):
    """``root/CLASS/IMAGE`` files as ``(image (C, H, W) uint8 tensor, class index)``.

    Args:
        root: the folder with one subfolder per class (sorted names give the class indices).
        transform: applied to the uint8 tensor.
        channels: 3 (RGB) or 1 (grayscale, for single-channel models).
        strict: raise :class:`ImageError` on a corrupt image instead of skipping it.
        verify: decode every image when scanning (``True``; finds truncated files up front) or only
            open its header (``False``; fast on large datasets, corrupt files then surface at load
            time and are replaced by the next good sample with a warning).

    Attributes:
        skipped: ``(path, reason)`` of every image skipped so far in this process.
    """

    def __init__(self, root: str | os.PathLike, transform=None, *, channels: int = 3, strict: bool = False,
                 verify: bool = True, extensions: tuple[str, ...] = EXTENSIONS):
        root = Path(root)
        if not root.is_dir():
            raise DataNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory; "
                                    "pass a folder with one subfolder of images per class")
        self.root, self.transform, self.channels, self.strict = root, transform, channels, strict
        self.skipped: list[tuple[str, str]] = []
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.samples: list[tuple[str, int]] = []
        self.classes: list[str] = []
        for d in class_dirs:
            files = sorted(p for p in d.rglob("*") if p.suffix.lower() in extensions and p.is_file())
            good = [p for p in files if self._check(p, verify)]
            if not good:
                warnings.warn(f"class folder {str(d)!r} has no readable images "
                              f"({len(files)} candidate files); it is skipped", stacklevel=2)
                continue
            self.samples += [(str(p), len(self.classes)) for p in good]
            self.classes.append(d.name)
        if not self.classes:
            raise DataError(f"no class folder under {str(root)!r} holds a readable image "
                             f"({', '.join(extensions)}); expected root/CLASS/IMAGE files")
        if self.skipped:
            warnings.warn(f"skipped {len(self.skipped)} unreadable image(s) under {str(root)!r}, e.g. "
                          f"{self.skipped[0][0]}: {self.skipped[0][1]}", stacklevel=2)
        self.targets = [t for _, t in self.samples]

    def _check(self, path: Path, full: bool) -> bool:
        try:
            if full:
                load_image(path, 3)
            else:
                with Image.open(path) as img:
                    img.verify()
            return True
        except (ImageError, *_READ_ERRORS) as e:
            if self.strict:
                raise ImageError(f"{path}: unreadable image ({e}); remove it, or drop --strict to skip "
                                 "such files") from e
            self.skipped.append((str(path), str(e)))
            return False

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        for k in range(min(len(self.samples), 100)):
            path, target = self.samples[(i + k) % len(self.samples)]
            try:
                x = load_image(path, self.channels)
            except ImageError as e:
                if self.strict:
                    raise
                self.skipped.append((path, str(e)))
                warnings.warn(f"{e}; using the next image instead ({len(self.skipped)} skipped so far)",
                              stacklevel=2)
                continue
            return (self.transform(x) if self.transform else x), target
        raise ImageError(f"100 consecutive unreadable images from index {i} under {self.root}")
