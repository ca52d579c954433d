"""Invertible layers that Pyro lacks for image flows, written as Pyro ``TransformModule``s.

Every layer follows Pyro's convention: ``_call`` maps base -> data (generation) and
``_inverse`` maps data -> base (scoring), so they compose with Pyro's own transforms inside a
``pyro.distributions.TransformedDistribution``.

- [`ActNorm`][probgen.nn.flow_layers.ActNorm] -- per-channel affine with data-dependent
  initialisation (Glow, sec. 3.1).
- [`InvertibleConv1x1`][probgen.nn.flow_layers.InvertibleConv1x1] -- 1x1 convolution in LU form,
  log-diagonal (Glow, sec. 3.2, eq. 10).
- [`Permutation`][probgen.nn.flow_layers.Permutation] -- a fixed permutation stored as a buffer
  (moves with ``.to(device)``).
- [`Invert`][probgen.nn.flow_layers.Invert] -- swaps the two directions of a transform module (MAF =
  inverted IAF).

Squeeze, multi-scale factor-out and the conv coupling net live in
[`probgen.nn.flow_multiscale`][probgen.nn.flow_multiscale].

References: Dinh et al. 2017 (RealNVP, arXiv:1605.08803), Kingma & Dhariwal 2018
(Glow, arXiv:1807.03039).

Examples:
    >>> import torch
    >>> t = InvertibleConv1x1(4)
    >>> x = torch.randn(2, 4, 3, 3)
    >>> bool(torch.allclose(t.inv(t(x).clone()), x, atol=1e-5))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform

__all__ = [
    "ActNorm",
    "InvertibleConv1x1",
    "Permutation",
    "Invert",
    "clear_transform_caches",
]


def _real(event_dim: int) -> constraints.Constraint:
    return constraints.independent(constraints.real, event_dim)


class _AlongDim:
    """Mixin of transforms acting along a negative ``dim``: real vectors over the last
    ``-dim`` dimensions in and out."""

    dim: int

    def _set_dim(self, dim: int) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim >= 0:
            raise ValueError(f"dim must be a negative int, got {dim!r}")
        self.dim = dim

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        return _real(-self.dim)

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return _real(-self.dim)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def clear_transform_caches(module: nn.Module) -> None:
    """Forget every cached ``(x, y)`` pair in the transforms inside ``module``.

    Pyro transforms cache their last input/output by tensor identity; scoring the *same*
    data tensor again after an optimiser step would return the stale result (and an already
    freed graph). [`Flow`][probgen.models.flows.flows.Flow] calls this each time it builds its
    distribution.

    Examples:
        >>> t = ActNorm(2)
        >>> x = torch.randn(3, 2)
        >>> z = t.inv(x)
        >>> clear_transform_caches(t)
        >>> t.inv(x) is z
        False
    """
    for m in module.modules():
        if isinstance(m, Transform) and m._cache_size:
            m._cached_x_y = (None, None)
        extra = getattr(m, "clear_cache", None)
        if callable(extra):
            extra()


class ActNorm(TransformModule):
    """Per-channel affine ``x = z * exp(log_scale) + loc`` (Glow's activation normalisation).

    The first scoring call (``inv``) in training mode sets ``loc`` and ``log_scale`` so that the
    batch leaves with zero mean and unit variance per channel; ``initialized`` is a buffer, so a
    saved and reloaded model does not re-initialise.

    Args:
        channels: number of channels (features for vectors).
        event_dim: 1 for vectors ``(..., C)``, 3 for images ``(..., C, H, W)``.

    Examples:
        >>> t = ActNorm(3, event_dim=3)
        >>> z = t.inv(torch.randn(16, 3, 4, 4) * 5 + 2)   # data-dependent init
        >>> bool(z.mean().abs() < 1e-5), round(z.std().item(), 1)
        (True, 1.0)
    """

    bijective = True

    def __init__(self, channels: int, event_dim: int = 1) -> None:
        super().__init__(cache_size=1)
        _check_positive("channels", channels)
        if event_dim not in (1, 3):
            raise ValueError(f"event_dim must be 1 (vectors) or 3 (images), got {event_dim!r}")
        self.event_dim_ = event_dim
        shape = (channels,) if event_dim == 1 else (channels, 1, 1)
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        return _real(self.event_dim_)

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return _real(self.event_dim_)

    @torch.no_grad()
    def _data_init(self, x: Tensor) -> None:
        # statistics over every dim but the channel one
        c_dim = x.dim() - self.event_dim_
        flat = x.movedim(c_dim, 0).reshape(x.shape[c_dim], -1)
        if flat.shape[1] < 2:
            return
        self.loc.copy_(flat.mean(1).reshape(self.loc.shape))
        self.log_scale.copy_(flat.std(1).clamp_min(1e-6).log().reshape(self.log_scale.shape))
        self.initialized.fill_(True)

    def _call(self, z: Tensor) -> Tensor:
        return z * self.log_scale.exp() + self.loc

    def _inverse(self, x: Tensor) -> Tensor:
        if self.training and not bool(self.initialized):
            self._data_init(x)
        return (x - self.loc) * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        pixels = 1 if self.event_dim_ == 1 else z.shape[-1] * z.shape[-2]
        ld = self.log_scale.sum() * pixels
        return ld.expand(z.shape[: z.dim() - self.event_dim_])


class InvertibleConv1x1(TransformModule):
    """Invertible 1x1 convolution over channels, ``W = P L (U + diag(sign * exp(log_s)))``.

    ``P`` (a permutation) and ``sign`` are fixed buffers; ``L`` (unit lower), ``U`` (strictly
    upper) and ``log_s`` are learned. ``log|det W| = sum(log_s)`` per pixel (Glow eq. 10), and
    unlike a raw LU diagonal (Pyro's ``GeneralizedChannelPermute``) ``W`` can never become
    singular during training. Acts on ``(..., C, H, W)``.

    Examples:
        >>> t = InvertibleConv1x1(4)
        >>> t(torch.randn(2, 4, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    bijective = True
    domain = _real(3)
    codomain = _real(3)

    def __init__(self, channels: int) -> None:
        super().__init__(cache_size=1)
        _check_positive("channels", channels)
        w, _ = torch.linalg.qr(torch.randn(channels, channels))  # random rotation
        p, lower, upper = torch.linalg.lu(w)
        s = upper.diagonal()
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", s.sign())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(s.abs().log())

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.log_s.numel(), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """The ``(C, C)`` mixing matrix ``W``."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def _call(self, z: Tensor) -> Tensor:
        return torch.einsum("ij,...jhw->...ihw", self.weight(), z)

    def _inverse(self, x: Tensor) -> Tensor:
        lower, upper = self._factors()
        flat = x.flatten(-2)  # (..., C, H*W)
        y = torch.einsum("ji,...jn->...in", self.perm, flat)  # P^T x
        y = torch.linalg.solve_triangular(lower, y, upper=False, unitriangular=True)
        y = torch.linalg.solve_triangular(upper, y, upper=True)
        return y.reshape(x.shape)

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        ld = self.log_s.sum() * (z.shape[-1] * z.shape[-2])
        return ld.expand(z.shape[:-3])


class Permutation(_AlongDim, TransformModule):
    """A fixed permutation along ``dim``, stored as a buffer.

    Examples:
        >>> Permutation(torch.tensor([2, 0, 1]))(torch.tensor([10., 20., 30.]))
        tensor([30., 10., 20.])
    """

    bijective = True
    volume_preserving = True

    def __init__(self, permutation: Tensor, dim: int = -1) -> None:
        super().__init__(cache_size=1)
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        n = permutation.numel()
        if permutation.dim() != 1 or not torch.equal(permutation.sort().values, torch.arange(n)):
            raise ValueError("permutation must be a 1-D permutation of 0..n-1")
        self._set_dim(dim)
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", permutation.argsort())

    def _call(self, x: Tensor) -> Tensor:
        return x.index_select(self.dim, self.permutation)

    def _inverse(self, y: Tensor) -> Tensor:
        return y.index_select(self.dim, self.inverse_permutation)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[: x.dim() + self.dim])


class Invert(TransformModule):
    """The inverse of a transform *module*, itself a module (so its parameters register).

    ``Invert(AffineAutoregressive(...))`` is a MAF layer: scoring runs the cheap, parallel
    direction and sampling the sequential one (Papamakarios et al. 2017, arXiv:1705.07057).

    Examples:
        >>> t = Invert(InvertibleConv1x1(2))
        >>> x = torch.randn(1, 2, 3, 3)
        >>> bool(torch.allclose(t.inv(t(x).clone()), x, atol=1e-5))
        True
    """

    bijective = True

    def __init__(self, base: TransformModule) -> None:
        super().__init__(cache_size=1)
        if not isinstance(base, TransformModule):
            raise ValueError(f"base must be a pyro TransformModule, got {type(base).__name__}")
        self.base = base

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        return self.base.codomain

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return self.base.domain

    def _call(self, x: Tensor) -> Tensor:
        return self.base.inv(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.base(y)

    def forward_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self.base.inverse_shape(shape)

    def inverse_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self.base.forward_shape(shape)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -self.base.log_abs_det_jacobian(y, x)
