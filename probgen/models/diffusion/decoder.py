"""The discrete decoder ``p(x_0 | x_1)`` of DDPM (Ho et al. 2020, eq. 13): a Gaussian
integrated over the bin of each of ``levels`` integer values spread over ``[-1, 1]``, the
outer bins reaching to ``-inf`` / ``+inf``. With it the diffusion ELBO bounds the *discrete*
negative log-likelihood (in nats) of integer-valued data such as the 17-level digits.

Examples:
    >>> import torch
    >>> d = DiscretizedGaussian(torch.zeros(2), torch.full((2,), 0.1), levels=17)
    >>> p = d.log_prob(torch.arange(17)[:, None].expand(17, 2)).exp()
    >>> torch.allclose(p.sum(0), torch.ones(2))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from probgen.errors import ProbgenError

__all__ = ["DiscretizedGaussian", "levels_to_unit_interval", "unit_interval_to_levels"]


def levels_to_unit_interval(x: Tensor, levels: int) -> Tensor:
    """Integer levels ``0..levels-1`` -> their bin centres in ``[-1, 1]``."""
    return x.float() * (2.0 / (levels - 1)) - 1.0


def unit_interval_to_levels(x: Tensor, levels: int) -> Tensor:
    """Values in ``[-1, 1]`` -> the nearest integer level (clamped)."""
    return ((x + 1.0) * ((levels - 1) / 2.0)).round().clamp(0, levels - 1).long()


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    """``log(Phi(b) - Phi(a))`` for ``a < b``, stable in both tails (mirror the upper tail)."""
    upper = (a + b) > 0
    a2, b2 = torch.where(upper, -b, a), torch.where(upper, -a, b)
    lb, la = torch.special.log_ndtr(b2), torch.special.log_ndtr(a2)
    return lb + torch.log1p(-torch.exp((la - lb).clamp(max=-1e-12)))


class DiscretizedGaussian(Distribution):
    """``P(k) = Phi((c_k + h - loc) / scale) - Phi((c_k - h - loc) / scale)`` over integer
    levels ``k`` with bin centres ``c_k`` in ``[-1, 1]`` and half-width ``h = 1 / (levels - 1)``;
    ``k = 0`` takes all mass below, ``k = levels - 1`` all above (Ho et al. 2020, eq. 13).

    Args:
        loc: the Gaussian's mean (on the ``[-1, 1]`` scale), any shape.
        scale: its standard deviation, broadcastable to ``loc``.
        levels: the number of integer levels (17 for digits).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor, levels: int,
                 validate_args: bool | None = None) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ProbgenError(f"levels: need an int >= 2, got {levels!r}")
        self.loc, self.scale = torch.broadcast_tensors(loc, torch.as_tensor(scale).to(loc))
        self.levels = levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.levels - 1)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> DiscretizedGaussian:
        return DiscretizedGaussian(self.loc.expand(batch_shape), self.scale.expand(batch_shape),
                                   self.levels)

    def log_prob(self, value: Tensor) -> Tensor:
        k = torch.as_tensor(value)
        if k.dtype.is_floating_point and not torch.equal(k, k.round()):
            raise ProbgenError("value: the discrete decoder scores integer levels")
        if bool((k < 0).any() or (k > self.levels - 1).any()):
            raise ProbgenError(f"value: levels must lie in 0..{self.levels - 1}")
        centre = levels_to_unit_interval(k, self.levels)
        h = 1.0 / (self.levels - 1)
        inf = torch.tensor(float("inf"), dtype=centre.dtype, device=centre.device)
        lo = torch.where(k == 0, -inf, (centre - h - self.loc) / self.scale)
        hi = torch.where(k == self.levels - 1, inf, (centre + h - self.loc) / self.scale)
        return _log_diff_ndtr(lo, hi)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        x = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(
            shape, dtype=self.loc.dtype, device=self.loc.device)
        return unit_interval_to_levels(x, self.levels)

    @property
    def mean(self) -> Tensor:
        k = torch.arange(self.levels, device=self.loc.device).reshape(
            -1, *([1] * self.loc.ndim))
        return (self.log_prob(k.expand(-1, *self.loc.shape)).exp() * k).sum(0)
