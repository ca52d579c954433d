"""Measured properties of GANs: memorisation and mode coverage.

- [`nearest_distance`][probgen.models.gan.properties.nearest_distance]: mean Euclidean distance of
  each example to its nearest neighbour in a reference set. A model that memorises puts its samples
  closer to the training images than fresh test images are: the check is
  ``nearest_distance(samples, train) >= nearest_distance(test, train)``.
- [`mode_report`][probgen.models.gan.properties.mode_report]: for a mixture of Gaussians with known
  centres and standard deviation, the fraction of *high-quality* samples (within 3 standard
  deviations of some centre) and the number of modes *covered* (receiving at least ``min_count``
  high-quality samples), as in VEEGAN (Srivastava et al. 2017, sec. 5.1) and PacGAN (Lin et al.
  2018, sec. 5.1: 2500 samples, a mode counts with 20 or more).
- ``RING`` (the embedded ``eight_gaussians``: radius 2, std 0.1)
  and ``GRID`` (a 5x5 grid of spacing 1, std 0.05), with
  [`mixture_samples`][probgen.models.gan.properties.mixture_samples] to draw from either.

Examples:
    >>> x = mixture_samples(RING, 2500, seed=0)
    >>> r = mode_report(x, RING)
    >>> r["modes"], r["high_quality"] > 0.98
    (8, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = ["Mixture", "RING", "GRID", "mixture_samples", "mode_report", "nearest_distance"]


@dataclass(frozen=True)
class Mixture:
    """An equal-weight mixture of isotropic Gaussians: ``centres (K, 2)`` and ``std``."""

    name: str
    centres: tuple[tuple[float, float], ...]
    std: float


RING = Mixture("ring", tuple((2 * math.cos(2 * math.pi * k / 8), 2 * math.sin(2 * math.pi * k / 8))
                             for k in range(8)), 0.1)
GRID = Mixture("grid", tuple((float(i), float(j)) for i in range(-2, 3) for j in range(-2, 3)),
               0.05)


def mixture_samples(mix: Mixture, n: int, seed: int = 0) -> Tensor:
    """``n`` points of ``mix`` (deterministic for ``seed``).

    Examples:
        >>> mixture_samples(GRID, 4).shape
        torch.Size([4, 2])
    """
    gen = torch.Generator().manual_seed(seed)
    c = torch.tensor(mix.centres)
    k = torch.randint(len(c), (n,), generator=gen)
    return c[k] + mix.std * torch.randn(n, 2, generator=gen)


def mode_report(samples: Tensor, mix: Mixture, min_count: int = 20) -> dict[str, float | int]:
    """``{"modes": covered, "of": K, "high_quality": fraction}`` of ``samples (N, 2)``.

    A sample is high-quality when it lies within 3 std of its nearest centre; a mode is covered
    when at least ``min_count`` high-quality samples are nearest to it.

    Examples:
        >>> mode_report(torch.zeros(100, 2) + torch.tensor(RING.centres[0]), RING)
        {'modes': 1, 'of': 8, 'high_quality': 1.0}
    """
    if samples.dim() != 2 or samples.shape[1] != 2:
        raise ProbgenError(f"samples: expected (N, 2) points, got {tuple(samples.shape)}")
    c = torch.tensor(mix.centres, dtype=samples.dtype)
    d = torch.cdist(samples, c)  # (N, K)
    dist_min, nearest = d.min(1)
    good = dist_min <= 3 * mix.std
    counts = torch.bincount(nearest[good], minlength=len(c))
    return {"modes": int((counts >= min_count).sum()), "of": len(c),
            "high_quality": float(good.float().mean())}


def nearest_distance(x: Tensor, reference: Tensor, batch: int = 512) -> float:
    """Mean over rows of ``x`` of the Euclidean distance to the nearest row of ``reference``.

    Examples:
        >>> nearest_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.zeros(1, 2))
        2.5
    """
    x, reference = x.flatten(1).double(), reference.flatten(1).double()
    if x.shape[1] != reference.shape[1]:
        raise ProbgenError(f"x: rows of size {x.shape[1]} against reference rows of size "
                           f"{reference.shape[1]}")
    mins = [torch.cdist(x[i:i + batch], reference).min(1).values for i in range(0, len(x), batch)]
    return float(torch.cat(mins).mean())
