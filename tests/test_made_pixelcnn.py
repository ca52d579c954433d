"""The causal networks: the autoregressive property checked by autograd, shapes, bad input."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from probgen.errors import ProbgenError
from probgen.nn.causal_conv import CausalConv1d, CausalConvNet
from probgen.nn.made import MADE
from probgen.nn.pixelcnn import GatedPixelCNN

NETS = {
    "made": lambda: MADE(12, 3, hidden=(64, 64)),
    "made_deep": lambda: MADE(12, 3, hidden=(48, 48, 48), seed=3),
    "causal_conv": lambda: CausalConvNet(12, 3, channels=32, layers=4),
    "pixelcnn": lambda: GatedPixelCNN((3, 4), 3, channels=32, layers=4),
    "pixelcnn_k5": lambda: GatedPixelCNN((4, 3), 3, channels=32, layers=3, kernel_size=5),
}


def _dependency(net: torch.nn.Module, dims: int, levels: int) -> torch.Tensor:
    """``dep[d, j]``: does output ``d`` change with input ``j``? (autograd Jacobian)."""
    torch.manual_seed(0)
    net.eval()
    x = torch.randn(2, dims, levels, requires_grad=True)
    out = net(x)
    dep = torch.zeros(dims, dims, dtype=torch.bool)
    for d in range(dims):
        (g,) = torch.autograd.grad(out[:, d].sum(), x, retain_graph=True)
        dep[d] = g.abs().sum((0, 2)) > 0
    return dep


@pytest.mark.parametrize("name", sorted(NETS))
def test_autoregressive_property(name: str) -> None:
    net = NETS[name]()
    dep = _dependency(net, 12, 3)
    future = torch.ones(12, 12, dtype=torch.bool).triu()  # j >= d
    assert not (dep & future).any(), "an output sees its own or a later input"


@pytest.mark.parametrize("name", ["causal_conv", "pixelcnn", "made"])
def test_no_blind_spot(name: str) -> None:
    """Deep enough nets see every earlier input (the gated PixelCNN has no blind spot)."""
    dep = _dependency(NETS[name](), 12, 3)
    past = torch.ones(12, 12, dtype=torch.bool).tril(-1)
    assert dep[past].all()


@pytest.mark.parametrize("name", sorted(NETS))
def test_shapes_and_gradients(name: str) -> None:
    net = NETS[name]()
    x = F.one_hot(torch.randint(0, 3, (5, 12)), 3).float()
    out = net(x)
    assert out.shape == (5, 12, 3)
    out.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_causal_conv1d_matches_manual_shift() -> None:
    conv = CausalConv1d(1, 1, kernel_size=2, include_current=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[10.0, 1.0]]]))
        conv.bias.zero_()
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    # output t = 10 * x_{t-2} + 1 * x_{t-1}
    assert conv(x).tolist() == [[[0.0, 1.0, 12.0, 23.0]]]


def test_bad_arguments() -> None:
    with pytest.raises(ProbgenError, match="dims"):
        MADE(0, 3)
    with pytest.raises(ProbgenError, match="hidden"):
        MADE(4, 3, hidden=())
    with pytest.raises(ProbgenError, match="kernel_size"):
        GatedPixelCNN((4, 4), 3, kernel_size=4)
    with pytest.raises(ProbgenError, match="shape"):
        GatedPixelCNN((4,), 3)
    with pytest.raises(ProbgenError, match="layers"):
        CausalConvNet(8, 3, layers=0)
    with pytest.raises(ValueError):  # every probgen error is a ValueError
        CausalConvNet(8, 0)
