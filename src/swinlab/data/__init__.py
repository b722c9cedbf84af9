"""Datasets (Fashion-MNIST idx files, image folders, synthetic patterns), transforms, DataModule."""

from .datamodule import ImageDataModule, parse_data
from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from .fashion_mnist import FashionMNIST, IdxError, read_idx
from .folder import ImageError, ImageFolder, load_image, to_rgb
from .synthetic import SyntheticPatterns
from .transforms import BatchAugment, eval_transform, mixup_cutmix, train_transform

__all__ = ["FASHION_MNIST_CLASSES", "BatchAugment", "FashionMNIST", "IdxError", "ImageDataModule",
           "ImageError", "ImageFolder", "SyntheticPatterns", "eval_transform", "load_image", "mixup_cutmix",
           "parse_data", "read_idx", "to_rgb", "train_transform"]
