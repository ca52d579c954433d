"""Multi-scale pieces of image flows, as Pyro ``TransformModule``s (base -> data is ``_call``).

- [`Squeeze`][probgen.nn.flow_multiscale.Squeeze] /
  [`Unsqueeze`][probgen.nn.flow_multiscale.Unsqueeze] -- space-to-depth (RealNVP, sec. 3.6).
- [`FactorOut`][probgen.nn.flow_multiscale.FactorOut] -- multi-scale architecture: part of the
  channels leave, an inner transform keeps working on the rest (RealNVP, sec. 3.6; Glow, fig. 2b).
- [`ConvCouplingNet`][probgen.nn.flow_multiscale.ConvCouplingNet] -- the conditioner of an image
  affine coupling (Pyro's ``AffineCoupling(..., dim=-3)``).

References: Dinh et al. 2017 (RealNVP, arXiv:1605.08803), Kingma & Dhariwal 2018
(Glow, arXiv:1807.03039).

Examples:
    >>> import torch
    >>> x = torch.randn(2, 1, 8, 8)
    >>> z = Unsqueeze().inv(x)          # scoring direction squeezes
    >>> z.shape, bool(torch.equal(Unsqueeze()(z), x))
    (torch.Size([2, 4, 4, 4]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn

from probgen.nn.flow_layers import _AlongDim, _check_positive, _real

__all__ = ["Squeeze", "Unsqueeze", "FactorOut", "ConvCouplingNet"]


def _space_to_depth(x: Tensor, f: int) -> Tensor:
    *b, c, h, w = x.shape
    n = len(b)
    x = x.reshape(*b, c, h // f, f, w // f, f)  # (..., C, H/f, i, W/f, j)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # (..., C, i, j, H/f, W/f)
    return x.reshape(*b, c * f * f, h // f, w // f)


def _depth_to_space(x: Tensor, f: int) -> Tensor:
    *b, c, h, w = x.shape
    n = len(b)
    x = x.reshape(*b, c // (f * f), f, f, h, w)  # (..., C, i, j, H, W)
    x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)  # (..., C, H, i, W, j)
    return x.reshape(*b, c // (f * f), h * f, w * f)


class Squeeze(TransformModule):
    """Space-to-depth in the generation direction: ``(C, H, W) -> (C*f*f, H/f, W/f)``.

    Volume preserving (``log|det J| = 0``). Use [`Unsqueeze`][probgen.nn.flow_multiscale.Unsqueeze]
    for the opposite direction; a Glow level scores data through ``Unsqueeze.inv`` (which squeezes).

    Examples:
        >>> Squeeze()(torch.randn(5, 1, 8, 8)).shape
        torch.Size([5, 4, 4, 4])
    """

    bijective = True
    volume_preserving = True
    domain = _real(3)
    codomain = _real(3)

    def __init__(self, factor: int = 2) -> None:
        super().__init__(cache_size=1)
        _check_positive("factor", factor)
        self.factor = factor

    def _squeeze_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        *b, c, h, w = shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(f"Squeeze: height and width {h}x{w} must be divisible by factor={f}")
        return (*b, c * f * f, h // f, w // f)

    def _unsqueeze_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        *b, c, h, w = shape
        f = self.factor
        if c % (f * f):
            raise ValueError(f"Unsqueeze: channels {c} must be divisible by factor**2={f * f}")
        return (*b, c // (f * f), h * f, w * f)

    def _call(self, x: Tensor) -> Tensor:
        self._squeeze_shape(x.shape)
        return _space_to_depth(x, self.factor)

    def _inverse(self, y: Tensor) -> Tensor:
        self._unsqueeze_shape(y.shape)
        return _depth_to_space(y, self.factor)

    def forward_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self._squeeze_shape(shape)

    def inverse_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self._unsqueeze_shape(shape)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-3])


class Unsqueeze(Squeeze):
    """Depth-to-space in the generation direction: ``(C, H, W) -> (C/f^2, H*f, W*f)``.

    Examples:
        >>> Unsqueeze()(torch.randn(5, 4, 4, 4)).shape
        torch.Size([5, 1, 8, 8])
    """

    def _call(self, x: Tensor) -> Tensor:
        return Squeeze._inverse(self, x)

    def _inverse(self, y: Tensor) -> Tensor:
        return Squeeze._call(self, y)

    def forward_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self._unsqueeze_shape(shape)

    def inverse_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self._squeeze_shape(shape)


class FactorOut(_AlongDim, TransformModule):
    """Multi-scale factor-out: ``inner`` transforms the first ``keep`` slices along ``dim``;
    the rest pass through unchanged.

    In the scoring direction the untouched part has been *factored out*: it goes straight to
    the base distribution while ``inner`` (which can hold more squeezes, steps and another
    ``FactorOut``) keeps working at a coarser scale. ``inner`` must preserve its input shape.
    Keeping the full tensor shape lets a whole Glow be one ``TransformedDistribution`` over a
    standard Normal of the image's shape.

    Args:
        inner: transform acting on the kept part (event dim ``-dim``).
        keep: how many slices along ``dim`` stay in play.
        dim: the split dimension, ``-3`` (channels) for images, ``-1`` for vectors.

    Examples:
        >>> from probgen.nn.flow_layers import InvertibleConv1x1
        >>> t = FactorOut(InvertibleConv1x1(2), keep=2)
        >>> t(torch.randn(3, 4, 2, 2)).shape
        torch.Size([3, 4, 2, 2])
    """

    bijective = True

    def __init__(self, inner: TransformModule, keep: int, dim: int = -3) -> None:
        super().__init__(cache_size=1)
        _check_positive("keep", keep)
        self._set_dim(dim)
        if inner.domain.event_dim > -dim:
            raise ValueError(
                f"inner: event dim {inner.domain.event_dim} exceeds the split's event dim {-dim}"
            )
        self.inner = inner
        self.keep = keep
        self._parts: tuple[Tensor, Tensor, Tensor] | None = None  # (z, z1, x1)

    def clear_cache(self) -> None:
        """Forget the parts of the last call (see
        [`clear_transform_caches`][probgen.nn.flow_layers.clear_transform_caches])."""
        self._parts = None

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[self.dim]
        if self.keep >= n:
            raise ValueError(f"keep={self.keep} must be smaller than the split size {n}")
        a, b = x.split([self.keep, n - self.keep], dim=self.dim)
        return a, b

    def _call(self, z: Tensor) -> Tensor:
        z1, z2 = self._split(z)
        x1 = self.inner(z1)
        self._parts = (z, z1, x1)
        return torch.cat([x1, z2], dim=self.dim)

    def _inverse(self, x: Tensor) -> Tensor:
        x1, x2 = self._split(x)
        z1 = self.inner.inv(x1)
        z = torch.cat([z1, x2], dim=self.dim)
        self._parts = (z, z1, x1)
        return z

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        if self._parts is not None and self._parts[0] is z:
            _, z1, x1 = self._parts
        else:
            z1 = self._split(z)[0]
            x1 = self.inner(z1)
        ld = self.inner.log_abs_det_jacobian(z1, x1)
        # sum any event dims the inner transform treats as batch
        extra = -self.dim - self.inner.domain.event_dim
        return ld.sum(tuple(range(-extra, 0))) if extra else ld


class ConvCouplingNet(nn.Module):
    """Conditioner of an image affine coupling: ``x1 -> (shift, log_scale)`` for ``x2``.

    Pyro's ``AffineCoupling(split, net, dim=-3)`` hands the net ``x1`` flattened to
    ``(..., C1*H*W)`` and expects flat outputs; this net reshapes, runs
    conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3 and flattens back. The last conv starts at zero
    so each coupling starts as the identity (Glow, sec. 3.3).

    Examples:
        >>> net = ConvCouplingNet(2, 2, (4, 4), hidden=8)
        >>> [t.shape for t in net(torch.randn(5, 2 * 4 * 4))]
        [torch.Size([5, 32]), torch.Size([5, 32])]
    """

    def __init__(
        self, in_channels: int, out_channels: int, spatial: tuple[int, int], hidden: int = 64
    ) -> None:
        super().__init__()
        for name, v in [("in_channels", in_channels), ("out_channels", out_channels),
                        ("hidden", hidden)]:
            _check_positive(name, v)
        self.in_channels, self.out_channels, self.spatial = in_channels, out_channels, spatial
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        batch = x1.shape[:-1]
        h = x1.reshape(-1, self.in_channels, *self.spatial)  # (B, C1, H, W)
        out = self.net(h)  # (B, 2*C2, H, W)
        shift, log_scale = out.chunk(2, dim=1)
        n = self.out_channels * math.prod(self.spatial)
        return shift.reshape(*batch, n), log_scale.reshape(*batch, n)
