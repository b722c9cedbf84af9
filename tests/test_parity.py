"""Numerical parity with the Swin implementations users already trust (timm, torchvision, and the
official checkpoint layout): random weights, converted into swinlab, float32, within
:func:`conftest.assert_close_rel` (max |Δ| ≤ max(1e-4, 5e-6 · max |reference|))."""

import re

import pytest
import torch

import swinlab
from conftest import assert_close_rel, official_layout, parity_tol, randomize_
from swinlab.weights import convert, load_state_dict, peer_geometry

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TIMM = {  # swinlab name -> timm name
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
    "swin_l": "swin_large_patch4_window7_224",
    "swin_b_384": "swin_base_patch4_window12_384",
    "swin_l_384": "swin_large_patch4_window12_384",
}
TORCHVISION = {"swin_t": "swin_t", "swin_s": "swin_s", "swin_b": "swin_b"}
SLOW = {"swin_l", "swin_l_384", "swin_b_384", "swin_b", "swin_s"}
# Swin-L converts as Swin-B with other widths (swin_b_384 checks window 12 at 384²): `make test-all` only.
EXHAUSTIVE = {"swin_l", "swin_l_384"}


def _params(names, slow=SLOW):
    return [pytest.param(n, marks=[pytest.mark.slow, *([pytest.mark.exhaustive] if n in EXHAUSTIVE else [])])
            if n in slow else n for n in names]


def _compare(ours, theirs_logits, theirs_maps, x):
    with torch.no_grad():
        logits = ours(x)
        maps = ours.forward_intermediates(x)
    assert_close_rel(logits, theirs_logits, what="logits")
    assert len(maps) == len(theirs_maps)
    for i, (a, b) in enumerate(zip(maps, theirs_maps, strict=True)):
        assert_close_rel(a, b, what=f"stage {i} map")
    return logits


# Sizes where both peers agree with the paper's geometry. timm rolls *before* padding a map that is
# not a multiple of the window (its mask then no longer matches the rolled regions): parity with it
# there takes shift_order="roll-pad" (test_timm_parity_where_maps_pad_to_the_windows); below, at
# sizes needing no window padding, the default order; torchvision (pad, then roll, which swinlab
# follows by default) also at sizes that need padding and are not multiples of 32.
@pytest.mark.parametrize("name", _params(TIMM))
def test_timm_parity(name):
    cfg = swinlab.models.get_config(name)
    sizes = [cfg.img_size]
    if name == "swin_t":
        sizes += [(224, 448), (448, 224)]
    for size in sizes:
        _timm_compare(name, size)


def _timm_compare(name: str, size, **overrides):
    """timm's model ``name`` at ``size`` (random weights) against swinlab's with them converted in:
    logits and every stage map. Returns ``(ours, x, timm's logits)``."""
    theirs = randomize_(timm.create_model(TIMM[name], pretrained=False, img_size=size))
    ours = swinlab.create_model(name, img_size=size, **overrides).eval()
    load_state_dict(ours, convert(theirs.state_dict(), "timm"))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = theirs(x)
        ref_maps = theirs.forward_intermediates(x, intermediates_only=True)
    _compare(ours, ref, ref_maps, x)
    return ours, x, ref


@pytest.mark.parametrize("size", [(200, 232), (256, 256), (201, 227)])
def test_timm_parity_where_maps_pad_to_the_windows(size):
    """timm rolls the unpadded map and then pads (shift_order="roll-pad", which load(source="timm")
    sets, with patch_remainder="drop": timm ignores the last rows/columns of a side that is not a
    multiple of the patch, as at 201×227); the paper's order (pad, then roll) gives other logits there."""
    ours, x, ref = _timm_compare("swin_t", size, shift_order="roll-pad", patch_remainder="drop")
    ours.set_peer_geometry(shift_order="pad-roll")
    with torch.no_grad():
        assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref)


def test_timm_checkpoint_loads_with_timms_order(tmp_path):
    theirs = randomize_(timm.create_model(TIMM["swin_t"], pretrained=False, img_size=(200, 232)))
    torch.save(theirs.state_dict(), tmp_path / "timm.pth")
    model = swinlab.weights.load(tmp_path / "timm.pth", source="timm", img_size=(200, 232))
    assert model.config.shift_order == "roll-pad"
    x = torch.randn(1, 3, 200, 232)
    with torch.no_grad():
        assert_close_rel(model.eval()(x), theirs(x), what="logits")


def _torchvision_forward(model, x):
    maps, h = [], x
    for i, layer in enumerate(model.features):
        h = layer(h)
        if i % 2:  # after each stage
            maps.append(h.permute(0, 3, 1, 2))
    logits = model.head(model.flatten(model.avgpool(model.permute(model.norm(h)))))
    return logits, maps


@pytest.mark.parametrize("name", _params(TORCHVISION))
def test_torchvision_parity(name):
    theirs = randomize_(getattr(torchvision.models, TORCHVISION[name])())
    ours = swinlab.create_model(name).eval()
    load_state_dict(ours, convert(theirs.state_dict(), "torchvision"))
    # 224²; 256² (maps 64/32/16/8: every stage pads to the window); 200×232 (not multiples of 32: odd
    # maps before merging, and a 7×8 last stage where only one axis shifts).
    for size in [(224, 224), (256, 256), (200, 232)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ref, ref_maps = _torchvision_forward(theirs, x)
            assert (ref - theirs(x)).abs().max() == 0  # our re-run of torchvision's forward is its forward
        _compare(ours, ref, ref_maps, x)


def test_v1_torchvision_parity_where_maps_are_smaller_than_the_window():
    """torchvision pads a 5×6 last stage up to the 7×7 window (and ignores the 2-pixel remainder of 130):
    with the fields load(source="torchvision") sets, swinlab answers as torchvision does there too."""
    theirs = randomize_(torchvision.models.swin_t())
    sd = convert(theirs.state_dict(), "torchvision")
    ours = swinlab.create_model("swin_t", **peer_geometry("torchvision", sd)).eval()
    load_state_dict(ours, sd)
    for size in [(160, 192), (97, 130)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ref = theirs(x)
            assert_close_rel(ours(x), ref, what=f"logits at {size}")
    ours.set_peer_geometry(window_fit="axis")  # swinlab's default shrinks the window instead
    with torch.no_grad():
        assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref)


def test_official_layout_parity():
    theirs = randomize_(timm.create_model(TIMM["swin_t"], pretrained=False))
    official = official_layout(theirs.state_dict())
    assert "layers.0.downsample.reduction.weight" in official["model"]
    ours = swinlab.create_model("swin_t").eval()
    load_state_dict(ours, convert(official, "official"))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = theirs(x)
        ref_maps = theirs.forward_intermediates(x, intermediates_only=True)
    _compare(ours, ref, ref_maps, x)


def test_parity_detects_a_wrong_model():
    """The comparison is sensitive: swinlab without the shift (or without the mask) differs."""
    theirs = randomize_(timm.create_model(TIMM["swin_t"], pretrained=False))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = theirs(x)
        ref_map = theirs.forward_intermediates(x, intermediates_only=True)[0]
    for override in ({"shift": False}, {"mask_shifted": False}, {"position": "none"}):
        ours = swinlab.create_model("swin_t", **override).eval()
        load_state_dict(ours, convert(theirs.state_dict(), "timm"), strict=False)
        with torch.no_grad():
            assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref), override
            assert (ours.forward_intermediates(x)[0] - ref_map).abs().max() > 1.0, override


# --- Hugging Face transformers (a test dependency only) --------------------------------------------
HF = {"swin_t": ((2, 2, 6, 2), (3, 6, 12, 24), 96, 7), "swin_s": ((2, 2, 18, 2), (3, 6, 12, 24), 96, 7)}


def _hf_swin(name: str):
    transformers = pytest.importorskip("transformers")
    depths, heads, dim, window = HF[name]
    config = transformers.SwinConfig(image_size=224, patch_size=4, embed_dim=dim, depths=list(depths),
                                     num_heads=list(heads), window_size=window, drop_path_rate=0.0,
                                     hidden_act="gelu", num_labels=1000)
    return randomize_(transformers.SwinForImageClassification(config))


@pytest.mark.parametrize("name", ["swin_t", pytest.param("swin_s", marks=pytest.mark.slow)])
def test_hf_transformers_parity(name):
    """transformers' SwinForImageClassification state dict (source="hf") answers as transformers does:
    224², and 200×232 (sides that pad to the patch, to the windows and at every merge)."""
    theirs = _hf_swin(name)
    ours = swinlab.create_model(name, window_fit="min-side").eval()  # what weights.load(source="hf") sets
    load_state_dict(ours, convert(theirs.state_dict(), "hf"))
    for size in [(224, 224), (200, 232), (232, 200), (201, 227)]:  # transformers pads 201×227 to the patch
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ref = theirs(pixel_values=x).logits
            assert_close_rel(ours(x), ref, what=f"logits at {size}")
    # swinlab's default rule shifts the 7×8 last stage along its 8 (as torchvision does): not transformers
    ours.set_window_fit("axis")
    with torch.no_grad():
        assert (ours(x) - ref).abs().max() > 100 * parity_tol(ref)


def test_hf_checkpoint_loads_with_transformers_rule(tmp_path):
    theirs = _hf_swin("swin_t")
    torch.save(theirs.state_dict(), tmp_path / "hf.bin")
    model = swinlab.weights.load(tmp_path / "hf.bin", source="hf")  # variant inferred from the shapes
    assert model.config.window_fit == "min-side" and model.config.depths == (2, 2, 6, 2)
    x = torch.randn(1, 3, 200, 232)
    with torch.no_grad():
        assert_close_rel(model.eval()(x), theirs(pixel_values=x).logits, what="logits")


def _hf_v4_key(k: str) -> str:
    """A transformers 5 Swin key in transformers 4's layout (and back unchanged if already 4's)."""
    names = {"q": "query", "k": "key", "v": "value"}
    k = re.sub(r"\.attention\.([qkv])_proj\.", lambda m: f".attention.self.{names[m.group(1)]}.", k)
    k = k.replace(".attention.o_proj.", ".attention.output.dense.")
    k = k.replace(".attention.relative_position_bias.relative_position_bias_table",
                  ".attention.self.relative_position_bias_table")
    return k.replace(".mlp.fc1.", ".intermediate.dense.").replace(".mlp.fc2.", ".output.dense.")


def test_hf_conversion_refuses_what_it_is_not():
    theirs = _hf_swin("swin_t")
    sd = theirs.state_dict()
    bare = {k.removeprefix("swin."): v for k, v in sd.items() if k.startswith("swin.")}
    converted = convert(bare, "hf")  # a bare SwinModel's keys convert too (no head)
    assert "stages.0.blocks.0.attn.qkv.weight" in converted and "head.weight" not in converted
    v4 = {_hf_v4_key(k): v for k, v in sd.items()}  # the hub checkpoints' layout (transformers 4)
    assert v4.keys() != sd.keys()
    for k, v in convert(v4, "hf").items():
        assert torch.equal(v, convert(sd, "hf")[k]), k
    key = next(k for k in sd if k.endswith("layers.0.blocks.0.attention.k_proj.weight")
               or k.endswith("layers.0.blocks.0.attention.self.key.weight"))
    del sd[key]
    with pytest.raises(ValueError, match=r"\['query', 'value'\] of query/key/value weights"):
        convert(sd, "hf")
    with pytest.raises(ValueError, match="not a transformers Swin state dict"):
        convert({"layers.0.blocks.0.attn.qkv.weight": torch.zeros(1)}, "hf")
