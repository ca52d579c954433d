"""The normaliser of a 2-D EBM by quadrature: ``log Z = log sum_cells exp(-E(c)) |cell|``.

In two dimensions ``Z = int exp(-E(x)) dx`` is a cheap integral: the midpoint rule on a
``grid x grid`` lattice over a box, accumulated in float64 with ``logsumexp``. Then
``-log p(x) = E(x) + log Z`` is an exact NLL in nats (up to the quadrature error, which
[`log_normaliser`][probgen.models.ebm.quadrature.log_normaliser] reports by comparing with the
half-resolution grid, and the mass outside the box).

Examples:
    >>> import math, torch
    >>> q = log_normaliser(lambda x: 0.5 * (x ** 2).sum(-1), (-8.0, 8.0, -8.0, 8.0))
    >>> round(q.log_z, 6), round(math.log(2 * math.pi), 6)
    (1.837877, 1.837877)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = ["Quadrature", "log_normaliser", "data_box"]


@dataclass(frozen=True)
class Quadrature:
    """A 2-D normaliser: ``log_z`` and how it was computed."""

    log_z: float
    #: ``(x_lo, x_hi, y_lo, y_hi)``
    box: tuple[float, float, float, float]
    grid: int
    #: ``|log Z(grid) - log Z(grid / 2)|``: a bound on the midpoint rule's error
    error: float

    @property
    def label(self) -> str:
        lo_x, hi_x, lo_y, hi_y = self.box
        return (f"exact (normaliser by quadrature: midpoint rule, {self.grid}x{self.grid} grid "
                f"over [{lo_x:.2f}, {hi_x:.2f}] x [{lo_y:.2f}, {hi_y:.2f}])")


def data_box(x: Tensor, margin: float = 1.0) -> tuple[float, float, float, float]:
    """The bounding box of 2-D points widened by ``margin`` on every side."""
    if x.dim() != 2 or x.shape[1] != 2:
        raise ProbgenError(f"x: quadrature is for 2-D points (N, 2), got {tuple(x.shape)}")
    lo, hi = x.min(0).values - margin, x.max(0).values + margin
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def _log_z(energy: Callable[[Tensor], Tensor], box: tuple[float, ...], grid: int,
           device: torch.device, chunk: int) -> float:
    lo_x, hi_x, lo_y, hi_y = box
    hx, hy = (hi_x - lo_x) / grid, (hi_y - lo_y) / grid
    xs = lo_x + hx * (torch.arange(grid, dtype=torch.float64) + 0.5)
    ys = lo_y + hy * (torch.arange(grid, dtype=torch.float64) + 0.5)
    pts = torch.cartesian_prod(xs, ys).float().to(device)
    parts = []
    with torch.no_grad():
        for i in range(0, len(pts), chunk):
            parts.append(-energy(pts[i:i + chunk]).double().cpu())
    neg = torch.cat(parts)
    if not torch.isfinite(neg).all():
        raise ProbgenError("energy: non-finite values on the quadrature grid")
    return float(torch.logsumexp(neg, 0)) + math.log(hx * hy)


def log_normaliser(energy: Callable[[Tensor], Tensor], box: tuple[float, float, float, float],
                   grid: int = 400, device: torch.device | str = "cpu",
                   chunk: int = 40000) -> Quadrature:
    """``log Z`` of ``exp(-energy)`` over ``box`` by the midpoint rule on ``grid^2`` cells.

    Args:
        energy: ``(N, 2) -> (N,)``.
        box: ``(x_lo, x_hi, y_lo, y_hi)``.
        grid: cells per side (even, >= 4).
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 4 or grid % 2:
        raise ProbgenError(f"grid: must be an even integer >= 4, got {grid!r}")
    lo_x, hi_x, lo_y, hi_y = (float(b) for b in box)
    if not (hi_x > lo_x and hi_y > lo_y and all(map(math.isfinite, (lo_x, hi_x, lo_y, hi_y)))):
        raise ProbgenError(f"box: need finite x_lo < x_hi and y_lo < y_hi, got {box}")
    b = (lo_x, hi_x, lo_y, hi_y)
    dev = torch.device(device)
    fine = _log_z(energy, b, grid, dev, chunk)
    coarse = _log_z(energy, b, grid // 2, dev, chunk)
    return Quadrature(fine, b, grid, abs(fine - coarse))
