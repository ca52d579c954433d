"""Pictures of flows: learned 2-D densities beside the data, the z -> x warp, sample grids.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global backend state)
and written as PNG; every function returns the path it wrote.

Examples:
    >>> import tempfile, torch
    >>> from probgen.models.flows import realnvp
    >>> flow, data = realnvp(2, num_layers=2), torch.randn(100, 2)
    >>> d = tempfile.mkdtemp()
    >>> plot_density_2d(flow, data, f"{d}/density.png", grid=40).name
    'density.png'
    >>> plot_warp(flow, f"{d}/warp.png").name
    'warp.png'
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from probgen.models.flows import Flow

__all__ = ["plot_density_2d", "plot_warp", "plot_samples_grid"]


def _check_2d(flow: Flow) -> None:
    if not isinstance(flow, Flow):
        raise ValueError(f"flow must be a probgen Flow, got {type(flow).__name__}")
    if tuple(flow.event_shape) != (2,):
        raise ValueError(f"flow must be 2-D for this picture, got event shape {flow.event_shape}")


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
    flow: Flow,
    data: Tensor,
    path: str | Path,
    grid: int = 200,
    bounds: tuple[float, float, float, float] | None = None,
    num_samples: int | None = None,
    context: Tensor | None = None,
) -> Path:
    """Three panels: the data, the learned density ``exp log p(x)`` on a grid, and samples.

    Args:
        flow: a 2-D :class:`~probgen.models.flows.Flow` (unconditional, or give ``context``
            of shape ``(context_dim,)``).
        data: ``(N, 2)`` points.
        path: PNG file to write.
        grid: grid points per axis.
        bounds: ``(xmin, xmax, ymin, ymax)``; default: the data's range plus a margin.
        num_samples: how many samples to draw (default ``len(data)``).
        context: one context vector for a conditional flow.
    """
    _check_2d(flow)
    if data.dim() != 2 or data.shape[1] != 2:
        raise ValueError(f"data must have shape (N, 2), got {tuple(data.shape)}")
    if not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    x0, x1, y0, y1 = _bounds(data, bounds)
    gx, gy = torch.linspace(x0, x1, grid), torch.linspace(y0, y1, grid)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    ctx = None if context is None else context.expand(pts.shape[0], -1)
    was_training = flow.training
    flow.eval()
    try:
        dens = flow.log_prob(pts, ctx).exp().reshape(grid, grid)
        n = len(data) if num_samples is None else num_samples
        samples = (flow.sample((n,)) if context is None
                   else flow.sample(context=context.expand(n, -1)))
    finally:
        flow.train(was_training)

    fig = Figure(figsize=(12, 4), dpi=100)
    axes = fig.subplots(1, 3)
    axes[0].scatter(data[:, 0], data[:, 1], s=3, alpha=0.5)
    axes[0].set_title("data")
    vmax = torch.quantile(dens.flatten(), 0.995).item()  # a few sharp spikes hide the rest
    axes[1].imshow(dens.numpy(), origin="lower", extent=(x0, x1, y0, y1), aspect="auto",
                   cmap="viridis", vmin=0.0, vmax=vmax if vmax > 0 else None)
    axes[1].set_title("learned density p(x)")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, color="C1")
    axes[2].set_title("samples")
    for ax in axes:
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


@torch.no_grad()
def plot_warp(
    flow: Flow,
    path: str | Path,
    lines: int = 15,
    extent: float = 3.0,
    max_panels: int = 6,
    context: Tensor | None = None,
) -> Path:
    """How the flow bends a square grid of base points ``z`` into data space ``x``.

    One panel for ``z`` and one after each transform (base -> data order); with more than
    ``max_panels - 1`` transforms only ``z`` and the final ``x`` are drawn. Lines are coloured
    by their ``z`` coordinate so the warp can be followed panel to panel.
    """
    _check_2d(flow)
    if not isinstance(lines, int) or lines < 2:
        raise ValueError(f"lines must be an int >= 2, got {lines!r}")
    t = torch.linspace(-extent, extent, lines)
    dense = torch.linspace(-extent, extent, 100)
    vertical = torch.stack([t[:, None].expand(-1, 100), dense[None].expand(lines, -1)], -1)
    horizontal = vertical.flip(-1)
    pts = torch.cat([vertical, horizontal]).reshape(-1, 2)  # (2*lines*100, 2)
    was_training = flow.training
    flow.eval()
    try:
        d = flow(None if context is None else context.expand(pts.shape[0], -1))
        stages, names, cur = [pts], ["z (base)"], pts
        for tr in d.transforms:
            cur = tr(cur)
            stages.append(cur)
            names.append(f"after {type(tr).__name__}")
    finally:
        flow.train(was_training)
    if len(stages) > max_panels:
        stages, names = [stages[0], stages[-1]], [names[0], "x (data)"]
    else:
        names[-1] = "x (data)"

    fig = Figure(figsize=(4 * len(stages), 4), dpi=100)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, s, name in zip(axes, stages, names):
        s = s.reshape(2 * lines, 100, 2)
        for i in range(2 * lines):
            ax.plot(s[i, :, 0], s[i, :, 1], lw=0.8, color=f"C{0 if i < lines else 1}",
                    alpha=0.4 + 0.6 * (i % lines) / (lines - 1))
        ax.set_title(name)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def plot_samples_grid(images: Tensor, path: str | Path, nrow: int | None = None,
                      title: str | None = None) -> Path:
    """Images ``(N, C, H, W)`` or ``(N, H, W)`` in a grid (grey for one channel).

    Examples:
        >>> import tempfile
        >>> p = plot_samples_grid(torch.rand(16, 1, 8, 8), f"{tempfile.mkdtemp()}/s.png")
        >>> p.suffix
        '.png'
    """
    images = images.detach().cpu()
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), C in (1, 3); "
                         f"got {tuple(images.shape)}")
    n = images.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    fig = Figure(figsize=(nrow, ncol), dpi=100)
    axes = fig.subplots(ncol, nrow, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = images[i].permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(img, cmap="gray" if images.shape[1] == 1 else None)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
