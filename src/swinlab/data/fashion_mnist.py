"""Fashion-MNIST (Xiao et al., 2017) read from its four idx ``.gz`` files.

The idx format: a big-endian header ``0x00 0x00 TYPE NDIM``, then ``NDIM`` uint32 sizes, then the
data, row-major. Fashion-MNIST uses TYPE ``0x08`` (uint8): images ``(N, 28, 28)``, labels ``(N,)``.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, DataNotFoundError
from ..files import atomic_open

logger = logging.getLogger(__name__)

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MISSING_HINT = ("install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
                "or pass --data-dir DIR with the four idx .gz files")

# idx type code → numpy big-endian dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(DataError):
    """An idx file that is corrupt, truncated or not of the expected shape."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (gzipped if its name ends in ``.gz``) into a numpy array.

    Raises:
        IdxError: naming the file, for a bad magic number, a truncated header or body, or
            trailing bytes.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise IdxError(f"{path}: cannot read it as {'gzip' if path.suffix == '.gz' else 'an idx file'} "
                       f"({e}); the file is corrupt or truncated, replace it") from e
    if len(raw) < 4:
        raise IdxError(f"{path}: {len(raw)} bytes, too short for an idx header; the file is truncated")
    zero, code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_TYPES or ndim == 0:
        raise IdxError(f"{path}: bad idx magic number 0x{raw[:4].hex()} (expected 0000TTNN with type "
                       f"TT in {[hex(t) for t in _IDX_TYPES]}); is it an idx file?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: header of {ndim} dimensions is truncated ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise IdxError(f"{path}: {len(raw)} bytes but dims {dims} of {dtype.name} need {expected}; "
                       f"the file is {what}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def load_split(root: str | os.PathLike | None = None,
               split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of the ``train`` or ``test`` split."""
    if split not in FILES:
        raise ValueError(f"split must be one of {list(FILES)}, got {split!r}")
    root = check_dir(root)
    images = read_idx(root / FILES[split][0])
    labels = read_idx(root / FILES[split][1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match "
                       "(expected (N, H, W) and (N,))")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise IdxError(f"{root / FILES[split][1]}: labels outside 0..{len(CLASSES) - 1}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def check_dir(root: str | os.PathLike | None) -> Path:
    """``root`` (default :data:`DEFAULT_DIR`) if it holds the four files; else a clear error."""
    root = Path(root) if root is not None else DEFAULT_DIR
    if not root.is_dir():
        raise DataNotFoundError(f"Fashion-MNIST directory {str(root)!r} does not exist: {MISSING_HINT}")
    missing = [n for pair in FILES.values() for n in pair if not (root / n).is_file()]
    if missing:
        raise DataNotFoundError(f"Fashion-MNIST directory {str(root)!r} lacks {missing}: {MISSING_HINT}")
    return root


def download(root: str | os.PathLike) -> Path:
    """Fetch the four files from the dataset's public mirror into ``root`` (only when asked)."""
    import urllib.request  # only when a download is asked for

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in (n for pair in FILES.values() for n in pair):
        target = root / name
        if target.is_file():
            continue
        logger.info("downloading %s into %s", URL + name, root)
        with urllib.request.urlopen(URL + name, timeout=60) as r, atomic_open(target, "wb") as f:
            f.write(r.read())
    return root


class FashionMNIST(Dataset):
    """Fashion-MNIST as ``(image (1, 28, 28) uint8 tensor, label)`` pairs, through ``transform``."""

    classes = CLASSES

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", transform=None):
        self.images, self.targets = load_split(root, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i][None]  # (1, 28, 28)
        return (self.transform(x) if self.transform else x), int(self.targets[i])

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, 1, 28, 28), labels (B,))`` of ``indices`` at once, through ``transform``: for a
        transform that treats every image alike, the images ``__getitem__`` gives one by one."""
        x = self.images[indices][:, None]
        return (self.transform(x) if self.transform else x), self.targets[indices]
