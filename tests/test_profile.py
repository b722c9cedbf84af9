"""The profiler against the Swin paper's Table 1 and the arithmetic of window attention (Sec. 3.2)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from swinlab import create_model
from swinlab.analysis import profile


def _meta(name: str, **overrides) -> nn.Module:
    """The preset built on the meta device: shapes only, instant even for Swin-L."""
    with torch.device("meta"):
        return create_model(name, **overrides)


# Table 1 of Liu et al. (2021): params (M) and "FLOPs" (G multiply-accumulates).
PAPER = [
    ("swin_t", 28.3, 4.5),
    ("swin_s", 49.6, 8.7),
    ("swin_b", 87.8, 15.4),
    ("swin_b_384", 87.9, 47.0),
    ("swin_l_384", 197.0, 103.9),
]


@pytest.mark.parametrize(("name", "params_m", "macs_g"), PAPER)
def test_params_and_macs_match_the_paper(name, params_m, macs_g):
    r = profile(_meta(name), memory=False)
    assert r["params"] == pytest.approx(params_m * 1e6, rel=0.01)
    assert r["macs"] == pytest.approx(macs_g * 1e9, rel=0.01)
    assert r["flops"] == 2 * r["macs"]


def test_macs_of_a_plain_model_are_counted_exactly():
    class Tiny(nn.Module):  # no window attention: stages are skipped
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(img_size=16, in_chans=3)
            self.conv = nn.Conv2d(3, 8, kernel_size=4, stride=4)
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))  # (B, 128) → (B, 10)

    r = profile(Tiny())
    assert r["macs"] == 4 * 4 * 8 * (3 * 4 * 4) + 128 * 10
    assert r["params"] == 8 * 3 * 16 + 8 + 128 * 10 + 10
    assert r["stages"] == []
    assert r["attention_entries"] is None and r["global_attention_entries"] is None


def test_stage_one_of_swin_t_at_224():
    r = profile(_meta("swin_t"), memory=False)
    s = r["stages"][0]
    assert s["map_size"] == (56, 56)
    assert s["blocks"] == 2
    assert s["windows"] == [{"window": (7, 7), "shift": (0, 0)}, {"window": (7, 7), "shift": (3, 3)}]
    assert s["num_windows"] == 64 and s["window_tokens"] == 49
    assert s["attention_entries"] == 64 * 49 * 49  # ≈ 154k = M²·H·W
    assert s["global_attention_entries"] == 3136**2  # ≈ 9.8M = (H·W)²
    assert s["ratio"] == pytest.approx(49 / 3136)
    assert [t["map_size"] for t in r["stages"]] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert [t["blocks"] for t in r["stages"]] == [2, 2, 6, 2]
    # The 7×7 last stage is one window, so the shift is dropped there.
    assert r["stages"][3]["windows"][1] == {"window": (7, 7), "shift": (0, 0)}
    assert r["attention_entries"] == sum(
        t["attention_entries"] * t["blocks"] * t["num_heads"] for t in r["stages"])


def test_windowed_attention_is_linear_in_pixels_global_quadratic():
    model = _meta("swin_t")
    small, large = (profile(model, img_size=s, memory=False) for s in (224, 448))
    assert large["attention_entries"] == 4 * small["attention_entries"]
    assert large["global_attention_entries"] == 16 * small["global_attention_entries"]
    assert large["stages"][0]["map_size"] == (112, 112)
    assert large["macs"] == pytest.approx(4 * small["macs"], rel=0.01)


def test_windows_are_counted_on_the_padded_map():
    r = profile(_meta("swin_pico"), img_size=(36, 50), memory=False)
    s = r["stages"][0]
    assert s["map_size"] == (18, 25)  # 36/2 × 50/2
    assert s["num_windows"] == 5 * 7  # ⌈18/4⌉ × ⌈25/4⌉
    assert s["attention_entries"] == 35 * 16 * 16


def test_activation_bytes_grow_linearly_with_batch():
    model = create_model("swin_pico")
    one, two, four = (profile(model, batch_size=b)["activation_bytes"] for b in (1, 2, 4))
    assert one > 0
    assert two == pytest.approx(2 * one, rel=0.01)
    assert four == pytest.approx(4 * one, rel=0.01)


def test_meta_and_real_passes_agree_and_leave_the_model_alone():
    model = create_model("swin_pico").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    meta, real = profile(model, batch_size=2), profile(model, batch_size=2, device="cpu")
    assert meta["device"] == "meta" and real["device"] == "cpu"
    assert meta["macs"] == real["macs"] and meta["stages"] == real["stages"]
    # The CPU pass shares one cached relative-position index across blocks; meta copies it per block.
    assert meta["activation_bytes"] == pytest.approx(real["activation_bytes"], rel=0.01)
    assert real["peak_memory_bytes"] is None
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        profile(_meta("swin_pico"), img_size=0)
    with pytest.raises(ValueError, match="meta device"):
        profile(_meta("swin_pico"), device="cpu")


def test_profiling_on_the_meta_device_leaves_no_meta_tensor_in_the_caches():
    """A model profiled under ``with torch.device("meta")`` (as the study report does) must not leave
    meta tensors in the window caches for the next model of the same geometry to trip on."""
    from swinlab.functional import windows

    windows._relative_position_index_cached.cache_clear()
    with torch.device("meta"):
        profile(create_model("swin_pico", num_classes=7), memory=False)
    model = create_model("swin_pico", num_classes=7)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 7) and torch.isfinite(out).all()
