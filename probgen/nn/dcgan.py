"""GAN networks: DCGAN generator / discriminator for square images, an MLP pair for vectors.

[`DCGANGenerator`][probgen.nn.dcgan.DCGANGenerator] and
[`DCGANDiscriminator`][probgen.nn.dcgan.DCGANDiscriminator] follow Radford et al. (2016, sec. 3):
strided (transposed) 4x4 convolutions instead of pooling, batch norm in the generator, ReLU in the
generator and LeakyReLU(0.2) in the discriminator, ``tanh`` at the generator's output. The number
of resolution steps follows the image size: 8x8 digits start from a 2x2 map (two steps), 32 / 64
pixel images from 4x4 (three / four steps). [`MLPGenerator`][probgen.nn.dcgan.MLPGenerator] and
[`MLPDiscriminator`][probgen.nn.dcgan.MLPDiscriminator] are the pair for 2-D densities.

Every network takes an optional class label: a class-conditional generator concatenates a label
embedding to ``z`` (Mirza & Osindero 2014); a conditional discriminator adds the projection term
``<embed(y), phi(x)>`` to its score (Miyato & Koyama 2018, eq. 3).
[`spectral_norm`][probgen.nn.dcgan.spectral_norm] wraps every convolution and linear layer of a
network with PyTorch's spectral normalisation (Miyato et al. 2018).

Examples:
    >>> g, d = DCGANGenerator(16, size=8), DCGANDiscriminator(size=8)
    >>> x = g(torch.randn(5, 16))
    >>> x.shape, d(x).shape
    (torch.Size([5, 1, 8, 8]), torch.Size([5]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "MLPGenerator", "MLPDiscriminator",
           "spectral_norm"]


def _steps(size: int) -> tuple[int, int]:
    """``(base, steps)``: the first feature map's side and the number of 2x resolution steps."""
    if not isinstance(size, int) or size < 8 or size & (size - 1):
        raise ProbgenError(f"size: DCGAN nets take square images of side 8, 16, 32, 64, ..., "
                           f"got {size!r}")
    base = 2 if size < 32 else 4
    return base, int(math.log2(size // base))


def _check_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ProbgenError(f"num_classes: must be an integer >= 0, got {num_classes!r}")
    return num_classes


class DCGANGenerator(nn.Module):
    """``z (B, latent_dim) [, y (B,)] -> x (B, channels, size, size)`` in ``(-1, 1)``.

    Linear to a ``(width * 2^(steps-1), base, base)`` map, then ``steps`` transposed convolutions
    (kernel 4, stride 2) each doubling the side and halving the channels, batch norm and ReLU
    between them (``norm="none"`` drops batch norm), ``tanh`` last.

    Examples:
        >>> g = DCGANGenerator(8, channels=3, size=32, width=16, num_classes=10)
        >>> g(torch.randn(2, 8), torch.tensor([1, 7])).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, channels: int = 1, size: int = 8, width: int = 64,
                 num_classes: int = 0, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise ProbgenError(f"norm: 'batch' or 'none', got {norm!r}")
        base, steps = _steps(size)
        self.latent_dim, self.channels, self.size = latent_dim, channels, size
        self.num_classes = _check_classes(num_classes)
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        c = width * 2 ** (steps - 1)
        self.base, self.c0 = base, c
        self.project = nn.Linear(latent_dim * (2 if num_classes else 1), c * base * base)
        layers: list[nn.Module] = []
        for i in range(steps):
            layers += [nn.BatchNorm2d(c) if norm == "batch" else nn.Identity(), nn.ReLU()]
            out = channels if i == steps - 1 else c // 2
            layers.append(nn.ConvTranspose2d(c, out, 4, 2, 1))
            c = out
        self.body = nn.Sequential(*layers, nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if y is None:
                raise ProbgenError("y: this generator is class-conditional; pass labels")
            z = torch.cat([z, self.embed(y.long())], dim=-1)
        h = self.project(z).view(-1, self.c0, self.base, self.base)  # (B, C0, base, base)
        return self.body(h)


class _Projection(nn.Module):
    """Score ``psi(h) [+ <embed(y), h>]`` of features ``h (B, F)`` (projection discriminator)."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.out = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        score = self.out(h).squeeze(-1)
        if self.embed is not None:
            if y is None:
                raise ProbgenError("y: this discriminator is class-conditional; pass labels")
            score = score + (self.embed(y.long()) * h).sum(-1)
        return score


class DCGANDiscriminator(nn.Module):
    """``x (B, channels, size, size) [, y (B,)] -> score (B,)`` (a logit / critic value).

    ``steps`` strided convolutions (kernel 4, stride 2) halving the side and doubling the
    channels from ``width``, LeakyReLU(0.2) between them, then a linear score. No batch norm
    (it would couple the examples of a batch, which WGAN-GP's per-example gradient penalty
    forbids; Gulrajani et al. 2017, sec. 4).

    Examples:
        >>> DCGANDiscriminator(channels=3, size=64, width=8)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2])
    """

    def __init__(self, channels: int = 1, size: int = 8, width: int = 64,
                 num_classes: int = 0) -> None:
        super().__init__()
        base, steps = _steps(size)
        self.channels, self.size = channels, size
        layers: list[nn.Module] = []
        c_in, c = channels, width
        for _ in range(steps):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in, c = c, c * 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = _Projection(c_in * base * base, _check_classes(num_classes))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        x = x.reshape(-1, self.channels, self.size, self.size)
        return self.head(self.body(x), y)


class MLPGenerator(nn.Module):
    """``z (B, latent_dim) [, y] -> x (B, dim)``: ``depth`` ReLU layers of ``hidden`` units.

    Examples:
        >>> MLPGenerator(2, 2, hidden=16)(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(self, latent_dim: int, dim: int, hidden: int = 128, depth: int = 3,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.dim = latent_dim, dim
        self.embed = nn.Embedding(num_classes, latent_dim) if _check_classes(num_classes) \
            else None
        layers: list[nn.Module] = []
        d = latent_dim * (2 if num_classes else 1)
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.body = nn.Sequential(*layers, nn.Linear(d, dim))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if y is None:
                raise ProbgenError("y: this generator is class-conditional; pass labels")
            z = torch.cat([z, self.embed(y.long())], dim=-1)
        return self.body(z)


class MLPDiscriminator(nn.Module):
    """``x (B, dim) [, y] -> score (B,)``: ``depth`` LeakyReLU(0.2) layers, a linear score.

    Examples:
        >>> MLPDiscriminator(2, hidden=16)(torch.randn(4, 2)).shape
        torch.Size([4])
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, num_classes: int = 0
                 ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.LeakyReLU(0.2)]
            d = hidden
        self.body = nn.Sequential(*layers)
        self.head = _Projection(d, _check_classes(num_classes))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.body(x), y)


def spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv / linear weight of ``module``.

    Each weight is divided by its largest singular value, estimated by one power iteration per
    training forward pass (``torch.nn.utils.parametrizations.spectral_norm``); the layer is
    then 1-Lipschitz. Returns ``module`` (changed in place).

    Examples:
        >>> d = spectral_norm(MLPDiscriminator(2, hidden=8))
        >>> w = d.body[0].weight
        >>> bool(torch.linalg.matrix_norm(w, 2) < 1.01)
        True
    """
    from torch.nn.utils.parametrizations import spectral_norm as sn

    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            sn(m)
    return module
