"""The cross-stage global-context extension: wiring, gradients, determinism, shapes, cost."""

import pytest
import torch

import swinlab
from swinlab.analysis import profile
from swinlab.layers.global_context import GlobalContextConfig, GlobalContextFusion, grid_shape, sample_tokens
from swinlab.weights import load, save


def test_config_parsing():
    assert GlobalContextConfig.parse(None) is None and GlobalContextConfig.parse("off") is None
    assert GlobalContextConfig.parse("max:pool") == GlobalContextConfig(fusion="max", sampler="pool")
    assert GlobalContextConfig.parse("concat:grid:64").tokens == 64
    assert GlobalContextConfig.parse(True) == GlobalContextConfig()
    with pytest.raises(ValueError, match="fusion must be one of"):
        GlobalContextConfig.parse("sum")
    with pytest.raises(ValueError, match="sampler must be one of"):
        swinlab.create_model("swin_pico", global_context="add:everything")


def test_swin_t_matrices_are_as_specified():
    """Swin-T at 224²: 784 tokens attend to 196, then 196 to 49, then 49 to 12 (K/4 per stage)."""
    p = profile(swinlab.create_model("swin_t_gc"), memory=False)
    gc = p["global_context"]
    assert [(m["queries"], m["keys"]) for m in gc["matrices"]] == [(784, 196), (196, 49), (49, 12)]
    base = profile(swinlab.create_model("swin_t"), memory=False)
    assert p["params"] - base["params"] == gc["params"]
    assert p["macs"] - base["macs"] == gc["macs"]
    # a small fraction of Swin-T: +8.2% params, +5.8% MACs
    assert gc["params"] / base["params"] < 0.09 and gc["macs"] / base["macs"] < 0.06


@pytest.mark.parametrize("sampler", ["grid", "pool", "random"])
def test_sampled_token_counts(sampler):
    x = torch.randn(2, 56, 56, 8)
    assert sample_tokens(x, 196, sampler, training=True).shape == (2, 196, 8)
    assert sample_tokens(torch.randn(1, 3, 3, 8), 196, sampler, training=True).shape[1] == 9  # ≤ H·W
    assert grid_shape((14, 28), 50) == (5, 10)


def test_grid_takes_strided_tokens_and_pool_averages_cells():
    x = torch.arange(16.0).view(1, 4, 4, 1)
    # the centre token of each 2×2 cell (rounded down-right), and each cell's mean
    assert sample_tokens(x, 4, "grid", training=False).flatten().tolist() == [5.0, 7.0, 13.0, 15.0]
    assert sample_tokens(x, 4, "pool", training=False).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_random_is_fresh_in_training_and_grid_in_eval():
    x = torch.randn(1, 16, 16, 4)
    a, b = (sample_tokens(x, 8, "random", training=True) for _ in range(2))
    assert not torch.equal(a, b)
    in_eval = sample_tokens(x, 8, "random", training=False)
    assert torch.equal(in_eval, sample_tokens(x, 8, "grid", training=False))


@pytest.mark.parametrize("fusion", ["add", "max", "concat"])
@pytest.mark.parametrize("sampler", ["random", "grid", "pool"])
def test_wired_in_deterministic_in_eval_and_gradients_reach_the_sampled_stage(fusion, sampler):
    gc = f"{fusion}:{sampler}:16"
    model = swinlab.create_model("swin_pico", global_context=gc)
    base = swinlab.create_model("swin_pico")
    base.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    model.eval(), base.eval()
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, model(x))  # evaluation is deterministic for every sampler
        assert (y - base(x)).abs().max() > 1e-4  # the extension changes the output
    model.train()
    # Stage 1's output feeds stage 2 and, as the sampled context, the fusion after stage 2. Cutting
    # the context path (detaching the fusion's context input) leaves the forward unchanged; the
    # gradient of stage 1's weights must then change by the context path's share.
    full = _stage1_grads(model, x)
    cut = model.global_context[0].register_forward_pre_hook(lambda m, args: (args[0], args[1].detach()))
    try:
        without = _stage1_grads(model, x)
    finally:
        cut.remove()
    assert torch.equal(full["out"], without["out"])  # same function: only the gradient's route differs
    assert full["grad"].abs().max() > 0
    share = (full["grad"] - without["grad"]).abs().max()
    assert share > 1e-3 * full["grad"].abs().max(), f"context path adds {share:.3g} to stage 1's gradient"


def _stage1_grads(model, x, seed=1):
    """The loss and the flattened gradient of every stage-1 parameter; the same random draws (token
    sampling, drop path) on every call."""
    torch.manual_seed(seed)
    out = model(x)
    params = list(model.stages[0].parameters())
    grads = torch.autograd.grad(out.square().sum(), params)
    return {"out": out.detach(), "grad": torch.cat([g.flatten() for g in grads])}


def test_context_gradient_flows_into_the_previous_stage_tokens():
    fusion = GlobalContextFusion(dim=16, context_dim=8, num_heads=2, tokens=4, fusion="add", sampler="pool")
    y = torch.randn(1, 4, 4, 16)
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    fusion(y, x).sum().backward()
    assert x.grad is not None and (x.grad != 0).float().mean() > 0.9  # pooling touches every token


@pytest.mark.parametrize(("fusion", "extra"), [("add", 0), ("max", 0), ("concat", 2 * 64 * 64 + 64)])
def test_fusion_shapes(fusion, extra):
    module = GlobalContextFusion(dim=64, context_dim=32, num_heads=4, tokens=16, fusion=fusion,
                                 sampler="grid")
    y, x = torch.randn(2, 5, 7, 64), torch.randn(2, 10, 14, 32)
    assert module(y, x).shape == y.shape
    if fusion == "concat":
        assert module.fuse.weight.shape == (64, 128)
    base = GlobalContextFusion(dim=64, context_dim=32, num_heads=4, tokens=16, fusion="add", sampler="grid")
    assert sum(p.numel() for p in module.parameters()) - sum(p.numel() for p in base.parameters()) == extra
    if fusion == "max":
        out = module(y, x)
        assert torch.all(out >= y)


@pytest.mark.parametrize("switch", [{"shift": False}, {"mask_shifted": False}, {"position": "abs+rel"},
                                    {"position": "rel-only"}, {"position": "none"}])
def test_works_with_every_ablation_switch_and_any_size(switch):
    model = swinlab.create_model("swin_pico", global_context="concat:random", **switch).eval()
    for size in [(32, 32), (24, 40), (9, 13)]:
        assert torch.isfinite(model(torch.randn(1, 3, *size))).all()


def test_checkpoint_keeps_the_extension(tmp_path):
    model = swinlab.create_model("swin_pico", global_context="max:pool:16")
    loaded = load(save(model, tmp_path / "gc.safetensors"))
    assert loaded.config.global_context == GlobalContextConfig(fusion="max", sampler="pool", tokens=16)
