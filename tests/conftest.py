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
