"""SimMIM pretraining (swinlab.train.simmim) and fine-tuning from it: the masks asked for, the loss on the
masked pixels only, the mask token reaching the encoder, the loss falling, ``--init`` moving every encoder
weight and refusing another architecture, exact resume, layer-wise lr decay, labelled subsets."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

import swinlab
from swinlab.cli import main
from swinlab.data.datamodule import stratified_subset
from swinlab.errors import CheckpointError, ConfigError, DataError
from swinlab.train import fit, get_recipe, param_groups
from swinlab.train.run import load_encoder
from swinlab.train.simmim import SimMIM, mask_grid, random_masks


def _simmim(name="swin_pico", mask_patch_size=8, **overrides) -> SimMIM:
    encoder = swinlab.create_model(name, num_classes=0, **overrides)
    return SimMIM(encoder, mask_patch_size=mask_patch_size)


def test_masks_have_the_asked_ratio_and_geometry():
    grid = mask_grid((28, 28), 4, 2)  # Fashion-MNIST with the patch-2 models: 7×7 mask patches of 2×2 tokens
    assert grid == (7, 7)
    masks = random_masks(16, grid, 0.6, torch.Generator().manual_seed(0))
    assert masks.shape == (16, 7, 7) and masks.dtype == torch.bool
    assert (masks.flatten(1).sum(1) == math.ceil(0.6 * 49)).all()  # exactly 30 per image, as SimMIM counts
    assert not torch.equal(masks[0], masks[1])  # drawn per image
    model = _simmim("swin_micro_28", mask_patch_size=4)
    tokens, pixels = model.token_mask(masks), model.pixel_mask(masks)
    assert tokens.shape == (16, 14, 14) and pixels.shape == (16, 28, 28)
    assert torch.equal(tokens[:, ::2, ::2], masks) and torch.equal(tokens[:, 1::2, 1::2], masks)
    assert torch.equal(pixels[:, 3::4, ::4], masks)  # every pixel of a 4×4 mask patch shares its value
    assert pixels.float().mean() == pytest.approx(30 / 49)


@pytest.mark.parametrize(("size", "mask_patch", "match"), [
    ((28, 28), 3, "not a multiple of the encoder's patch size 2"),
    ((28, 28), 8, r"does not tile the 28×28 images; choose one of \[2, 4, 14, 28\]"),
])
def test_a_mask_patch_that_does_not_fit_is_a_clear_error(size, mask_patch, match):
    with pytest.raises(ConfigError, match=match):
        mask_grid(size, mask_patch, 2)
    with pytest.raises(ConfigError, match="mask_ratio must be in"):
        random_masks(1, (7, 7), 1.0)


def test_loss_counts_the_masked_pixels_only():
    model = _simmim()
    x = torch.randn(4, 3, 32, 32)
    masks = random_masks(4, model.grid, 0.6, torch.Generator().manual_seed(1))
    rec = model.reconstruct(x, masks).detach().requires_grad_()
    loss = model.loss(rec, x, masks)
    loss.backward()
    pixel = model.pixel_mask(masks).unsqueeze(1).expand_as(rec)
    assert (rec.grad[~pixel] == 0).all()  # no gradient from an unmasked pixel
    assert (rec.grad[pixel] != 0).all()
    expected = (rec - x).abs()[pixel].mean()  # the mean L1 over the masked pixels and channels
    torch.testing.assert_close(loss, expected)
    changed = x.clone()
    changed[~pixel] += 5.0  # the target at unmasked pixels does not enter the loss
    torch.testing.assert_close(model.loss(rec, changed, masks), loss)


def test_the_mask_token_replaces_the_masked_patch_tokens():
    model = _simmim()
    seen = {}
    forward_features = model.encoder.forward_features

    def spy(x, embed_hook=None):
        def record(tokens):
            seen["before"], seen["after"] = tokens, embed_hook(tokens)
            return seen["after"]
        return forward_features(x, embed_hook=record)

    model.encoder.forward_features = spy
    masks = random_masks(2, model.grid, 0.6, torch.Generator().manual_seed(2))
    loss, _ = model(torch.randn(2, 3, 32, 32), masks)
    w = model.token_mask(masks)  # (B, 16, 16)
    torch.testing.assert_close(seen["after"][w], model.mask_token.reshape(1, -1).expand(int(w.sum()), -1))
    torch.testing.assert_close(seen["after"][~w], seen["before"][~w])
    loss.backward()
    assert model.mask_token.grad.abs().sum() > 0  # it reaches the encoder and learns


@pytest.mark.parametrize(("name", "overrides"), [
    ("swin_pico", {}), ("swin_pico", {"global_context": "max:grid:16"}),
    ("swin_pico", {"shift": False, "position": "abs"}), ("vit_pico", {}), ("swinv2_pico", {}),
])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(name, overrides):
    torch.manual_seed(0)
    model = _simmim(name, **overrides)
    x = torch.rand(8, 3, 32, 32)
    masks = random_masks(8, model.grid, 0.6, torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss, _ = model(x, masks)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_normalized_targets_are_zero_mean_unit_variance_per_mask_patch():
    model = SimMIM(swinlab.create_model("swin_pico", num_classes=0), mask_patch_size=8, norm_target=True)
    t = model.target(torch.rand(2, 3, 32, 32) * 10 + 3)
    patches = t.unfold(2, 8, 8).unfold(3, 8, 8)  # (B, C, 4, 4, 8, 8)
    torch.testing.assert_close(patches.mean((-1, -2)), torch.zeros(2, 3, 4, 4), atol=1e-4, rtol=0)
    variance = patches.var((-1, -2), unbiased=False)
    torch.testing.assert_close(variance, torch.ones(2, 3, 4, 4), atol=1e-3, rtol=0)


def test_simmim_refuses_other_image_sizes_and_models():
    model = _simmim()
    with pytest.raises(ConfigError, match="built for 32×32 images, got 40×40"):
        model(torch.randn(1, 3, 40, 40), random_masks(1, model.grid, 0.6))
    with pytest.raises(ConfigError, match="SimMIM pretrains Swin and ViT"):
        SimMIM(swinlab.create_model("mvitv2_pico", num_classes=0), mask_patch_size=8)


def _pretrain_config(**changes):
    return get_recipe("simmim-fashion-mnist", smoke=True).replace(**changes)


def test_pretrain_then_init_transfers_every_encoder_weight(tmp_path):
    pre = fit(_pretrain_config(), tmp_path / "pre", accelerator="cpu")
    assert "val/loss" in pre["val"] and math.isfinite(pre["val"]["val/loss"])
    encoder = load_file(pre["model"])
    assert not any(k.startswith(("head.", "mask_token", "decoder")) for k in encoder)
    model = swinlab.create_model("swin_pico", num_classes=7)
    copied = load_encoder(model, pre["model"])
    ours = model.state_dict()
    assert copied == sorted(k for k in ours if not k.startswith("head."))  # every encoder tensor, by name
    for k in copied:
        assert torch.equal(ours[k], encoder[k]), k
    assert set(ours) - set(copied) == {"head.weight", "head.bias"}
    # the fine-tuning run starts from it (and trains): fit with init
    tuned = fit(get_recipe("simmim-fine-tune", smoke=True).replace(init=pre["model"], layer_decay=0.75),
                tmp_path / "ft", accelerator="cpu")
    assert math.isfinite(tuned["val"]["val/loss"])


def test_init_refuses_another_architecture(tmp_path):
    pre = fit(_pretrain_config(), tmp_path / "pre", accelerator="cpu")
    with pytest.raises(CheckpointError, match=r"another architecture:\n  embed_dim: checkpoint 32, model 48"):
        load_encoder(swinlab.create_model("swin_pico", embed_dim=48), pre["model"])
    with pytest.raises(CheckpointError, match="holds a SwinConfig encoder; this model is a ViTConfig"):
        load_encoder(swinlab.create_model("vit_pico"), pre["model"])
    sd = load_file(pre["model"])
    del sd["stages.0.blocks.0.attn.qkv.weight"]
    torch.save(sd, tmp_path / "partial.pth")  # no config inside: checked key by key
    with pytest.raises(CheckpointError, match=r"stages\.0\.blocks\.0\.attn\.qkv\.weight: missing"):
        load_encoder(swinlab.create_model("swin_pico"), tmp_path / "partial.pth")


class _Kill(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyError("killed")


def test_pretraining_resume_equals_an_uninterrupted_run(tmp_path):
    config = _pretrain_config(epochs=2)
    straight = fit(config, tmp_path / "a", accelerator="cpu")
    with pytest.raises(KeyError, match="killed"):
        fit(config, tmp_path / "b", accelerator="cpu", callbacks=[_Kill()])
    resumed = fit(config, tmp_path / "b", resume=True, accelerator="cpu")
    assert resumed["global_step"] == straight["global_step"]
    a, b = load_file(straight["model"]), load_file(resumed["model"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_layer_decay_scales_the_learning_rate_by_depth():
    model = swinlab.create_model("swin_pico")  # 4 blocks: embedding depth 0, blocks 1-4, head 5
    groups = param_groups(model, 0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["patch_embed.proj.weight"])] == 0.5**5
    assert scale[id(named["stages.0.blocks.0.attn.qkv.weight"])] == 0.5**4
    assert scale[id(named["stages.1.downsample.reduction.weight"])] == 0.5**2  # with the block after it
    assert scale[id(named["stages.1.blocks.1.mlp.fc2.weight"])] == 0.5
    assert scale[id(named["head.weight"])] == 1.0
    opt = swinlab.train.build_optimizer(model, 1e-3, layer_decay=0.5)
    assert sorted({g["lr"] for g in opt.param_groups}) == [1e-3 * 0.5**k for k in range(5, -1, -1)]


def test_labelled_subsets_are_stratified_and_fixed_per_seed():
    labels = [i % 10 for i in range(1000)]
    indices = list(range(5000, 6000))
    a = stratified_subset(indices, labels, seed=0, fraction=0.1)
    assert len(a) == 100 and a == sorted(a)
    counts = [sum(1 for i in a if labels[i - 5000] == c) for c in range(10)]
    assert counts == [10] * 10
    assert stratified_subset(indices, labels, seed=0, fraction=0.1) == a  # same seed, same images
    assert stratified_subset(indices, labels, seed=1, fraction=0.1) != a
    b = stratified_subset(indices, labels, seed=0, per_class=3)
    assert len(b) == 30
    with pytest.raises(DataError, match="labels_per_class=101 but class 0 has only 100"):
        stratified_subset(indices, labels, seed=0, per_class=101)
    with pytest.raises(ConfigError, match="set one"):
        get_recipe("simmim-fine-tune").replace(labels_per_class=5)  # train_fraction is set too


def test_cli_pretrain_and_fine_tune(tmp_path, capsys):
    assert main(["pretrain", "--smoke", "--out", str(tmp_path / "pre"), "--mask-ratio", "0.5"]) == 0
    assert (tmp_path / "pre" / "model.safetensors").is_file()
    assert main(["train", "--recipe", "simmim-fine-tune", "--smoke", "--out", str(tmp_path / "ft"),
                 "--init", str(tmp_path / "pre" / "model.safetensors"), "--labels-per-class", "2",
                 "--set", "train_fraction=null"]) == 0
    out = capsys.readouterr().out
    assert '"train_images": 20' in out  # 2 per class of the 10 synthetic classes
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--smoke", "--out", str(tmp_path / "bad"), "--mask-patch-size", "6"])
    assert e.value.code == 2 and "mask_patch_size 6 does not tile" in capsys.readouterr().err
