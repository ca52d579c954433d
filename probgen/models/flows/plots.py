"""The z -> x warp of a 2-D flow: how its transforms bend a square grid of base points.

Examples:
    >>> import tempfile
    >>> from probgen.models.flows.flows import realnvp
    >>> plot_warp(realnvp(2, num_layers=2), f"{tempfile.mkdtemp()}/warp.png").name
    'warp.png'
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from probgen.models.flows.flows import Flow

__all__ = ["plot_warp"]


def _check_2d(flow: Flow) -> None:
    if not isinstance(flow, Flow):
        raise ValueError(f"flow must be a probgen Flow, got {type(flow).__name__}")
    if tuple(flow.event_shape) != (2,):
        raise ValueError(f"flow must be 2-D for this picture, got event shape {flow.event_shape}")


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
