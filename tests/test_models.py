"""Registry-wide model tests: shapes, finiteness, gradients, determinism, API, ablation switches."""

import pytest
import torch

import swinlab
from conftest import randomize_
from swinlab.models import SwinConfig, get_config

ALL = swinlab.list_models()
BIG = {"swin_l", "swin_l_384", "vit_l16", "vit_l16_384", "mixer_l16", "mixer_l32", "mixer_h14",
       *swinlab.list_models("swinv2_b*"), *swinlab.list_models("swinv2_l*")}
SMALL = ["swin_pico", "swin_micro_28"]


def _input(cfg, batch=2, size=None):
    h, w = size or cfg.img_size
    return torch.randn(batch, cfg.in_chans, h, w)


def test_registry_lists_the_paper_variants():
    for name in ["swin_t", "swin_s", "swin_b", "swin_l", "swin_b_384", "swin_l_384", "swin_micro_28"]:
        assert name in ALL
    assert swinlab.list_models("swin_b*") == ["swin_b", "swin_b_384"]
    with pytest.raises(ValueError, match="unknown model 'swin_x'"):
        swinlab.create_model("swin_x")
    with pytest.raises(TypeError, match="no field"):
        swinlab.create_model("swin_t", windowsize=8)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in ALL])
def test_forward_shape_and_finite(name):
    # a small input keeps big variants cheap; it also exercises window shrinking in late Swin stages.
    # The model is built for it: a Mixer takes only the patch grid it was built for.
    cfg = get_config(name)
    size = (64, 64) if cfg.img_size[0] > 64 else cfg.img_size
    model = swinlab.create_model(name, num_classes=5, img_size=size).eval()
    x = _input(model.config)
    with torch.no_grad():
        y = model(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    assert y.shape == (2, 5) and torch.isfinite(y).all()
    assert feats.shape[0] == 2 and feats.shape[-1] == model.num_features
    assert pooled.shape == (2, model.num_features)


@pytest.mark.parametrize("name", [*SMALL, "swin_t"])
def test_every_parameter_gets_a_gradient(name):
    model = swinlab.create_model(name, drop_path_rate=0.0)
    cfg = model.config
    x = _input(cfg, size=(64, 64) if name == "swin_t" else None)
    model(x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_model_same_output(name):
    torch.manual_seed(1)
    a = swinlab.create_model(name).eval()
    torch.manual_seed(1)
    b = swinlab.create_model(name).eval()
    x = _input(a.config)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert torch.equal(a(x), a(x))


def test_drop_path_is_stochastic_in_training_only():
    model = swinlab.create_model("swin_pico", drop_path_rate=0.5)
    x = _input(model.config)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    rates = [b.drop_path1.p for s in model.stages for b in s.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)


@pytest.mark.parametrize("size", [(32, 32), (40, 24), (37, 51), (8, 8), (2, 3)])
def test_any_input_size(size):
    model = swinlab.create_model("swin_pico").eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
        maps = model.forward_intermediates(torch.randn(1, 3, *size))
    assert y.shape == (1, 10) and torch.isfinite(y).all()
    h, w = -(-size[0] // 2), -(-size[1] // 2)  # patch 2, padded
    assert maps[0].shape[2:] == (h, w)
    assert maps[1].shape[2:] == (-(-h // 2), -(-w // 2))


@pytest.mark.parametrize("patch", [2, 4, 8])
@pytest.mark.parametrize("size", [(28, 28), (29, 30), (37, 51), (5, 9), (1, 1)])
def test_the_convolutional_stem_keeps_the_patch_grid(patch, size):
    """stem='conv' (3×3 stride-2 convolutions) gives the P×P patch stem's token grid, padded."""
    from swinlab.layers.patch import PatchEmbed

    x = torch.randn(2, 3, *size)
    patch_stem = PatchEmbed(patch_size=patch, in_chans=3, embed_dim=16)
    conv_stem = PatchEmbed(patch_size=patch, in_chans=3, embed_dim=16, stem="conv")
    assert len([m for m in conv_stem.stem if isinstance(m, torch.nn.Conv2d)]) == patch.bit_length() - 1
    assert conv_stem(x).shape == patch_stem(x).shape == (2, -(-size[0] // patch), -(-size[1] // patch), 16)


def test_the_convolutional_stem_learns_and_rejects_what_it_cannot_build():
    model = swinlab.create_model("swin_pico", stem="conv")
    assert model.config.stem == "conv" and model.patch_embed.stem is not None
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.patch_embed.parameters())
    with pytest.raises(ValueError, match="power of two"):
        swinlab.create_model("swin_pico", stem="conv", patch_size=3)
    with pytest.raises(ValueError, match="stem must be one of"):
        SwinConfig(stem="convolutional")


def test_forward_intermediates_strides_and_channels():
    model = swinlab.create_model("swin_t").eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 128, 96))
        feats = model.forward_features(torch.randn(1, 3, 128, 96))
    assert [m.shape[1:] for m in maps] == [(96, 32, 24), (192, 16, 12), (384, 8, 6), (768, 4, 3)]
    assert feats.shape == (1, 4, 3, 768)


def test_bad_input_names_the_problem():
    model = swinlab.create_model("swin_t")
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\).*in_chans=1"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(3, 224, 224))
    with pytest.raises(ValueError, match="position must be one of"):
        SwinConfig(position="relative")
    with pytest.raises(ValueError, match="not divisible by"):
        SwinConfig(embed_dim=100)
    with pytest.raises(ValueError, match="unknown attention_backend"):
        swinlab.create_model("swin_pico", attention_backend="cuda-magic")


def test_no_weight_decay_names_position_parameters():
    names = swinlab.create_model("swin_pico", position="abs+rel").no_weight_decay()
    assert "abs_pos.pos_embed" in names
    assert "stages.0.blocks.0.attn.rel_pos.table" in names
    assert not any("qkv" in n or "norm" in n for n in names)


def test_reset_classifier_and_headless():
    model = swinlab.create_model("swin_pico")
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3) and model.config.num_classes == 3
    headless = swinlab.create_model("swin_pico", num_classes=0)
    assert headless(torch.randn(1, 3, 32, 32)).shape == (1, headless.num_features)


# --- the ablation switches of Table 4 --------------------------------------------------------
def _blocks(model):
    return [b for s in model.stages for b in s.blocks]


def test_shift_alternates_and_can_be_switched_off():
    on = swinlab.create_model("swin_t")
    assert [b.attn.shift_size for b in _blocks(on)][:4] == [(0, 0), (3, 3), (0, 0), (3, 3)]
    off = swinlab.create_model("swin_t", shift=False)
    assert all(b.attn.shift_size == (0, 0) for b in _blocks(off))


@pytest.mark.parametrize(("position", "table", "abs_pos", "qk"), [
    ("rel", True, False, True), ("none", False, False, True), ("abs", False, True, True),
    ("abs+rel", True, True, True), ("rel-only", True, False, False),
])
def test_position_modes_build_what_they_say(position, table, abs_pos, qk):
    model = swinlab.create_model("swin_pico", position=position)
    attn = _blocks(model)[0].attn
    assert (attn.rel_pos is not None) == table
    assert (model.abs_pos is not None) == abs_pos
    assert attn.use_qk == qk
    y = model(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(y).all()


def test_every_switch_changes_the_function():
    """Same weights, one switch flipped: the outputs differ (each switch is wired in)."""
    base = randomize_(swinlab.create_model("swin_pico"))  # peaked attention, so each term shows
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = base(x)
        for change in ({"shift": False}, {"mask_shifted": False}, {"position": "rel-only"}):
            other = swinlab.create_model("swin_pico", **change).eval()
            other.load_state_dict(base.state_dict())
            assert (other(x) - ref).abs().max() > 1e-4, change
        nobias = swinlab.create_model("swin_pico", position="none").eval()
        nobias.load_state_dict(base.state_dict(), strict=False)
        assert (nobias(x) - ref).abs().max() > 1e-4


def test_rel_only_logits_ignore_content():
    """'rel. pos. w/o app.': attention weights depend on positions only, so with the value projection
    fixed the attention output is a fixed mixing of values whatever the queries and keys are."""
    model = swinlab.create_model("swin_pico", position="rel-only").eval()
    attn = _blocks(model)[0].attn
    x = torch.randn(1, 16, 16, 32)
    with torch.no_grad():
        y1 = attn(x)
        attn.qkv.weight[:64].mul_(3.0)  # scale W_q and W_k: no effect without the QKᵀ term
        y2 = attn(x)
    assert torch.allclose(y1, y2, atol=1e-6)


def test_config_is_kept_and_frozen():
    model = swinlab.create_model("swin_t", num_classes=7)
    assert model.config == get_config("swin_t").replace(num_classes=7)
    with pytest.raises(AttributeError):
        model.config.embed_dim = 3


def test_inference_mode_then_training():
    """Cached index/mask tensors made under inference_mode must still serve a training step."""
    model = swinlab.create_model("swin_pico")
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert model.head.weight.grad is not None
