"""Pictures of 2-D densities: the data, a model's density on a grid, and its samples.

Any model with ``log_prob(points)`` works (a flow, a normalised EBM, a CNF); figures are
built with ``matplotlib.figure.Figure`` (no pyplot, no global backend state) and written as
PNG; every function returns the path it wrote.

Examples:
    >>> import tempfile, torch
    >>> gauss = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    >>> p = plot_density_2d(gauss, torch.randn(100, 2), f"{tempfile.mkdtemp()}/d.png", grid=40)
    >>> p.name
    'd.png'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_density_2d"]


def _check_2d(model: Any) -> None:
    if not callable(getattr(model, "log_prob", None)):
        raise ValueError(f"model must have a log_prob method, got {type(model).__name__}")
    shape = getattr(model, "event_shape", (2,))
    if tuple(shape) != (2,):
        raise ValueError(f"model must be 2-D for this picture, got event shape {tuple(shape)}")


def _bounds(data: Tensor | None, bounds: tuple[float, float, float, float] | None
            ) -> tuple[float, float, float, float]:
    if bounds is not None:
        if len(bounds) != 4 or bounds[0] >= bounds[1] or bounds[2] >= bounds[3]:
            raise ValueError(f"bounds must be (xmin, xmax, ymin, ymax), got {bounds}")
        return tuple(float(b) for b in bounds)
    if data is None:
        return (-4.0, 4.0, -4.0, 4.0)
    lo, hi = data.min(0).values, data.max(0).values
    pad = 0.15 * (hi - lo)
    return (lo[0] - pad[0]).item(), (hi[0] + pad[0]).item(), (lo[1] - pad[1]).item(), \
        (hi[1] + pad[1]).item()


@torch.no_grad()
def plot_density_2d(
    model: Any,
    data: Tensor,
    path: str | Path,
    grid: int = 200,
    bounds: tuple[float, float, float, float] | None = None,
    num_samples: int | None = None,
    context: Tensor | None = None,
) -> Path:
    """Three panels: the data, the learned density ``exp log p(x)`` on a grid, and samples.

    Args:
        model: a 2-D density with ``log_prob(points)`` (a flow, an EBM's normalised density,
            ...) and, for the samples panel, ``sample((n,))``; a conditional flow takes
            ``context`` of shape ``(context_dim,)``.
        data: ``(N, 2)`` points.
        path: PNG file to write.
        grid: grid points per axis.
        bounds: ``(xmin, xmax, ymin, ymax)``; default: the data's range plus a margin.
        num_samples: how many samples to draw (default ``len(data)``).
        context: one context vector for a conditional flow.
    """
    _check_2d(model)
    if data.dim() != 2 or data.shape[1] != 2:
        raise ValueError(f"data must have shape (N, 2), got {tuple(data.shape)}")
    if not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    x0, x1, y0, y1 = _bounds(data, bounds)
    gx, gy = torch.linspace(x0, x1, grid), torch.linspace(y0, y1, grid)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    try:
        if context is None:
            dens = model.log_prob(pts).exp().reshape(grid, grid)
        else:
            dens = model.log_prob(pts, context.expand(pts.shape[0], -1)).exp().reshape(grid, grid)
        n = len(data) if num_samples is None else num_samples
        samples = None
        if callable(getattr(model, "sample", None)):
            samples = (model.sample((n,)) if context is None
                       else model.sample(context=context.expand(n, -1)))
    finally:
        if was_training is not None:
            model.train(was_training)

    fig = Figure(figsize=(12, 4), dpi=100)
    axes = fig.subplots(1, 3)
    axes[0].scatter(data[:, 0], data[:, 1], s=3, alpha=0.5)
    axes[0].set_title("data")
    vmax = torch.quantile(dens.flatten(), 0.995).item()  # a few sharp spikes hide the rest
    axes[1].imshow(dens.numpy(), origin="lower", extent=(x0, x1, y0, y1), aspect="auto",
                   cmap="viridis", vmin=0.0, vmax=vmax if vmax > 0 else None)
    axes[1].set_title("learned density p(x)")
    if samples is not None:
        axes[2].scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, color="C1")
    axes[2].set_title("samples" if samples is not None else "(no sampler)")
    for ax in axes:
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
