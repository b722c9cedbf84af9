"""One LightningDataModule for every dataset swinlab trains on: ``fashion-mnist``, ``synthetic``,
``folder:PATH``.

Datasets yield uint8 ``(C, H, W)`` tensors; the train/eval transforms are applied per split, so
one dataset can feed a training subset and a validation subset with different transforms. The
train/val split is a fixed permutation drawn from ``seed``; the training order is reshuffled per
epoch from ``seed + epoch`` (not from the global RNG), so a resumed run sees the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, DataError, DataNotFoundError
from . import fashion_mnist
from .folder import ImageFolder
from .synthetic import SyntheticPatterns
from .transforms import eval_transform, train_transform


class TransformedSubset(Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image.

    ``batched``: the transform treats every image alike (no random op), so where ``dataset`` holds its
    images in one tensor (it has ``batch(indices)``, as :class:`FashionMNIST`), the DataLoader fetches a
    batch with one indexing and one transform call (``__getitems__``) instead of one per image: the same
    tensors, ~10× faster, which on Fashion-MNIST is a tenth of a small model's training time. A transform
    with ``handles_batches = True`` (:class:`~swinlab.data.transforms.BatchAugment`: random, but drawn per
    image inside one call) is given whole batches too.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform=None, batched: bool = False):
        self.dataset, self.indices, self.transform = dataset, list(indices), transform
        batched = batched or getattr(transform, "handles_batches", False)
        self.batched = batched and callable(getattr(dataset, "batch", None))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.dataset[self.indices[i]]
        return (self.transform(x) if self.transform else x), y

    def __getitems__(self, items: list[int]) -> list:
        if not self.batched:
            return [self[i] for i in items]
        x, y = self.dataset.batch([self.indices[i] for i in items])
        x = self.transform(x) if self.transform else x
        return list(zip(x.unbind(0), y.tolist(), strict=True))


class EpochShuffleSampler(Sampler[int]):
    """A random order per epoch drawn from ``seed + epoch`` (Lightning calls ``set_epoch``), split
    across ``world`` processes as ``order[rank::world]`` (padded by repeating, as DistributedSampler).

    The global batch of step t is then the same set of images at any number of processes with the
    same total batch size: ``order[t·B : (t+1)·B]``.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.epoch = n, seed, shuffle, rank, world, 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order += order[: self.per_rank * self.world - self.n]  # pad to a multiple of world
        return iter(order[self.rank::self.world])

    def __len__(self) -> int:
        return self.per_rank


def parse_data(spec: str, data_dir: str | None = None) -> tuple[str, str | None]:
    """``"folder:PATH"`` → ``("folder", PATH)``; ``"fashion-mnist"``/``"synthetic"`` keep ``data_dir``."""
    if spec.startswith("folder:"):
        return "folder", spec.split(":", 1)[1] or data_dir
    if spec in ("fashion-mnist", "synthetic", "folder"):
        return spec, data_dir
    raise ConfigError(f"unknown dataset {spec!r}; use fashion-mnist, synthetic or folder:PATH")


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders for ``data``.

    Args:
        data: ``fashion-mnist``, ``synthetic`` or ``folder:PATH`` (``PATH`` holds class folders, or
            ``train/`` and ``val/`` (or ``test/``) folders of class folders).
        data_dir: the Fashion-MNIST directory (default: Debian's), or the folder for ``folder``.
        img_size, channels: what the model takes; images are resized/converted to it.
        batch_size: per process.
        val_size: images held out of the training split for validation (fraction if < 1).
        train_limit, test_limit: use only the first N training (after the split) / test images.
        seed: fixes the split and the per-epoch order.
        augment: keyword arguments of :func:`train_transform` (``None``: eval transform for training).
        shuffle: shuffle the training set each epoch.
        download: fetch Fashion-MNIST into ``data_dir`` if it is missing (never by default).
        strict: raise on unreadable images instead of skipping them.
        synthetic_size: number of synthetic training images (test: a quarter of it, another seed).
    """

    def __init__(self, data: str = "fashion-mnist", data_dir: str | None = None, *,
                 img_size: Sequence[int] = (28, 28), channels: int = 1, batch_size: int = 128,
                 num_workers: int = 0, val_size: float = 0.1, train_limit: int | None = None,
                 test_limit: int | None = None, seed: int = 0, augment: dict | None = None,
                 shuffle: bool = True, download: bool = False, strict: bool = False,
                 synthetic_size: int = 512, num_classes: int = 10, train_fraction: float | None = None,
                 labels_per_class: int | None = None):
        super().__init__()
        self.kind, self.data_dir = parse_data(data, data_dir)
        self.img_size, self.channels = tuple(img_size), channels
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_size, self.train_limit, self.test_limit = val_size, train_limit, test_limit
        self.seed, self.augment, self.shuffle = seed, augment, shuffle
        self.download, self.strict = download, strict
        self.synthetic_size, self.synthetic_classes = synthetic_size, num_classes
        self.train_fraction, self.labels_per_class = train_fraction, labels_per_class
        self.train_set = self.val_set = self.test_set = None
        self.classes: list[str] = []
        self._base: tuple[Dataset, Dataset | None] | None = None

    # --- datasets -----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Check that the data is there (download Fashion-MNIST only if ``download=True``)."""
        if self.kind == "fashion-mnist":
            if self.download:
                fashion_mnist.download(self.data_dir or fashion_mnist.DEFAULT_DIR)
            fashion_mnist.check_dir(self.data_dir)
        elif self.kind == "folder" and (not self.data_dir or not Path(self.data_dir).is_dir()):
            raise DataNotFoundError(f"image folder {self.data_dir!r} does not exist; pass "
                                    "--data folder:PATH with one subfolder of images per class")

    def _datasets(self) -> tuple[Dataset, Dataset | None]:
        """The raw (untransformed) train dataset and test dataset (``None``: split off train)."""
        if self._base is not None:
            return self._base
        if self.kind == "fashion-mnist":
            train = fashion_mnist.FashionMNIST(self.data_dir, "train")
            test = fashion_mnist.FashionMNIST(self.data_dir, "test")
        elif self.kind == "synthetic":
            kw = dict(num_classes=self.synthetic_classes, img_size=self.img_size, channels=self.channels)
            train = SyntheticPatterns(self.synthetic_size, seed=self.seed, **kw)
            test = SyntheticPatterns(max(self.synthetic_size // 4, self.synthetic_classes),
                                     seed=self.seed + 10_000, **kw)
        else:
            self.prepare_data()
            root = Path(self.data_dir)
            kw = dict(channels=self.channels, strict=self.strict)
            test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
            if (root / "train").is_dir() and test_dir is not None:
                train, test = ImageFolder(root / "train", **kw), ImageFolder(test_dir, **kw)
                if train.classes != test.classes:
                    raise DataError(f"{root}/train and {test_dir} have different class folders")
            else:
                train, test = ImageFolder(root, **kw), None
        self._base = (train, test)
        self.classes = list(train.classes)
        return self._base

    @property
    def num_classes(self) -> int:
        self._datasets()
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        train, test = self._datasets()
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(train), generator=g).tolist()
        n_test = 0
        if test is None:  # one folder: hold out a test split as well
            n_test = max(1, round(len(train) * 0.1))
        n_val = self.val_size if self.val_size >= 1 else round(len(train) * self.val_size)
        n_val = int(min(n_val, len(train) - n_test - 1))
        test_idx, val_idx, train_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        if self.train_limit:
            train_idx = train_idx[:self.train_limit]
        if self.train_fraction is not None or self.labels_per_class is not None:
            train_idx = stratified_subset(train_idx, _labels(train, train_idx), seed=self.seed,
                                          fraction=self.train_fraction, per_class=self.labels_per_class)
        ev = eval_transform(self.img_size, channels=self.channels)
        tr = train_transform(self.img_size, channels=self.channels, **self.augment) if self.augment else ev
        self.train_set = TransformedSubset(train, train_idx, tr, batched=not self.augment)
        self.val_set = TransformedSubset(train, val_idx, ev, batched=True)
        if test is None:
            test, test_idx = train, test_idx
        else:
            test_idx = list(range(len(test)))
        if self.test_limit:
            test_idx = test_idx[:self.test_limit]
        self.test_set = TransformedSubset(test, test_idx, ev, batched=True)

    # --- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, sampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def _sampler(self, n: int, shuffle: bool) -> EpochShuffleSampler:
        # our own distributed split (the Trainer runs with use_distributed_sampler=False): Lightning's
        # DistributedSampler always shuffles training data, with another order than one process
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return EpochShuffleSampler(n, self.seed, shuffle, rank, world)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self._sampler(len(self.train_set), self.shuffle))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self._sampler(len(self.val_set), False))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self._sampler(len(self.test_set), False))

    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Optimizer steps in one epoch at ``world_size`` processes."""
        return math.ceil(len(self.train_set) / (self.batch_size * world_size))


def _labels(dataset: Dataset, indices: Sequence[int]) -> list[int]:
    """The class of each of ``indices`` (from the dataset's ``targets`` or ``samples`` without decoding)."""
    if hasattr(dataset, "targets"):
        return [int(dataset.targets[i]) for i in indices]
    if hasattr(dataset, "samples"):
        return [int(dataset.samples[i][1]) for i in indices]
    return [int(dataset[i][1]) for i in indices]


def stratified_subset(indices: Sequence[int], labels: Sequence[int], *, seed: int,
                      fraction: float | None = None, per_class: int | None = None) -> list[int]:
    """A labelled subset with every class in proportion: ``per_class`` images of each class, or
    ``round(fraction · n_c)`` of each class's ``n_c`` (at least one). The choice depends on ``seed`` only
    (the same subset for every variant of a seed) and keeps the order of ``indices``.

    Raises:
        DataError: for a class with fewer than ``per_class`` images.
    """
    g = torch.Generator().manual_seed(10_007 + seed)  # its own stream: not the split's permutation
    by_class: dict[int, list[int]] = {}
    for pos, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(pos)
    keep: list[int] = []
    for y in sorted(by_class):
        members = by_class[y]
        k = per_class if per_class is not None else max(1, round(fraction * len(members)))
        if k > len(members):
            raise DataError(f"labels_per_class={per_class} but class {y} has only {len(members)} training "
                            f"images; lower it, or use train_fraction")
        chosen = torch.randperm(len(members), generator=g)[:k].tolist()
        keep.extend(members[i] for i in chosen)
    return [indices[pos] for pos in sorted(keep)]
