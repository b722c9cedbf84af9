import re

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with random values far from the init, scaled so that attention is
    peaked rather than uniform (weights ~ N(0, 4/fan_in), norm gains ~ 1 ± 0.5, biases and
    position tables ~ N(0, 0.5²) / N(0, 1)): a parity test then exercises every weight, and a wrong
    window, shift, mask or bias shows. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "table" in name or "pos" in name:
                p.copy_(r)
            elif p.ndim > 1:
                p.copy_(r * 2.0 / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.5 * r)
            else:
                p.copy_(0.5 * r)
    return model.eval()


# --- parity with peer implementations (timm, torchvision) -----------------------------------------
# One rule for every parity test, float32: max |Δ| ≤ max(PARITY_FLOOR, PARITY_REL · max |reference|).
# The relative term: randomized weights (randomize_) give stage maps of magnitude ~50, where GEMMs that
# sum in another order (swinlab's oneDNN, the peers' MKL) differ by ~2e-6 of the magnitude;
# torchvision's own float32 swin_t is 8.7e-5 from its float64 value on such a map. The floor covers
# outputs near zero. Every ablation switch moves the logits by > 1e-2 and the maps by > 1, far above it.
PARITY_REL = 5e-6
PARITY_FLOOR = 1e-4


def parity_tol(reference: torch.Tensor, *, rel: float = PARITY_REL, floor: float = PARITY_FLOOR) -> float:
    """The largest |Δ| a float32 parity test accepts against ``reference``."""
    return max(floor, rel * reference.abs().max().item())


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, *, what: str, rel: float = PARITY_REL,
                     floor: float = PARITY_FLOOR) -> None:
    """Assert that ``actual`` (swinlab) matches ``expected`` (a peer) within :func:`parity_tol`; the
    message names ``what``, both shapes or the max error, the tolerance and the reference's magnitude."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    err = (actual.detach() - expected.detach()).abs().max().item()
    tol = parity_tol(expected, rel=rel, floor=floor)
    assert err <= tol, (f"{what}: max |Δ| = {err:.3g} > tolerance {tol:.3g} "
                        f"(max |reference| {expected.abs().max().item():.3g})")


def official_layout(timm_sd: dict) -> dict:
    """A timm ≥ 0.9 Swin (V1 or V2) state dict → the microsoft/Swin-Transformer layout: merging at the
    *end* of stages, ``head``, the index/coordinate buffers saved, wrapped as ``{"model": ...}``."""
    out = {}
    for k, v in timm_sd.items():
        m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", k)
        if m:
            k = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        k = k.replace("head.fc.", "head.")
        out[k] = v
        if k.endswith("attn.relative_position_bias_table"):  # V1
            out[k.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(49, 49)
        if k.endswith("attn.logit_scale"):  # V2
            out[k.replace("logit_scale", "relative_coords_table")] = torch.zeros(1, 15, 15, 2)
            out[k.replace("logit_scale", "relative_position_index")] = torch.zeros(64, 64)
    return {"model": out}


def assert_same_training_gradients(fast: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> None:
    """One training backward of ``mean(model(x)²)`` through both models (same weights): every parameter's
    gradient of ``fast`` equals ``ref``'s (rtol 1e-4, atol 1e-6), the message naming the parameter."""
    fast.train(), ref.train()
    for m in (ref, fast):
        m(x).square().mean().backward()
    grads = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def swin_pico_grads_under_bf16_autocast(monkeypatch, module, off) -> dict[str, dict[str, torch.Tensor]]:
    """swin_pico's parameter gradients of ``sum(logits²)`` under CPU bf16 autocast, same weights and input:
    ``"native"`` with ``module._route`` as it is, then ``"torch"`` with it replaced by ``off``."""
    import swinlab

    torch.manual_seed(0)
    model = swinlab.create_model("swin_pico", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    grads = {}
    for arm in ("native", "torch"):
        if arm == "torch":
            monkeypatch.setattr(module, "_route", off)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16):
            loss = model(x).float().square().sum()
        loss.backward()
        grads[arm] = {n: p.grad.clone() for n, p in model.named_parameters()}
    return grads


def avx512_kernel_skip_reason() -> str | None:
    """Why the native library's AVX-512 kernels (LayerNorm, GELU) cannot run here, or ``None``."""
    from swinlab.kernels import native

    try:
        native.compiler()
    except native.BuildError as e:
        return f"no C compiler: {e}"
    return None if "avx512f" in native._cpu_flags().split() else "the kernel runs on AVX-512 CPUs only"


class BrokenLibrary:
    """The real native library, but one of its functions returns success and leaves its outputs untouched
    (a self-check must catch it)."""

    def __init__(self, lib, broken: str):
        self.lib, self.broken = lib, broken

    def __getattr__(self, name):
        return (lambda *args: 0) if name == self.broken else getattr(self.lib, name)
