"""Pictures of continuous-time models on 2-D data: particle trajectories from noise to data,
the learned vector field, and the marginal density over time.

A trajectory is a tensor ``(K, N, 2)``: ``K`` times, ``N`` particles, from noise (index 0) to
data (index ``K - 1``); [`flow_path`][probgen.models.diffusion.plots.flow_path] makes one from a
velocity field, a reverse-SDE sampler's ``callback`` another. Figures use
``matplotlib.figure.Figure`` (no pyplot) and are written as PNG; every function returns the path.

Examples:
    >>> import tempfile, torch
    >>> v = lambda x, t: -x  # contracts towards the origin
    >>> paths = {"contract": flow_path(v, torch.randn(50, 2), steps=10)}
    >>> plot_trajectories(paths, torch.zeros(5, 2), f"{tempfile.mkdtemp()}/t.png").name
    't.png'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.models.diffusion.flow_matching import euler_sample

__all__ = ["flow_path", "plot_trajectories", "plot_vector_field", "plot_marginals"]

Velocity = Callable[[Tensor, Tensor], Tensor]


def flow_path(velocity: Velocity, x0: Tensor, steps: int = 100) -> Tensor:
    """The Euler path ``(steps + 1, N, D)`` of ``dx/dt = v(x, t)`` from ``x0`` at ``t = 0``."""
    states: list[Tensor] = []
    euler_sample(velocity, x0, steps, callback=lambda i, t, x: states.append(x.detach().cpu()))
    return torch.stack(states)


def _check_paths(paths: Mapping[str, Tensor]) -> None:
    if not paths:
        raise ProbgenError("paths: give at least one trajectory")
    for name, p in paths.items():
        if p.dim() != 3 or p.shape[-1] != 2 or p.shape[0] < 2:
            raise ProbgenError(f"paths[{name!r}]: expected (K >= 2, N, 2), got {tuple(p.shape)}")


def _limits(data: Tensor, pad: float = 0.6) -> tuple[float, float, float, float]:
    lo, hi = data.min(0).values - pad, data.max(0).values + pad
    return lo[0].item(), hi[0].item(), lo[1].item(), hi[1].item()


def plot_trajectories(paths: Mapping[str, Tensor], data: Tensor, path: str | Path,
                      lines: int = 200) -> Path:
    """One panel per method: ``lines`` particle paths from noise (blue) to their end (orange)
    over the data (grey)."""
    _check_paths(paths)
    x0, x1, y0, y1 = _limits(data.cpu())
    fig = Figure(figsize=(4 * len(paths), 4), dpi=100)
    axes = fig.subplots(1, len(paths), squeeze=False)[0]
    for ax, (name, p) in zip(axes, paths.items()):
        p = p.detach().cpu()[:, :lines]
        ax.scatter(data[:, 0].cpu(), data[:, 1].cpu(), s=2, color="0.8")
        ax.plot(p[:, :, 0].numpy(), p[:, :, 1].numpy(), color="C2", lw=0.5, alpha=0.5)
        ax.scatter(p[0, :, 0], p[0, :, 1], s=4, color="C0", label="noise")
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=4, color="C1", label="end")
        ax.set_title(name)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    axes[0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(path), format="png")
    return Path(path)


@torch.no_grad()
def plot_vector_field(velocity: Velocity, data: Tensor, path: str | Path,
                      times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), grid: int = 20
                      ) -> Path:
    """Arrows of ``v(x, t)`` on a ``grid x grid`` lattice at each of ``times`` (colour: speed)."""
    x0, x1, y0, y1 = _limits(data.cpu())
    gx, gy = torch.linspace(x0, x1, grid), torch.linspace(y0, y1, grid)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    device = next(iter(getattr(velocity, "parameters", lambda: iter([pts]))()), pts).device
    fig = Figure(figsize=(3.2 * len(times), 3.2), dpi=100)
    axes = fig.subplots(1, len(times), squeeze=False)[0]
    for ax, t in zip(axes, times):
        v = velocity(pts.to(device), torch.full((len(pts),), float(t), device=device)).cpu()
        ax.scatter(data[:, 0].cpu(), data[:, 1].cpu(), s=1, color="0.85")
        ax.quiver(pts[:, 0], pts[:, 1], v[:, 0], v[:, 1], v.norm(dim=-1), cmap="viridis")
        ax.set_title(f"v(x, t={t:g})")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(Path(path), format="png")
    return Path(path)


def plot_marginals(paths: Mapping[str, Tensor], data: Tensor, path: str | Path,
                   columns: int = 6, bins: int = 60,
                   labels: Sequence[str] | None = None) -> Path:
    """Rows: methods; columns: ``columns`` evenly spaced times of each trajectory; each cell a
    2-D histogram of the particles, i.e. the marginal density ``p_t`` over time."""
    _check_paths(paths)
    x0, x1, y0, y1 = _limits(data.cpu())
    fig = Figure(figsize=(2.2 * columns, 2.2 * len(paths)), dpi=100)
    axes = fig.subplots(len(paths), columns, squeeze=False)
    for row, (name, p) in zip(axes, paths.items()):
        k = p.shape[0]
        idx = torch.linspace(0, k - 1, columns).round().long()
        for j, (ax, i) in enumerate(zip(row, idx)):
            pts = p[i].detach().cpu()
            ax.hist2d(pts[:, 0].numpy(), pts[:, 1].numpy(), bins=bins,
                      range=[[x0, x1], [y0, y1]], cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            frac = i.item() / (k - 1)
            ax.set_title(labels[j] if labels is not None else f"{name}: {frac:.2f}",
                         fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(path), format="png")
    return Path(path)
