"""Swin V2 (Liu et al., CVPR 2022): the paper's params/MACs, parity with every peer that builds it (timm,
torchvision, transformers, the official layout) at 256² and at odd non-square sizes, the peers' geometry
as config fields that the converters set, the attention backends, and training."""

import pytest
import torch

import swinlab
from conftest import assert_close_rel, assert_same_training_gradients, official_layout, parity_tol, randomize_
from swinlab.analysis import profile
from swinlab.errors import ConfigError
from swinlab.layers import ContinuousPositionBias
from swinlab.weights import convert, load_state_dict, peer_geometry

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TIMM = {
    "swinv2_t": "swinv2_tiny_window8_256", "swinv2_s": "swinv2_small_window8_256",
    "swinv2_b": "swinv2_base_window8_256", "swinv2_t_w16": "swinv2_tiny_window16_256",
    "swinv2_b_w12to16_256": "swinv2_base_window12to16_192to256",
}
# Sizes that are not multiples of 32 (nor, for some, of the patch): odd maps at every merge, maps padded
# to the windows, a last stage smaller than the 8×8 window.
ODD = [(201, 227), (97, 130), (130, 97), (64, 90)]


def _meta(name: str):
    with torch.device("meta"):
        return swinlab.create_model(name)


# The Swin V2 paper's models (official README: params M, MACs G). The paper rounds params to whole
# millions: swinlab's counts are timm's exactly, and within that rounding; MACs within 1%.
PAPER = [
    ("swinv2_t", 28, 5.9), ("swinv2_s", 50, 11.5), ("swinv2_b", 88, 20.3),
    ("swinv2_t_w16", 28, 6.6), ("swinv2_s_w16", 50, 12.6), ("swinv2_b_w16", 88, 21.8),
    ("swinv2_b_w12to24_384", 88, 54.7), ("swinv2_l_w12to16_256", 197, 47.5),
    ("swinv2_l_w12to24_384", 197, 115.4),
]


@pytest.mark.parametrize(("name", "params_m", "macs_g"), PAPER)
def test_params_and_macs_match_the_paper(name, params_m, macs_g):
    r = profile(_meta(name), memory=False)
    assert abs(r["params"] / 1e6 - params_m) <= 0.5
    assert r["macs"] == pytest.approx(macs_g * 1e9, rel=0.01)


@pytest.mark.parametrize("name", ["swinv2_t", "swinv2_b_w12to16_256"])
def test_params_equal_timms(name):
    with torch.device("meta"):
        theirs = timm.create_model(TIMM[name], pretrained=False)
    assert profile(_meta(name), memory=False)["params"] == sum(p.numel() for p in theirs.parameters())


def _timm_pair(name: str, size):
    theirs = randomize_(timm.create_model(TIMM[name], pretrained=False, img_size=size))
    sd = convert(theirs.state_dict(), "timm")
    ours = swinlab.create_model(name, img_size=size, **peer_geometry("timm", sd)).eval()
    load_state_dict(ours, sd)
    return ours, theirs


def test_timm_parity_at_256_and_odd_sizes():
    for size in [(256, 256), *ODD]:
        ours, theirs = _timm_pair("swinv2_t", size)
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ref = theirs(x)
            maps = theirs.forward_intermediates(x, intermediates_only=True)
            assert_close_rel(ours(x), ref, what=f"logits at {size}")
            for i, (a, b) in enumerate(zip(ours.forward_intermediates(x), maps, strict=True)):
                assert_close_rel(a, b, what=f"stage {i} map at {size}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swinv2_s", "swinv2_b", "swinv2_t_w16", "swinv2_b_w12to16_256"])
def test_timm_parity_larger_variants(name):
    ours, theirs = _timm_pair(name, swinlab.models.get_config(name).img_size)
    x = torch.randn(1, 3, *ours.config.img_size)
    with torch.no_grad():
        assert_close_rel(ours(x), theirs(x), what="logits")


def test_timm_geometry_matters_at_odd_sizes():
    """At 201×227 timm rolls before padding and drops the 1-pixel remainder: the paper's order or
    padding the remainder gives other logits (the fields load(source="timm") sets are needed)."""
    ours, theirs = _timm_pair("swinv2_t", (201, 227))
    x = torch.randn(1, 3, 201, 227)
    with torch.no_grad():
        ref = theirs(x)
        for change in ({"shift_order": "pad-roll"}, {"patch_remainder": "pad"}):
            ours.set_peer_geometry(**peer_geometry("timm", ours.state_dict()))
            ours.set_peer_geometry(**change)
            assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref), change


def test_torchvision_parity_at_256_and_odd_sizes():
    theirs = randomize_(torchvision.models.swin_v2_t())
    sd = convert(theirs.state_dict(), "torchvision")
    assert peer_geometry("torchvision", sd) == {"window_fit": "pad", "patch_remainder": "drop"}
    ours = swinlab.create_model("swinv2_t", **peer_geometry("torchvision", sd)).eval()
    load_state_dict(ours, sd)
    for size in [(256, 256), *ODD]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert_close_rel(ours(x), theirs(x), what=f"logits at {size}")
    # swinlab's default shrinks the window on the 4×5 last stage at 130×97; torchvision pads it to 8×8
    ours.set_peer_geometry(window_fit="axis")
    with torch.no_grad():
        ref = theirs(x)
        assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "tv"), [("swinv2_s", "swin_v2_s"), ("swinv2_b", "swin_v2_b")])
def test_torchvision_parity_larger_variants(name, tv):
    theirs = randomize_(getattr(torchvision.models, tv)())
    ours = swinlab.create_model(name, window_fit="pad", patch_remainder="drop").eval()
    load_state_dict(ours, convert(theirs.state_dict(), "torchvision"))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert_close_rel(ours(x), theirs(x), what="logits")


def _hf_swinv2():
    transformers = pytest.importorskip("transformers")
    config = transformers.Swinv2Config(image_size=256, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2],
                                       num_heads=[3, 6, 12, 24], window_size=8, drop_path_rate=0.0,
                                       hidden_act="gelu", num_labels=1000)
    return randomize_(transformers.Swinv2ForImageClassification(config))


def test_hf_transformers_parity_at_256_and_odd_sizes():
    """transformers fixes every stage's window and shift when the model is built (window_fit="built"):
    at 97×130 its third stage (7×9, padded to 8×16) still shifts along its 8 rows."""
    theirs = _hf_swinv2()
    sd = convert(theirs.state_dict(), "hf")
    assert peer_geometry("hf", sd) == {"window_fit": "built"}
    ours = swinlab.create_model("swinv2_t", window_fit="built").eval()
    load_state_dict(ours, sd)
    for size in [(256, 256), *ODD]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert_close_rel(ours(x), theirs(pixel_values=x).logits, what=f"logits at {size}")
    x = torch.randn(1, 3, 97, 130)
    with torch.no_grad():
        ref = theirs(pixel_values=x).logits
        ours.set_peer_geometry(window_fit="pad")
        assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref)


def test_official_layout_parity():
    theirs = randomize_(timm.create_model(TIMM["swinv2_t"], pretrained=False))
    official = official_layout(theirs.state_dict())
    assert "layers.0.downsample.reduction.weight" in official["model"]
    ours = swinlab.create_model("swinv2_t").eval()
    load_state_dict(ours, convert(official, "official"))
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        assert_close_rel(ours(x), theirs(x), what="logits")


@pytest.mark.parametrize("source", ["timm", "hf"])
def test_peer_checkpoint_loads_as_swin_v2_with_the_peers_geometry(tmp_path, source):
    theirs = randomize_(timm.create_model(TIMM["swinv2_t"], pretrained=False, img_size=(201, 227))) \
        if source == "timm" else _hf_swinv2()
    torch.save(theirs.state_dict(), tmp_path / "peer.pth")
    model = swinlab.weights.load(tmp_path / "peer.pth", source=source, img_size=(201, 227) if source == "timm"
                                 else 256).eval()
    cfg = model.config
    assert (cfg.attention, cfg.position, cfg.res_post_norm, cfg.k_bias) == ("cosine", "cpb", True, False)
    assert cfg.depths == (2, 2, 6, 2) and cfg.num_heads == (3, 6, 12, 24) and cfg.window_size == (8, 8)
    x = torch.randn(1, 3, 201, 227)
    with torch.no_grad():
        ref = theirs(x) if source == "timm" else theirs(pixel_values=x).logits
        assert_close_rel(model(x), ref, what="logits")
    swinlab.weights.save(model, tmp_path / "ours.safetensors")  # the geometry travels with the checkpoint
    again = swinlab.weights.load(tmp_path / "ours.safetensors").eval()
    assert again.config == cfg
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_parity_detects_a_wrong_v2_model():
    theirs = randomize_(timm.create_model(TIMM["swinv2_t"], pretrained=False))
    sd = convert(theirs.state_dict(), "timm")
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = theirs(x)
    for override in ({"attention": "dot"}, {"mask_shifted": False}, {"shift": False},
                     {"pretrained_window_sizes": (12, 12, 12, 6)}):
        ours = swinlab.create_model("swinv2_t", **override).eval()
        load_state_dict(ours, sd, strict=False)
        with torch.no_grad():
            assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref), override


def test_continuous_bias_coordinates_equal_timms_with_a_pretrained_window():
    from timm.models.swin_transformer_v2 import WindowAttention as TimmWindowAttention

    theirs = TimmWindowAttention(dim=32, window_size=(16, 16), num_heads=2, pretrained_window_size=(12, 12))
    ours = ContinuousPositionBias(num_heads=2, pretrained_window=(12, 12))
    torch.testing.assert_close(ours.coords((16, 16)), theirs.relative_coords_table.reshape(-1, 2))
    assert ours.coords((16, 16)).abs().max() > 1  # offsets beyond the pretraining window extrapolate
    ours.mlp.load_state_dict(theirs.cpb_mlp.state_dict())
    with torch.no_grad():
        table = ours.table_for((16, 16))
    assert table.shape == (31 * 31, 2) and table.min() > 0 and table.max() < 16


def test_logit_scale_is_clamped_at_log_100():
    model = swinlab.create_model("swinv2_pico").eval()
    randomize_(model)
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for value in (torch.log(torch.tensor(100.0)), torch.tensor(7.0)):  # τ = 100, and e⁷ clamped to 100
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("logit_scale"):
                    p.fill_(value)
            outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.parametrize("backend", ["sdpa", "native"])
def test_backends_match_the_reference_and_cached_bias_follows_the_weights(backend):
    if backend not in swinlab.kernels.available_backends():
        pytest.skip(f"{backend} not available")
    ref = randomize_(swinlab.create_model("swinv2_pico", attention_backend="reference"))
    fast = swinlab.create_model("swinv2_pico", attention_backend=backend).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 35, 41)  # pads to the windows in both stages
    with torch.no_grad():
        before = fast(x)
        torch.testing.assert_close(before, ref(x), rtol=1e-5, atol=1e-5)
        for m in (ref, fast):  # a change of the CPB MLP must reach the cached tables
            for name, p in m.named_parameters():
                if name.endswith("rel_pos.mlp.2.weight"):
                    p.mul_(-1.0)
        after = fast(x)
        torch.testing.assert_close(after, ref(x), rtol=1e-5, atol=1e-5)
        assert (after - before).abs().max() > 1e-2  # the tables were re-evaluated, not reused stale
    if backend == "native":
        return
    assert_same_training_gradients(fast, ref, x)


def _unit_post_norms(model):
    """Res-post norms start at zero (no gradient reaches the attention); give them unit gains."""
    for stage in model.stages:
        for block in stage.blocks:
            torch.nn.init.ones_(block.norm1.weight), torch.nn.init.ones_(block.norm2.weight)
    return model


def test_cached_table_is_recomputed_after_an_optimizer_step():
    model = _unit_post_norms(swinlab.create_model("swinv2_pico")).eval()
    attn = model.stages[0].blocks[0].attn
    with torch.no_grad():
        t0 = attn.rel_pos.table_for((4, 4))
        assert attn.rel_pos.table_for((4, 4)) is t0  # cached in inference
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).mean().backward()
    opt.step()
    with torch.no_grad():
        assert not torch.equal(attn.rel_pos.table_for((4, 4)), t0)


def test_inference_mode_caches_the_table_and_the_merged_bias():
    """Under inference_mode the table is cached as an ordinary tensor, so SDPA's merged bias+mask cache
    (which needs a version counter) serves it too: the second forward gathers nothing."""
    from swinlab.kernels import sdpa

    model = randomize_(swinlab.create_model("swinv2_pico", attention_backend="sdpa")).eval()
    attn = model.stages[0].blocks[1].attn  # a shifted block: bias and mask merged
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        first = model(x)
        table = attn.rel_pos.table_for((4, 4))
        assert not table.is_inference() and attn.rel_pos.table_for((4, 4)) is table
        cached = list(sdpa._entries_for(table).values())
        assert cached, "no merged bias cached for the CPB table"
        second = model(x)
        assert next(iter(sdpa._entries_for(table).values())) is cached[0]  # reused, not recomputed
    torch.testing.assert_close(first, second)
    with torch.no_grad():
        torch.testing.assert_close(model(x), first)


def test_training_lowers_the_loss_and_reaches_every_v2_parameter():
    model = _unit_post_norms(swinlab.create_model("swinv2_pico"))
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    assert losses[-1] < 0.85 * losses[0], losses  # 2.32 → 1.87 measured
    grads = {n: p.grad for n, p in model.named_parameters()}
    for suffix in ("logit_scale", "q_bias", "v_bias", "rel_pos.mlp.0.weight", "rel_pos.mlp.2.weight",
                   "downsample.norm.weight"):
        hits = [g for n, g in grads.items() if n.endswith(suffix)]
        assert hits and all(g is not None and g.abs().sum() > 0 for g in hits), suffix


def test_res_post_norm_starts_every_residual_branch_at_zero():
    model = swinlab.create_model("swinv2_pico").eval()
    block = model.stages[0].blocks[0]
    x = torch.randn(1, 16, 16, 32)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    assert model.stages[1].downsample.norm.weight.shape == (64,)  # V2 merging normalizes its 2C outputs


def test_v2_parameters_take_no_weight_decay():
    names = swinlab.create_model("swinv2_pico").no_weight_decay()
    assert any(n.endswith("logit_scale") for n in names)
    assert any(n.endswith("rel_pos.mlp.0.weight") for n in names)
    assert not any(n.endswith("attn.qkv.weight") for n in names)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"pretrained_window_sizes": (12, 12)}, "one entry per stage"),
    ({"attention": "softmax"}, "attention must be one of"),
    ({"position": "rel", "pretrained_window_sizes": (12, 12, 12, 6)}, "position='cpb'"),
    ({"window_fit": "grow"}, "window_fit must be one of"),
    ({"patch_remainder": "crop"}, "patch_remainder must be one of"),
])
def test_bad_v2_config_is_a_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        swinlab.create_model("swinv2_t", **overrides)
