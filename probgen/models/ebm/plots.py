"""Pictures of 2-D EBMs: the energy landscape with its score field, and Langevin paths.

Examples:
    >>> import torch
    >>> from probgen.models.ebm.nets import QuadraticEnergy
    >>> fig = energy_figure(QuadraticEnergy(2), (-2.0, 2.0, -2.0, 2.0))
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probgen.infer.langevin import energy_score

__all__ = ["energy_figure", "plot_energy_2d", "score_field", "plot_trajectories"]


def _lattice(box: tuple[float, float, float, float], n: int) -> tuple[Tensor, Tensor, Tensor]:
    xs = torch.linspace(box[0], box[1], n)
    ys = torch.linspace(box[2], box[3], n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return gx, gy, torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)


def score_field(score: Callable[[Tensor], Tensor], box: tuple[float, float, float, float],
                n: int = 20) -> tuple[Tensor, Tensor, Tensor]:
    """``(X, Y, S)``: an ``n x n`` lattice over ``box`` and the score there (``S`` is
    ``(n, n, 2)``), ready for ``plt.quiver``."""
    gx, gy, pts = _lattice(box, n)
    return gx, gy, score(pts).reshape(n, n, 2)


def energy_figure(energy: Callable[[Tensor], Tensor], box: tuple[float, float, float, float],
                  data: Tensor | None = None, n: int = 150, arrows: int = 20,
                  title: str = "") -> Any:
    """Two panels: ``exp(-E)`` (normalised on the lattice) with the data, and the energy's
    contours with the score field ``-grad E`` as arrows."""
    import matplotlib.pyplot as plt

    gx, gy, pts = _lattice(box, n)
    with torch.no_grad():
        e = energy(pts).reshape(n, n)
    dens = torch.exp(-(e - e.min()))
    fig, ax = plt.subplots(1, 2, figsize=(9, 4.2))
    ax[0].imshow(dens.numpy(), origin="lower", extent=box, cmap="magma", aspect="auto")
    if data is not None:
        ax[0].scatter(data[:500, 0], data[:500, 1], s=2, c="cyan", alpha=0.5)
    ax[0].set_title(f"{title} exp(-E)".strip())
    ax[1].contour(gx.numpy(), gy.numpy(), (e - e.min()).clamp(max=30).numpy(), levels=20,
                  cmap="viridis")
    qx, qy, s = score_field(energy_score(energy), box, arrows)
    norm = s.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    u = s / norm ** 0.5  # compress the range so both small and large arrows show
    ax[1].quiver(qx.numpy(), qy.numpy(), u[..., 0].numpy(), u[..., 1].numpy(), color="k",
                 alpha=0.7)
    ax[1].set_title("energy contours and score -grad E")
    for a in ax:
        a.set_xlim(box[0], box[1])
        a.set_ylim(box[2], box[3])
        a.set_aspect("equal")
    fig.tight_layout()
    return fig


def plot_energy_2d(run: Any, path: str | Path) -> Path:
    """Save the [`energy_figure`][probgen.models.ebm.plots.energy_figure] of a 2-D run."""
    import matplotlib.pyplot as plt

    from probgen.models.ebm.quadrature import data_box

    box = data_box(run.splits.train, 0.5)
    fig = energy_figure(run.net, box, run.splits.train, title=run.config.objective)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_trajectories(ax: Any, path: Tensor, max_paths: int = 20) -> None:
    """Draw Langevin paths ``(T + 1, N, 2)`` on ``ax``: lines, start (o) and end (x)."""
    p = path[:, :max_paths].numpy()
    for i in range(p.shape[1]):
        ax.plot(p[:, i, 0], p[:, i, 1], lw=0.6, alpha=0.8)
    ax.scatter(p[0, :, 0], p[0, :, 1], marker="o", s=12, c="k")
    ax.scatter(p[-1, :, 0], p[-1, :, 1], marker="x", s=16, c="r")
