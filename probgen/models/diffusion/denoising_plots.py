"""Denoising trajectories of a diffusion run as pictures.

[`trajectory`][probgen.models.diffusion.denoising_plots.trajectory] records, along one
reverse chain, the state ``x_t`` and the network's current guess of ``x_0`` at a few steps;
[`save_trajectory`][probgen.models.diffusion.denoising_plots.save_trajectory] writes them as a
PNG grid (one row per sample: ``x_t`` from pure noise to the sample, then the ``x_0``
guesses).

Examples:
    >>> from probgen.models.family import train
    >>> run = train("diffusion", fast=True, progress=False)
    >>> states, guesses, steps = trajectory(run, n=2, frames=4)
    >>> states.shape, len(steps)
    (torch.Size([2, 4, 64]), 4)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = ["trajectory", "save_trajectory"]


def trajectory(run: Any, n: int = 8, frames: int = 10, seed: int = 0
               ) -> tuple[Tensor, Tensor, list[int]]:
    """``(states, x0_guesses, steps)``: ``(n, frames, *data_shape)`` tensors on the chain's
    scale at ``frames`` evenly spread steps of the run's current sampler."""
    if frames < 2:
        raise ProbgenError(f"frames: need at least 2, got {frames}")
    seen: list[tuple[int, Tensor, Tensor]] = []
    run.sample_model_space(n, seed=seed, callback=lambda t, x, x0: seen.append(
        (t, x.detach().cpu(), x0.detach().cpu())))
    idx = torch.linspace(0, len(seen) - 1, frames).round().long().tolist()
    states = torch.stack([seen[i][1] for i in idx], 1)
    guesses = torch.stack([seen[i][2] for i in idx], 1)
    return states, guesses, [seen[i][0] for i in idx]


def save_trajectory(run: Any, path: str | os.PathLike, n: int = 8, frames: int = 10,
                    seed: int = 0) -> Path:
    """A PNG: per sample, ``x_t`` at ``frames`` steps (noise -> sample), then the network's
    ``x_0`` guesses at the same steps. Digits only."""
    from probgen.metrics.grids import save_grid

    if run.kind != "digits":
        raise ProbgenError(f"run: trajectories are drawn for digits, not {run.kind}")
    states, guesses, _ = trajectory(run, n, frames, seed)
    rows = torch.cat([states, guesses], 1).reshape(-1, 1, 8, 8)
    return save_grid(((rows + 1) / 2).clamp(0, 1), path, nrow=2 * frames)
