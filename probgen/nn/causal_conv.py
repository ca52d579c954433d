"""Causal 1-D convolutions: output ``t`` sees inputs ``<= t`` (or ``< t`` for the first layer).

[`CausalConv1d`][probgen.nn.causal_conv.CausalConv1d] pads on the left only, so no future value
leaks in; with ``include_current=False`` the input is also shifted right by one step (the "type A"
layer of PixelCNN/WaveNet), so output ``t`` predicts ``x_t`` from ``x_<t`` only.
[`CausalConvNet`][probgen.nn.causal_conv.CausalConvNet] stacks them with dilations ``1, 2, 4, ...``
and residual connections (WaveNet, van den Oord et al. 2016) and follows the shared interface of
[`probgen.nn.made`][probgen.nn.made]: one-hot ``(B, D, K)`` -> logits ``(B, D, K)``. It is the ARM
of Tomczak's *Deep Generative Modeling*, ch. 2, on a flattened image.

Examples:
    >>> import torch
    >>> net = CausalConvNet(dims=64, num_levels=17, channels=16, layers=3)
    >>> x = torch.nn.functional.one_hot(torch.randint(0, 17, (2, 64)), 17).float()
    >>> net(x).shape
    torch.Size([2, 64, 17])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.nn.made import _positive

__all__ = ["CausalConv1d", "CausalConvNet"]


class CausalConv1d(nn.Conv1d):
    """``nn.Conv1d`` over ``(B, C, T)`` with left padding; ``include_current=False`` shifts by one.

    Examples:
        >>> conv = CausalConv1d(1, 1, kernel_size=3, include_current=False)
        >>> conv(torch.zeros(1, 1, 10)).shape
        torch.Size([1, 1, 10])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 dilation: int = 1, include_current: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.include_current = include_current
        self.left = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        if not self.include_current:
            x = F.pad(x, (1, 0))[..., :-1]  # x_t moves to t+1: output t sees only x_<t
        return super().forward(F.pad(x, (self.left, 0)))


class _Residual(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, kernel_size, dilation)
        self.out = nn.Conv1d(channels, channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        a, b = self.conv(h).chunk(2, dim=1)
        return h + self.out(self.drop(torch.tanh(a) * torch.sigmoid(b)))  # gated unit


class CausalConvNet(nn.Module):
    """A stack of dilated causal convolutions over a sequence of ``dims`` discrete variables.

    Args:
        dims: sequence length ``D``; num_levels: levels ``K``.
        channels: hidden channels; layers: residual blocks (dilation ``2**i``, capped so
            the receptive field stays within ``D``); kernel_size: per layer.
        dropout: dropout inside each block.
    """

    def __init__(self, dims: int, num_levels: int, channels: int = 64, layers: int = 6,
                 kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        self.dims = _positive(dims, "dims")
        self.num_levels = _positive(num_levels, "num_levels")
        _positive(channels, "channels")
        _positive(kernel_size, "kernel_size")
        self.inp = CausalConv1d(num_levels, channels, kernel_size, include_current=False)
        self.blocks = nn.ModuleList(
            _Residual(channels, kernel_size, min(2**i, max(dims // kernel_size, 1)), dropout)
            for i in range(_positive(layers, "layers"))
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv1d(channels, num_levels, 1))

    def forward(self, onehot: Tensor) -> Tensor:
        """``(B, D, K)`` one-hot inputs -> ``(B, D, K)`` logits of ``p(x_d | x_<d)``."""
        h = self.inp(onehot.transpose(1, 2))  # (B, C, D)
        for block in self.blocks:
            h = block(h)
        return self.head(h).transpose(1, 2)
