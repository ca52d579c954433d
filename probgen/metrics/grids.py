"""PNG sample grids (matplotlib, headless): images as a tiled grid, 2-D points as a scatter.

Images may be ``(N, C, H, W)`` with C in {1, 3}, ``(N, H, W)``, or flat ``(N, D)`` with D a
square (e.g. 64 -> 8x8 digits). Values must lie in [0, 1] (pass ``value_range`` to map
another range, e.g. ``(-1, 1)``, or ``(0, 16)`` for 17-level digits). Files are written
atomically.

Examples:
    >>> import tempfile
    >>> p = save_grid(torch.rand(6, 64), tempfile.mkdtemp() + "/g.png")
    >>> p.stat().st_size > 0
    True
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import torch

from probgen.errors import ProbgenError

__all__ = ["make_grid", "save_grid", "save_scatter", "save_samples"]


def _as_images(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu().float()
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ProbgenError(f"images: flat rows of {x.shape[1]} values are not square")
        x = x.reshape(-1, 1, side, side)
    elif x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ProbgenError(f"images must be (N, C, H, W) with C 1 or 3, got {tuple(x.shape)}")
    return x


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1,
              value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Tile images into one ``(C, H', W')`` tensor in [0, 1] (padding is 1.0, white).

    Examples:
        >>> make_grid(torch.zeros(4, 1, 8, 8), nrow=2).shape
        torch.Size([1, 19, 19])
    """
    x = _as_images(images)
    lo, hi = value_range
    if not hi > lo:
        raise ProbgenError(f"value_range must be (low, high) with high > low, got {value_range}")
    x = (x - lo) / (hi - lo)
    if not bool(torch.isfinite(x).all()) or float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6:
        raise ProbgenError(f"images: values outside value_range {value_range} (or not finite)")
    x = x.clamp(0, 1)  # only rounding error is clamped; out-of-range input raised above
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid


def _write_figure(fig, path: str | os.PathLike) -> Path:
    """Render to memory, then write a temporary file and rename it over ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # the usual mode, not a temporary file's private one
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None,
              value_range: tuple[float, float] = (0.0, 1.0), scale: int = 4) -> Path:
    """Save a grid of images as a PNG; returns the path."""
    from matplotlib.figure import Figure  # no pyplot: no global backend switch

    grid = make_grid(images, nrow=nrow, value_range=value_range)
    c, h, w = grid.shape
    fig = Figure(figsize=(max(w * scale / 100, 1), max(h * scale / 100, 1)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    if c == 1:
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    return _write_figure(fig, path)


def save_scatter(points: torch.Tensor, path: str | os.PathLike,
                 reference: torch.Tensor | None = None) -> Path:
    """Save a scatter plot of 2-D points (and optional reference points in grey)."""
    from matplotlib.figure import Figure

    pts = torch.as_tensor(points).detach().cpu()
    if pts.dim() != 2 or pts.shape[1] != 2:
        raise ProbgenError(f"points must be (N, 2), got {tuple(pts.shape)}")
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    if reference is not None:
        ref = torch.as_tensor(reference).detach().cpu()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", label="data")
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="C0", label="samples")
    ax.set_aspect("equal")
    fig.tight_layout()
    return _write_figure(fig, path)


def save_samples(samples: torch.Tensor, path: str | os.PathLike) -> Path:
    """Scatter for ``(N, 2)`` points, else an image grid (values must be in [0, 1])."""
    s = torch.as_tensor(samples)
    if s.dim() == 2 and s.shape[1] == 2:
        return save_scatter(s, path)
    return save_grid(s, path)
