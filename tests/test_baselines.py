"""The baselines of the Swin paper's Table 1: ViT/DeiT and MLP-Mixer.

Parity with timm (random weights, converted, float32, within :func:`conftest.assert_close_rel`), the
papers' parameter and MAC figures as counted by :func:`swinlab.analysis.profile`, and the registry-wide
checks of ``test_models.py`` (shape, finite, gradients, determinism) on small inputs or small overrides.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import swinlab
from conftest import assert_close_rel, parity_tol, randomize_
from swinlab.analysis import profile
from swinlab.errors import UnknownFieldError
from swinlab.layers import Attention
from swinlab.models import MixerConfig, MlpMixer, VisionTransformer, ViTConfig, get_config
from swinlab.weights import convert, load_state_dict

VIT = [*swinlab.list_models("vit_*"), *swinlab.list_models("deit_*")]
MIXER = swinlab.list_models("mixer_*") + swinlab.list_models("resmlp_*") + swinlab.list_models("gmlp_*")
SMALL = ["vit_pico", "vit_micro_28", "mixer_pico", "mixer_micro_28", "resmlp_pico", "gmlp_pico"]


def _meta(name: str, **overrides):
    """The preset built on the meta device: shapes only, instant even for ViT-L or Mixer-H."""
    with torch.device("meta"):
        return swinlab.create_model(name, **overrides)


def _small(name: str, **overrides):
    """The preset's widths and heads with one block and (for presets over 64²) 64² inputs: a cheap
    model that still has every kind of parameter of the preset."""
    cfg = get_config(name)
    if cfg.img_size[0] > 64:
        overrides = {"depth": 1, **overrides}
        if isinstance(cfg, MixerConfig):
            overrides = {"img_size": 64, **overrides}  # Mixer takes only the grid it is built for
    return swinlab.create_model(name, **overrides)


def _input_size(model):
    return (64, 64) if model.config.img_size[0] > 64 else model.config.img_size


# --- parity with timm ----------------------------------------------------------------------------
TIMM = [  # swinlab name, timm name
    ("deit_s", "deit_small_patch16_224"),
    pytest.param("vit_b16", "vit_base_patch16_224", marks=pytest.mark.slow),
    pytest.param("mixer_b16", "mixer_b16_224", marks=pytest.mark.slow),
    ("resmlp_s12", "resmlp_12_224"),
    pytest.param("resmlp_s24", "resmlp_24_224", marks=pytest.mark.slow),
    ("gmlp_ti", "gmlp_ti16_224"),
    pytest.param("gmlp_s", "gmlp_s16_224", marks=pytest.mark.slow),
]


def _timm_parity(ours, theirs, x):
    load_state_dict(ours, convert(theirs.state_dict(), "timm"))
    with torch.no_grad():
        ref, ref_feats = theirs(x), theirs.forward_features(x)
        logits, feats = ours(x), ours.forward_features(x)
    assert_close_rel(logits, ref, what="logits")
    assert_close_rel(feats, ref_feats, what="features")
    return ref


@pytest.mark.parametrize(("name", "timm_name"), TIMM)
def test_timm_parity(name, timm_name):
    timm = pytest.importorskip("timm")
    theirs = randomize_(timm.create_model(timm_name, pretrained=False))
    ours = swinlab.create_model(name).eval()
    _timm_parity(ours, theirs, torch.randn(2, 3, 224, 224))


def test_timm_parity_of_small_models_and_its_sensitivity():
    """Tiny timm models against vit_pico / mixer_pico; a transposed position grid is caught."""
    pytest.importorskip("timm")
    from timm.models.mlp_mixer import MlpMixer as TimmMixer
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    x = torch.randn(2, 3, 32, 32)
    theirs = randomize_(TimmViT(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                num_classes=10))
    ours = swinlab.create_model("vit_pico").eval()
    ref = _timm_parity(ours, theirs, x)
    sd = convert(theirs.state_dict(), "timm")
    sd["abs_pos.pos_embed"] = sd["abs_pos.pos_embed"].transpose(1, 2)  # rows ↔ columns
    ours.load_state_dict(sd)
    with torch.no_grad():
        assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref)

    theirs = randomize_(TimmMixer(img_size=32, patch_size=4, embed_dim=32, num_blocks=2, num_classes=10))
    _timm_parity(swinlab.create_model("mixer_pico").eval(), theirs, x)


def test_convert_detects_families_and_refuses_what_it_cannot_build():
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    small = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}
    sd = convert(TimmViT(**small).state_dict(), "timm")
    assert sd["abs_pos.pos_embed"].shape == (1, 8, 8, 32) and sd["cls_pos"].shape == (1, 1, 32)
    assert "pos_embed" not in sd
    with pytest.raises(ValueError, match="fc_norm"):
        convert(TimmViT(**small, global_pool="avg").state_dict(), "timm")
    with pytest.raises(ValueError, match="register tokens"):
        convert(TimmViT(**small, reg_tokens=4).state_dict(), "timm")
    with pytest.raises(ValueError, match="layer scale"):
        convert(TimmViT(**small, init_values=1e-5).state_dict(), "timm")
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, depth=1)
    with pytest.raises(ValueError, match="distillation"):
        convert(distilled.state_dict(), "timm")


# --- the papers' tables ----------------------------------------------------------------------------
# Swin paper, Table 1 (the ViT/DeiT rows): params (M) and "FLOPs" = G multiply-accumulates. profile()
# counts every matmul/conv MAC, the attention products QKᵀ and AV included; element-wise work (norms,
# softmax, GELU) is not counted, as in the paper. Measured: 86.86M/55.48G, 304.7M/191.07G,
# 22.05M/4.60G, 86.57M/17.56G. (ViT-L/16 is 304.7M by any count; the 307M quoted from the ViT paper
# is 0.75% off.)
VIT_PAPER = [
    ("vit_b16_384", 86, 55.4),
    ("vit_l16_384", 307, 190.7),
    ("deit_s", 22, 4.6),
    ("deit_b", 86, 17.5),
]


@pytest.mark.parametrize(("name", "params_m", "macs_g"), VIT_PAPER)
def test_vit_params_and_macs_match_the_swin_paper(name, params_m, macs_g):
    r = profile(_meta(name), memory=False)
    assert r["params"] == pytest.approx(params_m * 1e6, rel=0.01)
    assert r["macs"] == pytest.approx(macs_g * 1e9, rel=0.01)


def test_vit_macs_are_the_closed_form():
    """Per block 12·N·C² (qkv, proj, MLP) + 2·N²·C (QKᵀ and AV); plus the patch projection and head."""
    cfg = get_config("deit_s")
    n, c, p = 1 + 14 * 14, cfg.embed_dim, cfg.patch_size
    expected = cfg.depth * (12 * n * c * c + 2 * n * n * c) + 196 * c * 3 * p * p + c * cfg.num_classes
    assert profile(_meta("deit_s"), memory=False)["macs"] == expected


# MLP-Mixer paper, Table 1: params (M) without the head, given as whole millions, so the count must
# round to the paper's figure (±0.5M; a 1% band would fail S/32's 18.59M against "19" though both agree).
MIXER_PAPER = [
    ("mixer_s32", 19), ("mixer_s16", 18), ("mixer_b32", 60), ("mixer_b16", 59),
    ("mixer_l32", 206), ("mixer_l16", 207), ("mixer_h14", 431),
]


@pytest.mark.parametrize(("name", "params_m"), MIXER_PAPER)
def test_mixer_params_match_the_paper(name, params_m):
    r = profile(_meta(name, num_classes=0), memory=False)
    assert round(r["params"] / 1e6) == params_m, r["params"]
    assert r["macs"] > 0


# ResMLP paper, Table 1 (S12: 15M, 3.0G; S24: 30M, 6.0G) and gMLP paper, Table 1 (Ti: 6M, 1.4G;
# S: 20M, 4.5G), with the head, 224²; "FLOPs" there are multiply-accumulates. Measured (profile,
# every matmul MAC): 15.35M/3.01G, 30.02M/5.96G, 5.87M/1.33G, 19.42M/4.39G. gMLP's MACs are 5.1% (Ti)
# and 2.4% (S) under its paper's rounded figures, as timm's own count is (1.34G, 4.42G): the paper
# counts something the products do not (it does not say what); hence the 6% band.
MLP_PAPER = [("resmlp_s12", 15, 3.0), ("resmlp_s24", 30, 6.0), ("gmlp_ti", 6, 1.4), ("gmlp_s", 20, 4.5)]


@pytest.mark.parametrize(("name", "params_m", "gmacs"), MLP_PAPER)
def test_resmlp_and_gmlp_match_their_papers(name, params_m, gmacs):
    r = profile(_meta(name), memory=False)
    assert abs(r["params"] / 1e6 - params_m) <= 0.6, r["params"]
    assert abs(r["macs"] / 1e9 - gmacs) <= 0.06 * gmacs, r["macs"]


def test_resmlp_and_gmlp_blocks_are_the_papers():
    res = _meta("resmlp_s12").blocks[0]
    assert res.linear_tokens.weight.shape == (196, 196)  # one linear layer mixes the tokens
    assert res.ls1.shape == (384,)
    assert torch.equal(swinlab.create_model("resmlp_pico").blocks[0].ls1.detach(), torch.full((32,), 0.1))
    gate = swinlab.create_model("gmlp_pico").blocks[0].mlp_channels
    assert gate.fc1.weight.shape == (192, 32) and gate.fc2.weight.shape == (32, 96)  # D_C = 6C, halved
    assert gate.gate.proj.weight.abs().max() < 1e-4 and (gate.gate.proj.bias == 1).all()  # W≈0, b=1


def test_mixer_widths_are_the_papers():
    table = {"mixer_s32": (512, 256, 2048, 8), "mixer_b16": (768, 384, 3072, 12),
             "mixer_l16": (1024, 512, 4096, 24), "mixer_h14": (1280, 640, 5120, 32)}
    for name, (c, ds, dc, depth) in table.items():
        cfg = get_config(name)
        assert (cfg.embed_dim, cfg.token_mlp_dim, cfg.channel_mlp_dim, cfg.depth) == (c, ds, dc, depth)
        block = _meta(name).blocks[0]
        assert block.mlp_tokens.fc1.weight.shape == (ds, cfg.num_patches)
        assert block.mlp_channels.fc1.weight.shape == (dc, c)


# --- registry-wide checks on the new families ------------------------------------------------------
@pytest.mark.parametrize("name", VIT + MIXER)
def test_forward_shape_and_finite(name):
    model = _small(name, num_classes=5).eval()
    x = torch.randn(2, model.config.in_chans, *_input_size(model))
    with torch.no_grad():
        y = model(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    assert y.shape == (2, 5) and torch.isfinite(y).all()
    h, w = (-(-s // model.config.patch_size) for s in x.shape[2:])
    prefix = getattr(model, "num_prefix_tokens", 0)
    assert feats.shape == (2, prefix + h * w, model.num_features)
    assert pooled.shape == (2, model.num_features)


@pytest.mark.parametrize("name", [*SMALL, "deit_s", "mixer_s32"])
def test_every_parameter_gets_a_gradient(name):
    model = _small(name, drop_path_rate=0.0)
    x = torch.randn(2, model.config.in_chans, *_input_size(model))
    model(x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_model_same_output(name):
    torch.manual_seed(1)
    a = swinlab.create_model(name).eval()
    torch.manual_seed(1)
    b = swinlab.create_model(name).eval()
    x = torch.randn(2, a.config.in_chans, *a.config.img_size)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert torch.equal(a(x), a(x))


@pytest.mark.parametrize("name", ["vit_pico", "mixer_pico"])
def test_drop_path_is_stochastic_in_training_only(name):
    model = swinlab.create_model(name, drop_path_rate=0.5)
    x = torch.randn(8, 3, 32, 32)  # 8 samples: two passes drop the same ones with probability 2⁻⁸
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    rates = [b.drop_path1.p for b in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)


# --- ViT specifics -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(48, 48), (40, 24), (37, 51), (16, 16)])
def test_vit_takes_other_input_sizes(size):
    """The patch grid's position embedding is resampled bicubically to the input's grid."""
    model = randomize_(swinlab.create_model("vit_pico"))
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
        feats = model.forward_features(torch.randn(1, 3, *size))
    assert y.shape == (1, 10) and torch.isfinite(y).all()
    assert feats.shape[1] == 1 + math.ceil(size[0] / 4) * math.ceil(size[1] / 4)


def test_vit_resampled_position_embedding_is_the_bicubic_grid():
    model = swinlab.create_model("vit_pico").eval()
    x = torch.randn(1, 3, 48, 48)
    pos = model.abs_pos.pos_embed.permute(0, 3, 1, 2)  # (1, C, 8, 8)
    pos = F.interpolate(pos, size=(12, 12), mode="bicubic", align_corners=False)
    with torch.no_grad():
        tokens = model.patch_embed(x) + pos.permute(0, 2, 3, 1)  # (1, 12, 12, C)
        assert torch.equal(model.abs_pos(model.patch_embed(x)), tokens)


def test_vit_avg_pool_and_no_class_token():
    model = swinlab.create_model("vit_pico", class_token=False, global_pool="avg").eval()
    assert model.cls_token is None and model.num_prefix_tokens == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 64, 32)
        assert torch.allclose(model.forward_head(feats, pre_logits=True), feats.mean(1))


def test_vit_api():
    model = swinlab.create_model("vit_pico")
    assert model.no_weight_decay() == {"abs_pos.pos_embed", "cls_token", "cls_pos"}
    assert isinstance(model, VisionTransformer) and model.config == get_config("vit_pico")
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3) and model.config.num_classes == 3
    headless = swinlab.create_model("vit_pico", num_classes=0)
    assert headless(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_vit_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        ViTConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="global_pool must be one of"):
        ViTConfig(global_pool="max")
    with pytest.raises(ValueError, match="needs class_token=True"):
        ViTConfig(class_token=False)
    with pytest.raises(UnknownFieldError, match="ViTConfig has no field"):
        swinlab.create_model("deit_s", depths=(2, 2))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\)"):
        swinlab.create_model("vit_pico")(torch.randn(1, 1, 32, 32))


def test_attention_is_softmax_qk_v():
    """Attention against the formula written out: softmax(QKᵀ/√d)V per head, then proj."""
    attn = randomize_(Attention(dim=32, num_heads=4))
    x = torch.randn(2, 10, 32)
    q, k, v = attn.qkv(x).view(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)  # 3 × (B, h, N, d)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)  # (B, h, N, N)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 32))
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="not divisible"):
        Attention(dim=30, num_heads=4)


# --- Mixer specifics ---------------------------------------------------------------------------------
def test_mixer_rejects_another_patch_grid_and_says_what_works():
    model = swinlab.create_model("mixer_pico")
    with pytest.raises(ValueError, match=r"img_size=\(32, 32\).*64×64 image.*img_size=\(64, 64\)"):
        model(torch.randn(1, 3, 64, 64))
    assert model(torch.randn(1, 3, 29, 30)).shape == (1, 10)  # padded to the same 8×8 grid
    big = _meta("mixer_b16")
    with pytest.raises(ValueError, match=r"built for img_size=\(224, 224\).*14×14 grid"):
        big(torch.randn(1, 3, 64, 64, device="meta"))
    assert swinlab.create_model("mixer_pico", img_size=64)(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_mixer_token_mixing_acts_across_tokens_per_channel():
    """The token MLP mixes along the sequence axis: permuting the patches of the input changes the
    output (it is position-specific), which no per-token layer could do."""
    model = randomize_(swinlab.create_model("mixer_pico", num_classes=0))
    block = model.blocks[0]
    x = torch.randn(1, 64, 32)  # (B, S, C)
    with torch.no_grad():
        perm = torch.randperm(64)
        assert not torch.allclose(block(x)[:, perm], block(x[:, perm]), atol=1e-4)
        assert torch.allclose(block.mlp_channels(x)[:, perm], block.mlp_channels(x[:, perm]))


def test_mixer_api_and_config():
    model = swinlab.create_model("mixer_pico")
    assert isinstance(model, MlpMixer) and model.no_weight_decay() == set()
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    with pytest.raises(ValueError, match="hidden widths"):
        MixerConfig(embed_dim=1, token_mlp_ratio=0.5)
    with pytest.raises(UnknownFieldError, match="MixerConfig has no field"):
        swinlab.create_model("mixer_s32", num_heads=4)


def test_profile_counts_the_baselines():
    r = profile(swinlab.create_model("vit_pico"))
    assert r["stages"] == [] and r["attention_entries"] is None
    assert r["activation_bytes"] > 0
    assert profile(swinlab.create_model("mixer_pico"))["macs"] > 0
