"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"): a vertical and a horizontal stack, so the receptive field has no blind spot.

Raster order: pixel ``(i, j)`` is predicted from rows ``< i`` and from ``(i, < j)``.

- The *vertical* stack convolves a ``(k//2 + 1) x k`` window over the current row and the
  rows above (top padding only); its features at row ``i`` see rows ``<= i``.
- It feeds the horizontal stack *shifted down one row*, so ``(i, j)`` only receives rows
  ``< i`` from it.
- The *horizontal* stack convolves a ``1 x (k//2 + 1)`` window over the current pixel and
  those to its left; the first layer shifts its input right by one, so the current pixel's
  own value never reaches its prediction.

Each layer is a gated unit ``tanh(a) * sigmoid(b)`` (Eq. 2 of the paper) with a residual
connection on the horizontal stack. With ``cond_channels > 0`` the net is *conditional*
(Section 2.3 of the paper, location-dependent): a feature map ``cond`` of shape
``(B, cond_channels, H, W)``, computed from anything but the pixels themselves (a latent
code, a label), enters both gates of every layer through a 1x1 convolution. The interface
is the shared one of [`probgen.nn.made`][probgen.nn.made]: one-hot ``(B, D, K)`` with
``D = H * W`` -> logits ``(B, D, K)``.

Examples:
    >>> import torch
    >>> net = GatedPixelCNN((8, 8), num_levels=17, channels=16, layers=3)
    >>> x = torch.nn.functional.one_hot(torch.randint(0, 17, (2, 64)), 17).float()
    >>> net(x).shape
    torch.Size([2, 64, 17])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.errors import ProbgenError
from probgen.nn.made import _positive

__all__ = ["GatedLayer", "GatedPixelCNN"]


def _down_shift(x: Tensor) -> Tensor:
    """``(B, C, H, W)``: row ``i`` moves to ``i + 1`` (zeros on top)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def _right_shift(x: Tensor) -> Tensor:
    """``(B, C, H, W)``: column ``j`` moves to ``j + 1`` (zeros on the left)."""
    return F.pad(x, (1, 0))[..., :-1]


class GatedLayer(nn.Module):
    """One gated layer: ``(v, h) -> (v', h')`` for the two stacks.

    Examples:
        >>> layer = GatedLayer(4, 4, kernel_size=3, first=True)
        >>> v, h = layer(torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 5, 5))
        >>> tuple(h.shape)
        (1, 4, 5, 5)
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3,
                 first: bool = False, dropout: float = 0.0, cond_channels: int = 0):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ProbgenError(f"kernel_size must be odd, got {kernel_size}")
        self.k = kernel_size // 2
        self.first = first
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (self.k + 1, kernel_size))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.k + 1))
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.drop = nn.Dropout(dropout)
        self.cond = nn.Conv2d(cond_channels, 4 * channels, 1) if cond_channels else None

    @staticmethod
    def _gate(x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: Tensor, h: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        k = self.k
        v_raw = self.v_conv(F.pad(v, (k, k, k, 0)))  # rows i-k..i, columns j-k..j+k
        h_in = _right_shift(h) if self.first else h
        h_raw = self.h_conv(F.pad(h_in, (k, 0, 0, 0))) + self.v_to_h(_down_shift(v_raw))
        if self.cond is not None:
            if cond is None:
                raise ProbgenError("cond: this conditional PixelCNN layer needs a feature map")
            c_v, c_h = self.cond(cond).chunk(2, dim=1)  # no pixel enters cond: still causal
            v_raw, h_raw = v_raw + c_v, h_raw + c_h
        v_new = self.drop(self._gate(v_raw))
        h_new = self.h_out(self.drop(self._gate(h_raw)))
        return v_new, h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """A gated PixelCNN over ``shape = (H, W)`` images of ``num_levels``-way pixels.

    Args:
        shape: image height and width (one channel).
        num_levels: levels ``K`` per pixel.
        channels: features per stack; layers: gated layers; kernel_size: odd window size.
        dropout: dropout on every gated output.
        cond_channels: > 0 makes the net conditional on a ``(B, cond_channels, H, W)`` map.
    """

    def __init__(self, shape: Sequence[int] = (8, 8), num_levels: int = 17, channels: int = 64,
                 layers: int = 6, kernel_size: int = 3, dropout: float = 0.0,
                 cond_channels: int = 0):
        super().__init__()
        if len(shape) != 2:
            raise ProbgenError(f"shape must be (H, W), got {tuple(shape)}")
        self.shape = (_positive(int(shape[0]), "shape[0]"), _positive(int(shape[1]), "shape[1]"))
        self.dims = self.shape[0] * self.shape[1]
        self.num_levels = _positive(num_levels, "num_levels")
        _positive(channels, "channels")
        self.layers = nn.ModuleList(
            GatedLayer(num_levels if i == 0 else channels, channels, kernel_size, i == 0, dropout,
                       cond_channels)
            for i in range(_positive(layers, "layers"))
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, num_levels, 1))

    def forward(self, onehot: Tensor, cond: Tensor | None = None) -> Tensor:
        """``(B, H*W, K)`` one-hot inputs -> ``(B, H*W, K)`` logits of ``p(x_d | x_<d)``
        (of ``p(x_d | x_<d, cond)`` for a conditional net)."""
        b = onehot.shape[0]
        x = onehot.transpose(1, 2).reshape(b, self.num_levels, *self.shape)  # (B, K, H, W)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h).reshape(b, self.num_levels, self.dims).transpose(1, 2)
