"""Pictures of GAN training: the two players' losses over the steps.

Examples:
    >>> import tempfile, os
    >>> h = [{"step": s, "loss": 1.0 / s, "d_loss": 1.3} for s in range(1, 5)]
    >>> os.path.basename(plot_players(h, os.path.join(tempfile.mkdtemp(), "p.png")))
    'p.png'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["plot_players"]


def plot_players(history: list[dict[str, Any]], path: str | os.PathLike,
                 title: str = "the two players") -> Path:
    """Generator loss (``loss``, per example) and discriminator loss (``d_loss``) per logged step,
    and the discriminator's mean scores on real and fake examples when logged."""
    # a bare Figure: no pyplot state and no backend switch (the caller's, e.g. a notebook's
    # inline backend, is left alone)
    from matplotlib.figure import Figure

    from probgen.metrics.grids import _write_figure

    steps = [h["step"] for h in history]
    fig = Figure(figsize=(8, 3))
    axes = fig.subplots(1, 2)
    axes[0].plot(steps, [h.get("loss") for h in history], label="generator")
    if any("d_loss" in h for h in history):
        axes[0].plot(steps, [h.get("d_loss") for h in history], label="discriminator")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    for key, label in (("d_real", "D on real"), ("d_fake", "D on fake")):
        if any(key in h for h in history):
            axes[1].plot(steps, [h.get(key) for h in history], label=label)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("mean score")
    if axes[1].lines:
        axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return _write_figure(fig, path)
