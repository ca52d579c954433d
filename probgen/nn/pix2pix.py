"""pix2pix networks (Isola et al. 2017): a U-Net generator with dropout and a PatchGAN
discriminator.

[`UNetGenerator`][probgen.nn.pix2pix.UNetGenerator] is built recursively from one
[`SkipBlock`][probgen.nn.pix2pix.SkipBlock] (as in the authors' ``networks.py``): each block is
``down -> inner block -> up`` with the block's input concatenated to its output (the skip), so an
``H x H`` image with ``num_downs = log2(H)`` goes down to ``1 x 1`` and back. Dropout (p = 0.5) in
the innermost up-convolutions is the generator's only noise source (sec. 3.1: pix2pix has no
``z``), active in training and, as in the paper, at test time when ``dropout_at_test``.

[`PatchDiscriminator`][probgen.nn.pix2pix.PatchDiscriminator] (``NLayerDiscriminator``) scores
overlapping patches: ``n_layers`` stride-2 4x4 convolutions, then two stride-1 4x4 convolutions,
one logit per patch. Its receptive field, [`receptive_field`][probgen.nn.pix2pix.receptive_field]
``(n_layers)``, is 16 px for ``n_layers=1``, 34 px for 2 and the paper's 70 px for 3
(``rf <- (rf - 1) * stride + 4`` from the output back). Conditional: it sees the source and the
target image stacked on the channels.

Examples:
    >>> g, d = UNetGenerator(1, 1, size=32, width=8), PatchDiscriminator(2, width=8, n_layers=2)
    >>> a = torch.zeros(2, 1, 32, 32)
    >>> b = g(a)
    >>> b.shape, d(b, a).shape
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 1, 6, 6]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError

__all__ = ["SkipBlock", "UNetGenerator", "PatchDiscriminator", "receptive_field"]


class SkipBlock(nn.Module):
    """``x -> cat(x, up(inner(down(x))))`` (the outermost block returns ``up(...)`` alone).

    ``down`` = LeakyReLU(0.2), Conv 4x4 stride 2, BatchNorm; ``up`` = ReLU, ConvTranspose 4x4
    stride 2, BatchNorm (+ Dropout). The innermost block has no ``inner`` and no down norm; the
    outermost has no down activation / norm and ends in ``tanh``.
    """

    def __init__(self, outer: int, inner: int, block: nn.Module | None = None,
                 in_channels: int | None = None, outermost: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.outermost = outermost
        c_in = outer if in_channels is None else in_channels
        down: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
        down.append(nn.Conv2d(c_in, inner, 4, 2, 1, bias=False))
        if block is not None and not outermost:
            down.append(nn.BatchNorm2d(inner))
        up_in = inner if block is None else inner * 2
        up: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, 2, 1,
                                                             bias=outermost)]
        if outermost:
            up.append(nn.Tanh())
        else:
            up.append(nn.BatchNorm2d(outer))
            if dropout:
                up.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*down, *([block] if block is not None else []), *up)

    def forward(self, x: Tensor) -> Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], dim=1)


class UNetGenerator(nn.Module):
    """``a (B, in_channels, size, size) -> b (B, out_channels, size, size)`` in ``(-1, 1)``.

    ``log2(size)`` skip blocks (down to 1x1); channels ``width, 2w, 4w, 8w, 8w, ...``; dropout
    ``dropout`` in the three innermost up-convolutions below the ``8w`` level, as in pix2pix.

    Examples:
        >>> UNetGenerator(3, 3, size=64, width=4)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, size: int = 32,
                 width: int = 64, dropout: float = 0.5, dropout_at_test: bool = False) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 8 or size & (size - 1):
            raise ProbgenError(f"size: the U-Net takes square images of side 8, 16, 32, ..., "
                               f"got {size!r}")
        if not 0 <= dropout < 1:
            raise ProbgenError(f"dropout: must be in [0, 1), got {dropout!r}")
        depth = int(math.log2(size))
        widths = [width * min(2 ** i, 8) for i in range(depth)]  # outer .. inner
        block: nn.Module | None = None
        for i in range(depth - 1, 0, -1):  # innermost first
            drop = dropout if (depth - 1 - i) < 3 and i >= 3 else 0.0
            block = SkipBlock(widths[i - 1], widths[i], block, dropout=drop)
        self.net = SkipBlock(out_channels, widths[0], block, in_channels=in_channels,
                             outermost=True)
        self.size, self.in_channels, self.dropout_at_test = size, in_channels, dropout_at_test

    def forward(self, a: Tensor) -> Tensor:
        if self.dropout_at_test and not self.training:
            for m in self.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
        return self.net(a)


def receptive_field(n_layers: int) -> int:
    """Side in pixels of the input patch one output logit of a
    [`PatchDiscriminator`][probgen.nn.pix2pix.PatchDiscriminator] sees.

    Examples:
        >>> [receptive_field(n) for n in (1, 2, 3)]
        [16, 34, 70]
    """
    rf = 1
    for stride in [1, 1] + [2] * n_layers:  # from the output back to the input
        rf = (rf - 1) * stride + 4
    return rf


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``(x, a) -> logits (B, 1, H', W')``, one per ``receptive_field(n_layers)``
    patch of the stacked images (``in_channels`` counts both).

    Examples:
        >>> PatchDiscriminator(2, width=4, n_layers=3)(torch.zeros(1, 1, 64, 64),
        ...                                           torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 6, 6])
    """

    def __init__(self, in_channels: int = 2, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ProbgenError(f"n_layers: must be a positive integer, got {n_layers!r}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, n_layers):
            nxt = width * min(2 ** i, 8)
            layers += [nn.Conv2d(c, nxt, 4, 2, 1, bias=False), nn.BatchNorm2d(nxt),
                       nn.LeakyReLU(0.2)]
            c = nxt
        nxt = width * min(2 ** n_layers, 8)
        layers += [nn.Conv2d(c, nxt, 4, 1, 1, bias=False), nn.BatchNorm2d(nxt), nn.LeakyReLU(0.2),
                   nn.Conv2d(nxt, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)
        self.n_layers = n_layers
        self.receptive_field = receptive_field(n_layers)

    def forward(self, x: Tensor, *cond: Tensor) -> Tensor:
        return self.net(torch.cat([x, *cond], dim=1) if cond else x)
