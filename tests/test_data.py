"""Datasets: idx parsing and its errors, image folders in every PIL mode, corrupt files, transforms."""

from __future__ import annotations

import gzip
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from swinlab.data import (
    FASHION_MNIST_CLASSES,
    BatchAugment,
    FashionMNIST,
    IdxError,
    ImageDataModule,
    ImageError,
    ImageFolder,
    SyntheticPatterns,
    eval_transform,
    load_image,
    mixup_cutmix,
    read_idx,
    train_transform,
)
from swinlab.data import fashion_mnist as fm
from swinlab.data.datamodule import EpochShuffleSampler


def _idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    return struct.pack(">HBB", 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _write_fashion(root, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, a in zip(fm.FILES[split], (imgs, labels), strict=True):
            (root / name).write_bytes(gzip.compress(_idx_bytes(a)))
    return root


# --- idx / Fashion-MNIST --------------------------------------------------------------------------


def test_read_idx_roundtrip_gz_and_plain(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), a)
    b = np.array([1, -2, 70000], dtype=">i4")  # big-endian int32 (type 0x0C)
    (tmp_path / "b.idx").write_bytes(_idx_bytes(b, 0x0C))
    assert read_idx(tmp_path / "b.idx").tolist() == [1, -2, 70000]


def test_corrupt_and_truncated_idx_name_the_file(tmp_path):
    a = np.zeros((4, 28, 28), np.uint8)
    good = _idx_bytes(a)
    cases = {
        "short.idx": good[:-5],  # body truncated
        "header.idx": good[:6],  # header truncated
        "magic.idx": b"\x12\x34" + good[2:],  # bad magic
        "long.idx": good + b"\x00",
        "trunc.idx.gz": gzip.compress(good)[:-20],  # gzip stream cut
        "notgz.idx.gz": b"this is not gzip data",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(IdxError, match=name.replace(".", r"\.")):
            read_idx(tmp_path / name)


def test_fashion_mnist_from_a_directory(tmp_path):
    root = _write_fashion(tmp_path / "fm")
    ds = FashionMNIST(root, "train")
    x, y = ds[3]
    assert len(ds) == 20 and x.shape == (1, 28, 28) and x.dtype == torch.uint8 and y == 3
    assert len(FashionMNIST(root, "test")) == 10 and len(FASHION_MNIST_CLASSES) == 10


@pytest.mark.parametrize(("augment", "train_batched"), [
    (None, True), ({"crop_padding": 2, "hflip": True}, True),
    ({"crop_padding": 2, "randaugment": True}, False)])
def test_loaders_fetch_a_batch_at_once_with_the_images_one_by_one_gives(tmp_path, augment, train_batched):
    """Fashion-MNIST loaders index a whole batch at once where the transform is deterministic or draws per
    image itself (BatchAugment): the same tensors as per-image fetching where nothing is random; RandAugment
    is applied image by image."""
    dm = ImageDataModule("fashion-mnist", str(_write_fashion(tmp_path / "fm", n_train=60, n_test=30)),
                         batch_size=8, val_size=10, augment=augment)
    dm.setup("fit")
    assert (dm.train_set.batched, dm.val_set.batched, dm.test_set.batched) == (train_batched, True, True)
    for loader in (dm.train_dataloader, dm.val_dataloader, dm.test_dataloader):
        batched = list(loader())
        for ds in (dm.train_set, dm.val_set, dm.test_set):
            ds.batched = False
        one_by_one = list(loader())
        for ds in (dm.train_set, dm.val_set, dm.test_set):
            ds.batched = True
        assert len(batched) == len(one_by_one) > 1
        for (xa, ya), (xb, yb) in zip(batched, one_by_one, strict=True):
            assert xa.dtype == xb.dtype == torch.float32 and ya.dtype == yb.dtype == torch.int64
            if augment is None or loader != dm.train_dataloader:
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_missing_fashion_dir_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*--data-dir"):
        FashionMNIST(tmp_path / "nope")
    dm = ImageDataModule("fashion-mnist", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        dm.prepare_data()


def test_mismatched_image_and_label_counts(tmp_path):
    root = _write_fashion(tmp_path / "fm")
    (root / fm.FILES["train"][1]).write_bytes(gzip.compress(_idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(IdxError, match="do not match"):
        FashionMNIST(root, "train")


# --- image folders --------------------------------------------------------------------------------


def _modes():
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    base = Image.fromarray(rgb, "RGB")
    g16 = Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10) * 500)
    assert g16.mode == "I;16"
    rgba = base.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited on white
    return {"L": base.convert("L"), "RGB": base, "RGBA": rgba, "P": base.convert("P"),
            "CMYK": base.convert("CMYK"), "I16": g16, "1": base.convert("1"), "LA": base.convert("LA")}


_FORMATS = {"png": ("L", "RGB", "RGBA", "P", "I16", "1", "LA"), "jpg": ("L", "RGB", "CMYK"),
            "webp": ("L", "RGB", "RGBA", "P", "LA"), "bmp": ("L", "RGB", "P", "1")}


@pytest.mark.parametrize(("ext", "mode"), [(e, m) for e, modes in _FORMATS.items() for m in modes])
def test_load_image_every_mode_to_rgb(tmp_path, mode, ext):
    img = _modes()[mode]
    path = tmp_path / f"x.{ext}"
    img.save(path)
    x = load_image(path)
    assert x.shape == (3, 12, 10) and x.dtype == torch.uint8
    assert load_image(path, channels=1).shape == (1, 12, 10)
    if mode == "RGBA":
        assert x.min() >= 250  # transparent → white
    if mode == "I16":  # 16-bit scaled into 8 bits, not clipped at 255
        ref = np.arange(120).reshape(12, 10) * 500 / 65535 * 255
        np.testing.assert_allclose(x[0].numpy(), np.round(ref), atol=1)


def _folder(tmp_path, classes=("cat", "dog"), per_class=3):
    rng = np.random.default_rng(0)
    for c in classes:
        (tmp_path / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    return tmp_path


def test_image_folder_classes_and_samples(tmp_path):
    root = _folder(tmp_path)
    ds = ImageFolder(root)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6 and ds.targets == [0, 0, 0, 1, 1, 1]
    x, y = ds[4]
    assert x.shape == (3, 8, 8) and y == 1


def test_corrupt_image_skipped_with_count_or_strict_raises(tmp_path):
    root = _folder(tmp_path)
    good = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "garbage.jpg").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        ds = ImageFolder(root)
    assert len(ds) == 6 and len(ds.skipped) == 2
    with pytest.raises(ImageError, match=r"truncated\.png"):
        ImageFolder(root, strict=True)


def test_corrupt_image_at_load_time(tmp_path):
    """With header-only verification a truncated JPEG passes the scan and is replaced at load time."""
    root = _folder(tmp_path, per_class=2)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        root / "cat" / "a.jpg", quality=95)
    data = (root / "cat" / "a.jpg").read_bytes()
    (root / "cat" / "a.jpg").write_bytes(data[: len(data) // 2])
    ds = ImageFolder(root, verify=False)
    i = next(k for k, (p, _) in enumerate(ds.samples) if p.endswith("a.jpg"))
    with pytest.warns(UserWarning, match="next image"):
        x, y = ds[i]
    assert x.shape == (3, 8, 8) and y == 1 and len(ds.skipped) == 1  # the next sample: a dog
    with pytest.raises(ImageError, match=r"a\.jpg"):
        ImageFolder(root, verify=False, strict=True)[i]


def test_empty_class_folder_warns_and_all_empty_raises(tmp_path):
    root = _folder(tmp_path / "a")
    (root / "empty").mkdir()
    with pytest.warns(UserWarning, match="empty"):
        ds = ImageFolder(root)
    assert ds.classes == ["cat", "dog"]
    (tmp_path / "b" / "x").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no class folder"):
            ImageFolder(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")


def test_folder_datamodule_splits(tmp_path):
    root = _folder(tmp_path, per_class=10)
    dm = ImageDataModule(f"folder:{root}", img_size=(16, 16), channels=3, batch_size=4, val_size=0.2)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 2 and len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 20
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32


# --- synthetic, transforms, sampler ---------------------------------------------------------------


def test_synthetic_is_deterministic():
    a, b = SyntheticPatterns(20, seed=3), SyntheticPatterns(20, seed=3)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, SyntheticPatterns(20, seed=4).images)
    assert a[13][1] == 3


def test_transforms_shapes_and_mixup():
    x = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    tr = train_transform((28, 28), channels=1, crop_padding=2, randaugment=True, random_erasing=1.0)
    assert tr(x).shape == (1, 28, 28) and tr(x).dtype == torch.float32
    big = torch.randint(0, 256, (3, 300, 260), dtype=torch.uint8)
    assert train_transform((224, 224), randaugment=True)(big).shape == (3, 224, 224)
    assert eval_transform((224, 224))(big).shape == (3, 224, 224)
    assert eval_transform((28, 28), channels=1)(x).shape == (1, 28, 28)
    mix = mixup_cutmix(10, 0.8, 1.0)
    _, yb = mix(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert yb.shape == (4, 10) and torch.allclose(yb.sum(1), torch.ones(4))
    assert mixup_cutmix(10) is None


def _crops(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every (top, left, flip) crop v2.RandomCrop(padding=pad, reflect) + flip can give of ``img``."""
    padded = torch.nn.functional.pad(img[None].float(), (pad,) * 4, mode="reflect")[0]
    h, w = img.shape[-2:]
    out = []
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top:top + h, left:left + w]
            out += [crop, crop.flip(-1)]
    return out


def test_batch_augment_gives_each_image_one_of_its_v2_crops():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    aug = BatchAugment((28, 28), channels=1, crop_padding=2, mean=[0.0], std=[1.0])
    y = aug(x) * 255
    seen = set()
    for img, out in zip(x, y, strict=True):
        match = [k for k, c in enumerate(_crops(img, 2)) if torch.allclose(out, c, atol=1e-3)]
        assert match, "an output that no reflect-padded crop (or its flip) of its own image gives"
        seen.add(match[0])
    assert len(seen) > 30  # 50 (offset, flip) choices: drawn per image, not once per batch
    assert aug(x[0]).shape == (1, 28, 28)  # a single image works too
    assert BatchAugment((56, 56), channels=1, crop_padding=4)(x[:2]).shape == (2, 1, 56, 56)
    with pytest.raises(ValueError, match="crop_padding"):
        BatchAugment((8, 8), crop_padding=8)


def test_batch_augment_offsets_flips_and_erasing_follow_v2():
    torch.manual_seed(1)
    n, h = 4000, 16
    ramp = (torch.arange(h * h) % 251).view(1, 1, h, h).to(torch.uint8)  # distinct pixels, a ramp along rows
    aug = BatchAugment((h, h), channels=1, crop_padding=2, mean=[0.0], std=[1.0])
    out = (aug(ramp.expand(n, 1, h, h)) * 255).round()
    flips = (out[:, 0, 5, 6] > out[:, 0, 5, 7]).float().mean()  # a row of the ramp decreases when flipped
    assert abs(flips - 0.5) < 0.04
    tops = (out[:, 0, 5, 8] - ramp[0, 0, 5, 8]).div(h).round()  # a row shift moves the ramp by h
    counts = torch.stack([(tops == d).sum() for d in range(-2, 3)]).float() / n
    assert torch.all((counts - 0.2).abs() < 0.03), counts  # uniform over the 5 vertical offsets

    # a narrow image: most boxes do not fit, so the tries (v2 takes the first that fits) shape the sizes
    zeros = torch.zeros(n, 1, 24, 6, dtype=torch.uint8)
    erased = BatchAugment((24, 6), channels=1, hflip=False, random_erasing=0.5, mean=[0.0], std=[1.0])(zeros)
    ref = torch.zeros(n, 1, 24, 6)
    v2_erase = v2.RandomErasing(p=0.5, value="random")
    ref = torch.stack([v2_erase(img) for img in ref])
    for a in (erased, ref):  # the same share of images erased and the same mean box, within sampling noise
        assert abs((a != 0).flatten(1).any(1).float().mean() - 0.5) < 0.04
    frac = [(a != 0).flatten(1).float().mean(1) for a in (erased, ref)]
    hit = [f[f > 0] for f in frac]
    assert abs(hit[0].mean() - hit[1].mean()) < 0.015, (hit[0].mean(), hit[1].mean())
    boxes = (erased[:, 0] != 0)  # a rectangle: its pixel count is rows × columns touched
    rows, cols = boxes.any(2).sum(1), boxes.any(1).sum(1)
    assert torch.equal(boxes.flatten(1).sum(1), rows * cols)
    assert rows.max() < 24 and cols.max() < 6  # a box that does not fit is redrawn, never clipped


def test_augmented_training_batches_are_drawn_batched_and_seeded(tmp_path):
    root = tmp_path / "fm"
    _write_fashion(root, n_train=40, n_test=10)
    def batch(seed):
        torch.manual_seed(seed)
        dm = ImageDataModule("fashion-mnist", str(root), batch_size=16, val_size=8,
                             augment=dict(crop_padding=2, random_erasing=0.25))
        dm.setup()
        assert dm.train_set.batched
        return next(iter(dm.train_dataloader()))[0]
    a, b, c = batch(0), batch(0), batch(1)
    assert a.shape == (16, 1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)


def test_epoch_sampler_global_batches_match_across_world_sizes():
    one = list(EpochShuffleSampler(16, seed=1))
    two = [list(EpochShuffleSampler(16, seed=1, rank=r, world=2)) for r in range(2)]
    for t in range(2):  # step t: global batch 8 = 2 ranks × 4
        assert sorted(one[8 * t: 8 * t + 8]) == sorted(two[0][4 * t: 4 * t + 4] + two[1][4 * t: 4 * t + 4])
    s = EpochShuffleSampler(16, seed=1)
    s.set_epoch(1)
    assert list(s) != one and sorted(s) == list(range(16))
