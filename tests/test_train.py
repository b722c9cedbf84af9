"""Training on Lightning: smoke fits, exact resume, DDP = one process, NaN guard, optimizer groups,
schedule, eval/predict and their errors."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision.transforms import v2

from swinlab import create_model
from swinlab.cli import main
from swinlab.data import BatchAugment, ImageDataModule, SyntheticPatterns, eval_transform
from swinlab.data import fashion_mnist as fm
from swinlab.data.transforms import (
    FASHION_MEAN,
    FASHION_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    default_normalization,
)
from swinlab.kernels import allocator
from swinlab.train import (
    AtomicCheckpointIO,
    evaluate,
    fit,
    get_recipe,
    history,
    param_groups,
    predict,
    scaled_lr,
    warmup_cosine,
    warmup_cosine_factor,
)
from swinlab.train.run import load_checkpoint
from swinlab.weights import CheckpointError


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    # one thread: the tests stay fast and deterministic on a shared, busy CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


def _tiny(**changes):
    """swin_pico on 64 synthetic images: 3 steps of 16 per epoch."""
    base = dict(epochs=1, synthetic_size=64, val_size=16, batch_size=16)
    base.update(changes)
    return get_recipe("synthetic", **base)


def _weights(path):
    return load_file(str(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The synthetic smoke recipe trained once (shared by the predict/eval tests)."""
    out = tmp_path_factory.mktemp("synthetic")
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(get_recipe("synthetic"), out, accelerator="cpu")
    return out, result


# --- fit ------------------------------------------------------------------------------------------


def test_smoke_fit_on_synthetic_learns(trained):
    out, result = trained
    rows = [json.loads(json.dumps(r)) for r in _csv_rows(out / "metrics.csv")]
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert len(losses) >= 40 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert result["val"]["val/acc1"] > 0.5  # chance is 0.1
    for name in ("model.safetensors", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "hparams.yaml"):
        assert (out / name).is_file()
    assert any(p.name.startswith("events") for p in (out / "tb").rglob("*"))
    assert any(r.get("train/throughput") for r in rows) and any(r.get("lr") for r in rows)


def _csv_rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not fm.DEFAULT_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_subset_smoke_fit(tmp_path):
    config = get_recipe("fashion-mnist", smoke=True)  # the conv-stem model, 256 images, crop + erasing on
    assert config.random_erasing > 0 and config.crop_padding
    result = fit(config, tmp_path, accelerator="cpu")
    r = evaluate(result["model"], test_limit=128)
    assert r["images"] == 128 and 0.0 <= r["acc1"] <= r["acc5"] <= 1.0 and math.isfinite(r["loss"])
    assert r["classes"] == fm.CLASSES


class _Kill(L.Callback):
    """Simulates a crash at the start of epoch ``at`` (after epoch at-1's checkpoint was written)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            raise KeyError("killed")


class _WorseAfterFirst(L.Callback):
    """Reports a validation top-1 that falls after the first validation, so the best epoch is not the last."""

    def on_validation_end(self, trainer, pl_module):  # before ModelCheckpoint's (Lightning runs those last)
        trainer.callback_metrics["val/acc1"] = torch.tensor(1.0 / (1 + trainer.current_epoch))


def test_last_checkpoint_is_the_latest_epoch_not_the_best(tmp_path):
    result = fit(_tiny(epochs=3), tmp_path, accelerator="cpu", callbacks=[_WorseAfterFirst()])
    last = torch.load(result["last"], map_location="cpu", weights_only=False)
    best = torch.load(result["best"], map_location="cpu", weights_only=False)
    assert last["global_step"] == result["global_step"] and last["epoch"] == 2  # what --resume continues
    assert best["epoch"] == 0 and best["global_step"] < result["global_step"]


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    # augmentation, MixUp and EMA on: the RNG streams and the EMA must be restored too
    config = _tiny(epochs=2, augment=True, crop_padding=2, hflip=True, mixup_alpha=0.4, ema_decay=0.9,
                   label_smoothing=0.1)
    straight = fit(config, tmp_path / "a", accelerator="cpu")
    with pytest.raises(KeyError, match="killed"):
        fit(config, tmp_path / "b", accelerator="cpu", callbacks=[_Kill(1)])
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = fit(config, tmp_path / "b", resume=True, accelerator="cpu")
    assert resumed["global_step"] == straight["global_step"] == 6
    a, b = _weights(straight["model"]), _weights(resumed["model"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    # the first piece's rows survive the resumed piece's logger: the same per-epoch history as straight
    assert [p.name for p in history.pieces(tmp_path / "b")] == ["metrics.part1.csv", "metrics.csv"]
    curve_a, curve_b = (history.epoch_curve(history.read_metrics(tmp_path / d)) for d in "ab")
    assert [e for e, _ in curve_b] == [e for e, _ in curve_a] == [0, 1]
    assert [v for _, v in curve_b] == pytest.approx([v for _, v in curve_a], abs=1e-6)
    with pytest.raises(FileNotFoundError, match=r"last\.ckpt"):
        fit(config, tmp_path / "c", resume=True, accelerator="cpu")


def test_two_process_ddp_equals_one_process(tmp_path):
    """Total batch 8 both ways (1 × 8 vs 2 × 4, gloo): the same global batches and averaged gradients."""
    config = _tiny(synthetic_size=48, val_size=16, shuffle=True)
    one = fit(config.replace(batch_size=8), tmp_path / "one", accelerator="cpu", devices=1)
    two = fit(config.replace(batch_size=4), tmp_path / "two", accelerator="cpu", devices=2,
              strategy="ddp_spawn")
    a, b = _weights(one["model"]), _weights(two["model"])
    init = create_model("swin_pico").state_dict()
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # it trained
    assert diff < 1e-5  # float reduction order only


def test_nan_loss_names_the_step_and_batch(tmp_path):
    class Poison(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                with torch.no_grad():
                    pl_module.model.head.weight.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"global step 2 \(epoch 0, batch index 2\)"):
        fit(_tiny(), tmp_path, accelerator="cpu", callbacks=[Poison()])


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"x": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["x"], torch.ones(3))  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


# --- optimizer and schedule -----------------------------------------------------------------------


def test_param_groups_no_decay_on_norms_biases_and_tables():
    model = create_model("swin_pico")
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert any(n.endswith("rel_pos.table") for n in skipped) and not any("table" in n for n in decayed)
    assert any("norm" in n and n.endswith("weight") for n in skipped)
    assert all(n.endswith("weight") for n in decayed) and "head.weight" in decayed
    assert len(skipped) + len(decayed) == len(list(model.parameters()))


def test_scaled_lr_and_warmup_cosine_shape():
    assert scaled_lr(5e-4, 1024) == pytest.approx(1e-3)
    assert scaled_lr(5e-4, 128, devices=8) == pytest.approx(1e-3)
    f = [warmup_cosine_factor(s, 10, 110, warmup_start=1e-3, min_ratio=1e-2) for s in range(111)]
    assert f[0] == pytest.approx(1e-3) and f[10] == pytest.approx(1.0) and f[110] == pytest.approx(1e-2)
    assert all(a < b for a, b in itertools.pairwise(f[:11]))  # linear warmup rises
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))  # cosine decays
    assert f[60] == pytest.approx((1 + 1e-2) / 2)  # halfway through the cosine
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = warmup_cosine(opt, 10, 110)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-6) and max(lrs) == pytest.approx(1e-3)


def test_recipes():
    imagenet = get_recipe("swin-imagenet")
    assert (imagenet.epochs, imagenet.batch_size, imagenet.warmup_epochs, imagenet.mixup_alpha,
            imagenet.cutmix_alpha, imagenet.clip_grad) == (300, 1024, 20, 0.8, 1.0, 5.0)
    assert get_recipe("demo", epochs=2).epochs == 2
    with pytest.raises(TypeError, match="no field"):
        get_recipe("demo", nope=1)
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")


def test_compile_runs_the_training_forward_compiled_and_keeps_the_plain_keys(tmp_path, monkeypatch):
    calls = []

    class Compiled(torch.nn.Module):  # stands in for torch.compile's OptimizedModule (which takes ~1 min)
        def __init__(self, model, mode):
            super().__init__()
            self.model, self.mode = model, mode

        def forward(self, x):
            calls.append(self.mode)
            return self.model(x)

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: Compiled(model, mode))
    result = fit(_tiny(compile="max-autotune"), tmp_path, accelerator="cpu")
    assert calls and set(calls) == {"max-autotune"} and len(calls) == result["global_step"]  # training only
    keys, plain = set(_weights(result["model"])), set(create_model("swin_pico").state_dict())
    assert keys == plain, keys ^ plain
    ckpt = torch.load(result["last"], weights_only=True)
    assert not [k for k in ckpt["state_dict"] if "_compiled" in k or "_orig_mod" in k]
    calls.clear()
    fit(_tiny(), tmp_path / "eager", accelerator="cpu")
    assert not calls  # off by default


# --- eval, predict and the CLI --------------------------------------------------------------------


def test_evaluate_and_checkpoint_of_another_model(trained, capsys):
    _, result = trained
    r = evaluate(result["model"])
    assert r["images"] == 64 and r["acc1"] > 0.5
    with pytest.raises(CheckpointError, match=r"patch_embed\.\S+: checkpoint \(.*\) vs model \(.*\)"):
        evaluate(result["model"], model="swin_micro_28")
    with pytest.raises(SystemExit) as e:
        main(["eval", result["model"], "--model", "swin_micro_28"])
    assert e.value.code == 2 and "vs model" in capsys.readouterr().err
    assert main(["eval", result["model"], "--json", "--limit", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 20


def test_predict_png_and_jpeg(trained, tmp_path, capsys):
    _, result = trained
    ds = SyntheticPatterns(20, seed=123)
    paths = []
    for i in range(20):
        p = tmp_path / f"img{i}.{'jpg' if i % 4 == 3 else 'png'}"
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(p)
        paths.append(p)
    res = predict(result["model"], paths, topk=3)
    assert [r["path"] for r in res] == [str(p) for p in paths]
    for r in res:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert r["top"][0]["label"] == f"pattern{r['top'][0]['index']}"
    # PNG is lossless: the files give the same top-1 as the in-memory images through the eval pipeline
    net, _ = load_checkpoint(result["model"])
    with torch.no_grad():
        ref = net(torch.stack([eval_transform((32, 32))(x) for x in ds.images])).argmax(-1).tolist()
    assert all(r["top"][0]["index"] == ref[i] for i, r in enumerate(res) if i % 4 != 3)
    correct = sum(r["top"][0]["index"] == int(ds.targets[i]) for i, r in enumerate(res))
    assert correct >= 6  # chance: 2 of 20
    assert main(["predict", result["model"], *map(str, paths), "--topk", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[3]["top"]) == 2
    assert main(["predict", result["model"], str(paths[0])]) == 0
    assert "1. pattern" in capsys.readouterr().out
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    good, broken = predict(result["model"], [paths[0], bad])  # the good file is still predicted
    assert good["top"][0]["index"] == res[0]["top"][0]["index"]
    assert "top" not in broken and "bad.png" in broken["error"]
    assert main(["predict", result["model"], str(bad)]) == 1
    assert "bad.png" in capsys.readouterr().err


def test_cli_train_smoke_and_bad_data_dir(tmp_path, capsys):
    assert main(["train", "--recipe", "synthetic", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] > 0
    with pytest.raises(SystemExit) as e:
        main(["train", "--recipe", "demo", "--smoke", "--data-dir", str(tmp_path / "nope"),
              "--out", str(tmp_path / "run2")])
    assert e.value.code == 2 and "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.parametrize(("channels", "mean", "std"), [
    (1, FASHION_MEAN, FASHION_STD),
    (3, IMAGENET_MEAN, IMAGENET_STD),
])
def test_norm_stats_match_the_transforms(channels, mean, std):
    # what export writes into a model file (and predict falls back to) is what training normalized with
    assert mean == ((0.2860,) if channels == 1 else (0.485, 0.456, 0.406))
    assert std == ((0.3530,) if channels == 1 else (0.229, 0.224, 0.225))
    assert default_normalization(channels) == (list(mean), list(std))
    dm = ImageDataModule("synthetic", img_size=(16, 16), channels=channels, synthetic_size=20,
                         augment={"crop_padding": 2})
    dm.setup("fit")
    assert isinstance(dm.train_set.transform, BatchAugment)
    (norm,) = [t for t in dm.val_set.transform.transforms if isinstance(t, v2.Normalize)]
    for n in (norm, dm.train_set.transform.normalize):
        assert (n.mean, n.std) == default_normalization(channels)
    # and applied: a uniform grey image v becomes (v/255 - mean) / std per channel (crops and flips keep it)
    grey = torch.full((channels, 16, 16), 200, dtype=torch.uint8)
    expected = (200 / 255 - torch.tensor(mean)) / torch.tensor(std)
    for split in (dm.train_set, dm.val_set):
        torch.testing.assert_close(split.transform(grey).mean((1, 2)), expected)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fused_adamw_with_gradient_clipping_in_every_cpu_precision(tmp_path, precision):
    """AdamW runs fused (one kernel per step), and gradients are still clipped under bf16-mixed, where
    Lightning's mixed-precision plugin refuses to clip for a fused optimizer (it has no scaler to unscale)."""
    seen = {}

    class Spy(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen["fused"] = optimizer.defaults["fused"]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            norms = [p.grad.norm() for p in pl_module.model.parameters() if p.grad is not None]
            seen.setdefault("norms", []).append(torch.linalg.vector_norm(torch.stack(norms)).item())

    config = _tiny(precision=precision, clip_grad=1e-3, base_lr=1e-3)
    result = fit(config, tmp_path, accelerator="cpu", callbacks=[Spy()])
    assert result["precision"] == precision and seen["fused"] is True
    assert result["malloc"] == allocator.state() != "default: not tuned"  # CPU training tunes malloc
    assert seen["norms"] and max(seen["norms"]) <= 1e-3 * 1.01  # clipped to clip_grad
