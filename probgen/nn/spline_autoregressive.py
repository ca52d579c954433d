"""A masked autoregressive rational-quadratic spline flow layer (MAF with NSF splines).

[`rq_spline`][probgen.nn.spline_autoregressive.rq_spline] is the monotonic rational-quadratic
spline of Durkan et al. 2019 ("Neural Spline Flows", arXiv:1906.04032, eqs. 4-8 and
appendix A): ``K`` bins on ``[-B, B]`` whose knots and knot derivatives come from unconstrained
parameters, the identity outside (linear tails, boundary derivatives 1). It returns the
value and ``log |dy/dx|`` of one pass, so no second pass is needed for the Jacobian.

[`MaskedSplineAutoregressive`][probgen.nn.spline_autoregressive.MaskedSplineAutoregressive] is a
Pyro ``TransformModule`` that puts one such spline on every coordinate, its parameters given by a
MADE conditioner (Germain et al. 2015; Papamakarios et al. 2017) over the coordinates before
it. Scoring data (``_inverse``, data -> base) is one conditioner pass; sampling (``_call``)
takes ``dim`` passes. It is written for speed: one conditioner pass yields all parameters,
the Jacobian is kept from the pass that made the value, the knots are looked up with one
gather, and the ordering can be reversed inside the layer (``reverse=True``) so that a stack
needs no permutation layers between its members.

Examples:
    >>> import torch
    >>> t = MaskedSplineAutoregressive(3, hidden=(16,))
    >>> x = torch.randn(5, 3)
    >>> z = t.inv(x)
    >>> bool(torch.allclose(t(z), x, atol=1e-4))
    True
    >>> t.log_abs_det_jacobian(z, x).shape
    torch.Size([5])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn

from probgen.nn.made import MaskedLinear

__all__ = ["rq_spline", "MaskedSplineAutoregressive"]


def _knots(u: Tensor, bound: float, min_size: float) -> Tensor:
    """``K + 1`` increasing knots from ``-bound`` to ``bound``, bins at least ``min_size`` wide
    (as a fraction of ``2 * bound``)."""
    k = u.shape[-1]
    sizes = torch.softmax(u, dim=-1) * (2 * bound * (1 - min_size * k)) + 2 * bound * min_size
    return F.pad(torch.cumsum(sizes, dim=-1), (1, 0)) - bound


def rq_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float = 3.0,
    inverse: bool = False,
    min_size: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Monotonic rational-quadratic spline, elementwise: returns ``(y, log |dy/dx|)``.

    Args:
        x: values, shape ``(...)``.
        widths: unconstrained bin widths, shape ``(..., K)``.
        heights: unconstrained bin heights, shape ``(..., K)``.
        derivatives: unconstrained inner knot derivatives, shape ``(..., K - 1)``
            (``min_size + softplus``; the two boundary derivatives are 1).
        bound: the spline acts on ``[-bound, bound]``, the identity outside.
        inverse: evaluate the inverse spline (solving Durkan et al.'s quadratic, eq. 6);
            the log-Jacobian returned is then ``log |dx/dy|`` of the inverse.
        min_size: smallest bin width / height (fraction of ``2 * bound``) and derivative.

    Examples:
        >>> import torch
        >>> x = torch.linspace(-4, 4, 9)
        >>> w, h, d = torch.randn(9, 5), torch.randn(9, 5), torch.randn(9, 4)
        >>> y, ladj = rq_spline(x, w, h, d)
        >>> back, inv_ladj = rq_spline(y, w, h, d, inverse=True)
        >>> bool(torch.allclose(back, x, atol=1e-5)), bool(torch.allclose(ladj, -inv_ladj))
        (True, True)
    """
    k = widths.shape[-1]
    cx = _knots(widths, bound, min_size)  # (..., K + 1)
    cy = _knots(heights, bound, min_size)
    d = F.pad(F.softplus(derivatives) + min_size, (1, 1), value=1.0)  # (..., K + 1)
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound, bound)
    search = cy if inverse else cx
    b = (search[..., 1:k] <= xc.unsqueeze(-1)).sum(-1, keepdim=True)  # bin index (..., 1)
    # one gather for the knot pair (b, b + 1) of all three tables: (..., 2, 3)
    table = torch.stack([cx, cy, d], dim=-1)  # (..., K + 1, 3)
    pair = torch.cat([b, b + 1], dim=-1).unsqueeze(-1).expand(*b.shape[:-1], 2, 3)
    lo, hi = table.gather(-2, pair).unbind(-2)
    x0, y0, d0 = lo.unbind(-1)
    x1, y1, d1 = hi.unbind(-1)
    dx, dy = x1 - x0, y1 - y0
    s = dy / dx
    if inverse:
        yr = xc - y0
        c2 = d0 + d1 - 2 * s
        a = dy * (s - d0) + yr * c2
        bq = dy * d0 - yr * c2
        c = -s * yr
        z = 2 * c / (-bq - (bq * bq - 4 * a * c).clamp(min=0).sqrt())
        out = x0 + z * dx
    else:
        z = (xc - x0) / dx
    zz = z * (1 - z)
    den = s + (d0 + d1 - 2 * s) * zz
    if not inverse:
        out = y0 + dy * (s * z * z + d0 * zz) / den
    ladj = torch.log(s * s * (d1 * z * z + 2 * s * zz + d0 * (1 - z) * (1 - z))) \
        - 2 * torch.log(den)
    if inverse:
        ladj = -ladj
    zero = ladj.new_zeros(())
    return torch.where(inside, out, x), torch.where(inside, ladj, zero)


class MaskedSplineAutoregressive(TransformModule):
    """Autoregressive rational-quadratic spline layer with a MADE conditioner.

    Pyro's direction convention: ``_call`` maps base -> data (``dim`` conditioner passes),
    ``_inverse`` maps data -> base (one pass, the direction of ``log_prob``), as a MAF layer.

    Args:
        dim: size of the vectors (>= 2).
        hidden: hidden widths of the conditioner.
        bins: spline bins ``K``.
        bound: the splines act on ``[-bound, bound]``, identity outside.
        reverse: autoregressive order ``dim - 1, ..., 0`` instead of ``0, ..., dim - 1``.

    Examples:
        >>> t = MaskedSplineAutoregressive(2, hidden=(8, 8), bins=4, reverse=True)
        >>> t.inv(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), bins: int = 8,
                 bound: float = 3.0, reverse: bool = False) -> None:
        super().__init__(cache_size=0)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        if not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound!r}")
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be positive widths, got {hidden}")
        self.dim, self.bins, self.bound, self.reverse = dim, bins, float(bound), reverse
        self.num_params = 3 * bins - 1
        order = torch.arange(dim - 1, -1, -1) if reverse else torch.arange(dim)
        deg_in = order + 1  # degree of input i: its position in the order, 1-based
        degrees = [deg_in]
        for h in hidden:  # hidden degrees cycle through 1 .. dim - 1
            degrees.append(torch.arange(h) % (dim - 1) + 1)
        layers = []
        for i, h in enumerate(hidden):
            mask = degrees[i + 1][:, None] >= degrees[i][None, :]
            layers.append(MaskedLinear(len(degrees[i]), h, mask))
        deg_out = deg_in.repeat_interleave(self.num_params)  # parameters of dim i together
        layers.append(MaskedLinear(hidden[-1], dim * self.num_params,
                                   deg_out[:, None] > degrees[-1][None, :]))
        self.layers = nn.ModuleList(layers)
        self._ladj: tuple[Tensor, Tensor] | None = None

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = x
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h))
        p = self.layers[-1](h).unflatten(-1, (self.dim, self.num_params))  # (..., D, 3K - 1)
        k = self.bins
        return p[..., :k], p[..., k:2 * k], p[..., 2 * k:]

    def _inverse(self, x: Tensor) -> Tensor:
        z, ladj = rq_spline(x, *self._params(x), bound=self.bound)
        self._ladj = (z, -ladj.sum(-1))  # log |dx/dz| of the base -> data direction
        return z

    def _call(self, z: Tensor) -> Tensor:
        x = torch.zeros_like(z)
        for _ in range(self.dim):  # pass i fixes coordinate i of the order
            x, ladj = rq_spline(z, *self._params(x), bound=self.bound, inverse=True)
        self._ladj = (x, ladj.sum(-1))
        return x

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        """``log |dx/dz|`` summed over the vector, shape ``z.shape[:-1]``."""
        cached = self._ladj
        if cached is not None and (cached[0] is z or cached[0] is x):
            return cached[1]
        _, ladj = rq_spline(x, *self._params(x), bound=self.bound)
        return -ladj.sum(-1)
