"""Two-dimensional toy densities, generated on the fly (deterministic for a seed).

- ``swiss_roll``: scikit-learn's ``make_swiss_roll``, columns 0 and 2, standardised
  (zero mean, unit variance per column), as in the course's EBM and flow homeworks;
- ``moons``: scikit-learn's ``make_moons``, standardised;
- ``eight_gaussians``: a mixture of 8 Gaussians (std 0.1) on a circle of radius 2;
- ``checkerboard``: uniform on the black squares of a 4x4 board over [-2, 2]^2;
- ``rings``: two concentric rings of radii 1 and 2 with Gaussian radial noise.

Examples:
    >>> x = load_density("swiss_roll", 1000, seed=0)
    >>> tuple(x.shape), round(float(x.mean()), 6), round(float(x.std(0, unbiased=False)[0]), 4)
    ((1000, 2), 0.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from probgen.errors import ProbgenError

__all__ = [
    "DENSITIES",
    "load_density",
    "swiss_roll",
    "moons",
    "eight_gaussians",
    "checkerboard",
    "rings",
]


def _check(n: int, seed: int) -> np.random.Generator:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ProbgenError(f"n must be a positive integer, got {n!r}")
    return np.random.default_rng(seed)


def _standardise(x: np.ndarray) -> torch.Tensor:
    x = (x - x.mean(0)) / x.std(0)
    return torch.as_tensor(x, dtype=torch.float32)


def swiss_roll(n: int, seed: int = 0, noise: float = 0.5) -> torch.Tensor:
    """``make_swiss_roll(n, noise)``, columns 0 and 2, standardised. Shape ``(n, 2)``.

    Examples:
        >>> swiss_roll(10).shape
        torch.Size([10, 2])
    """
    from sklearn.datasets import make_swiss_roll

    _check(n, seed)
    x, _ = make_swiss_roll(n, noise=noise, random_state=seed)
    return _standardise(x[:, [0, 2]])


def moons(n: int, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """``make_moons(n, noise)``, standardised. Shape ``(n, 2)``.

    Examples:
        >>> moons(10).shape
        torch.Size([10, 2])
    """
    from sklearn.datasets import make_moons

    _check(n, seed)
    x, _ = make_moons(n, noise=noise, random_state=seed)
    return _standardise(x)


def eight_gaussians(n: int, seed: int = 0, radius: float = 2.0, std: float = 0.1) -> torch.Tensor:
    """Equal mixture of 8 Gaussians centred on a circle. Shape ``(n, 2)``.

    Examples:
        >>> float(eight_gaussians(500).norm(dim=1).mean()) > 1.8
        True
    """
    rng = _check(n, seed)
    k = rng.integers(0, 8, size=n)
    angle = 2 * math.pi * k / 8
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], 1)
    return torch.as_tensor(centres + std * rng.standard_normal((n, 2)), dtype=torch.float32)


def checkerboard(n: int, seed: int = 0) -> torch.Tensor:
    """Uniform on the squares of a 4x4 board over [-2, 2]^2 whose index sum is even.

    Examples:
        >>> x = checkerboard(1000)
        >>> bool(((torch.floor(x[:, 0] + 2) + torch.floor(x[:, 1] + 2)) % 2 == 0).all())
        True
    """
    rng = _check(n, seed)
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    c = cells[rng.integers(0, len(cells), size=n)]
    x = c + rng.random((n, 2)) - 2.0
    return torch.as_tensor(x, dtype=torch.float32)


def rings(n: int, seed: int = 0, radii: tuple[float, ...] = (1.0, 2.0), noise: float = 0.05):
    """Points on concentric rings (ring chosen uniformly) with radial Gaussian noise.

    Examples:
        >>> rings(8).shape
        torch.Size([8, 2])
    """
    rng = _check(n, seed)
    r = np.asarray(radii)[rng.integers(0, len(radii), size=n)] + noise * rng.standard_normal(n)
    angle = rng.random(n) * 2 * math.pi
    return torch.as_tensor(np.stack([r * np.cos(angle), r * np.sin(angle)], 1), dtype=torch.float32)


DENSITIES: dict[str, Callable[..., torch.Tensor]] = {
    "swiss_roll": swiss_roll,
    "moons": moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "rings": rings,
}


def load_density(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Draw ``n`` points of a named density; an unknown name is an error.

    Examples:
        >>> load_density("moons", 4).shape
        torch.Size([4, 2])
    """
    if name not in DENSITIES:
        raise ProbgenError(f"name: unknown density {name!r}; choose one of {sorted(DENSITIES)}")
    return DENSITIES[name](n, seed=seed)
