"""Sample-quality distances for low-dimensional data (e.g. 2-D densities): MMD and energy distance.

- [`mmd`][probgen.metrics.distances.mmd]: squared maximum mean discrepancy with a Gaussian (RBF)
  kernel, unbiased estimator (Gretton et al. 2012, eq. 3), summed over one or several bandwidths;
- [`energy_distance`][probgen.metrics.distances.energy_distance]: ``2 E|X-Y| - E|X-X'| - E|Y-Y'|``
  (Szekely & Rizzo 2013), the V-statistic (all pairs, including i = j).

Examples:
    >>> x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    >>> round(energy_distance(x, x), 6)
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probgen.errors import ProbgenError

__all__ = ["mmd", "energy_distance"]

_EXACT = "donot_use_mm_for_euclid_dist"  # exact pairwise distances (zero on the diagonal)


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    for name, t in (("x", x), ("y", y)):
        if t.dim() != 2 or t.shape[0] < 2:
            raise ProbgenError(f"{name} must be (N, D) with N >= 2, got shape {tuple(t.shape)}")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise ProbgenError(f"{name} must be finite floating-point values")
    if x.shape[1] != y.shape[1]:
        raise ProbgenError(f"x and y differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    return x.double(), y.double()


def mmd(
    x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.5, 1.0, 2.0)
) -> float:
    """Unbiased squared MMD between samples ``x`` (N, D) and ``y`` (M, D).

    ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))`` over the bandwidths ``h``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 3
        >>> mmd(a, b) > 0.5
        True
    """
    x, y = _pair(x, y)
    if not bandwidths or any(h <= 0 for h in bandwidths):
        raise ProbgenError(f"bandwidths must be positive numbers, got {bandwidths!r}")

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a, b, compute_mode=_EXACT).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (>= 0, zero iff equal laws).

    Examples:
        >>> energy_distance(torch.zeros(2, 1), torch.ones(2, 1))
        2.0
    """
    x, y = _pair(x, y)
    dxy = torch.cdist(x, y, compute_mode=_EXACT).mean()
    dxx = torch.cdist(x, x, compute_mode=_EXACT).mean()
    dyy = torch.cdist(y, y, compute_mode=_EXACT).mean()
    return float(2 * dxy - dxx - dyy)
