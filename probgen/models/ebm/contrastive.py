"""Contrastive objectives for EBM programs: contrastive divergence and NCE.

- [`ContrastiveDivergence`][probgen.models.ebm.contrastive.ContrastiveDivergence]: maximum
  likelihood with model samples from short Langevin chains (Hinton 2002; Du & Mordatch 2019):
  ``grad log Z = -E_p[grad E]``, so ``loss = sum_n [E(x_n) - E(x~_n)] + alpha sum_n
  [E(x_n)^2 + E(x~_n)^2]`` (Du & Mordatch 2019, eq. 2 and the regulariser of sec. 3.3) with
  negatives ``x~`` from ``num_steps`` Langevin steps started from a *replay buffer* of
  persistent chains (95%) or uniform noise (5%; sec. 3.1). The buffer is a module buffer of
  the objective (``modules()`` of [`Objective`][probgen.infer.objectives.Objective]): the run
  folder saves it and a resumed run continues the same chains exactly.
- [`NCE`][probgen.models.ebm.contrastive.NCE]: noise-contrastive estimation (Gutmann &
  Hyvarinen 2010, eq. 3 with ``nu`` noise points per data point): logistic regression of
  data against samples of a known noise ``q`` with the log-ratio
  ``G(u) = -E(u) - c - log q(u) - log nu``, where ``c = log Z`` is learned: a parameter the
  objective owns (``parameters()``).

Examples:
    >>> import torch
    >>> from probgen.models.ebm.nets import QuadraticEnergy
    >>> from probgen.models.ebm.program import EnergyProgram
    >>> nce = NCE(torch.zeros(2), torch.ones(2))
    >>> nce.loss(EnergyProgram(QuadraticEnergy(2)).model, None, torch.zeros(8, 2)).shape
    torch.Size([])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.infer.langevin import energy_score, langevin
from probgen.infer.objectives import Objective
from probgen.models.ebm.program import energy_of
from probgen.models.ebm.score_matching import _batch, _positive

__all__ = ["ContrastiveDivergence", "ReplayBuffer", "NCE", "GaussianNoise"]


class ReplayBuffer(nn.Module):
    """``capacity`` persistent chain states in a box ``[low, high]`` (all module buffers)."""

    def __init__(self, low: Tensor, high: Tensor, capacity: int = 10000, seed: int = 0) -> None:
        super().__init__()
        low, high = torch.as_tensor(low).float(), torch.as_tensor(high).float()
        if low.shape != high.shape or not (high > low).all():
            raise ProbgenError("low, high: need the same shape and high > low everywhere")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ProbgenError(f"capacity: must be a positive integer, got {capacity!r}")
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("states", low + (high - low) * torch.rand(
            (capacity, *low.shape), generator=gen))

    def uniform(self, n: int) -> Tensor:
        return self.low + (self.high - self.low) * torch.rand(
            (n, *self.low.shape), device=self.low.device)


class ContrastiveDivergence(Objective):
    """CD with persistent Langevin chains and a replay buffer (Du & Mordatch 2019).

    Args:
        low: lower corner of the box of the uniform restarts (per coordinate; e.g. the
            data minimum).
        high: its upper corner.
        step_size: Langevin step ``eps`` of
            [`langevin_step`][probgen.infer.langevin.langevin_step].
        num_steps: Langevin steps per training step.
        noise_scale: scales the Langevin noise (Du & Mordatch use less than the exact
            ``sqrt(2 eps)``; 1 is unbiased Langevin).
        reinit: fraction of chains restarted from uniform noise each step.
        alpha: weight of the energy-magnitude regulariser.
        capacity: replay-buffer size.
    """

    name = "cd"

    def __init__(self, low: Tensor, high: Tensor, *, step_size: float = 0.01,
                 num_steps: int = 20, noise_scale: float = 1.0, reinit: float = 0.05,
                 alpha: float = 0.1, capacity: int = 10000, seed: int = 0) -> None:
        self.step_size = _positive("step_size", step_size)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ProbgenError(f"num_steps: must be a positive integer, got {num_steps!r}")
        if not (math.isfinite(noise_scale) and noise_scale >= 0):
            raise ProbgenError(f"noise_scale: must be a finite number >= 0, got {noise_scale!r}")
        if not 0 <= reinit <= 1:
            raise ProbgenError(f"reinit: must be in [0, 1], got {reinit!r}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ProbgenError(f"alpha: must be a finite number >= 0, got {alpha!r}")
        self.num_steps, self.noise_scale = num_steps, float(noise_scale)
        self.reinit, self.alpha = float(reinit), float(alpha)
        self.buffer = ReplayBuffer(low, high, capacity, seed)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "step_size": self.step_size, "num_steps": self.num_steps,
                "noise_scale": self.noise_scale, "reinit": self.reinit, "alpha": self.alpha,
                "capacity": int(self.buffer.states.shape[0])}

    def modules(self) -> dict[str, nn.Module]:
        return {"buffer": self.buffer}

    def negatives(self, energy: Callable[[Tensor], Tensor], n: int) -> tuple[Tensor, Tensor]:
        """``n`` chain states after ``num_steps`` Langevin steps, and their buffer slots."""
        buf = self.buffer
        slots = torch.randint(buf.states.shape[0], (n,), device=buf.states.device)
        start = buf.states[slots].clone()
        fresh = torch.rand(n, device=start.device) < self.reinit
        if fresh.any():
            start[fresh] = buf.uniform(int(fresh.sum()))
        x = langevin(energy_score(energy), start, self.step_size, self.num_steps,
                     noise_scale=self.noise_scale)
        return x, slots

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        x = _batch(guide, batch)

        def energy(u: Tensor) -> Tensor:
            return energy_of(model, u)

        neg, slots = self.negatives(energy, x.shape[0])
        if torch.is_grad_enabled():  # a training step: the chains persist
            self.buffer.states[slots] = neg
        e_pos, e_neg = energy(x), energy(neg)
        reg = self.alpha * (e_pos ** 2 + e_neg ** 2).sum()
        return (e_pos - e_neg).sum() + reg


class GaussianNoise(nn.Module):
    """The NCE noise ``q = N(loc, diag(scale^2))`` (module buffers, saved with the run)."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__()
        loc, scale = torch.as_tensor(loc).float(), torch.as_tensor(scale).float()
        if loc.shape != scale.shape or not (scale > 0).all():
            raise ProbgenError("loc, scale: need the same shape and scale > 0")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def sample(self, n: int) -> Tensor:
        return self.loc + self.scale * torch.randn((n, *self.loc.shape), device=self.loc.device)

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.loc) / self.scale
        per = -0.5 * z ** 2 - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)
        return per.reshape(x.shape[0], -1).sum(-1)


class NCE(Objective):
    """Noise-contrastive estimation with a learned log-normaliser ``log_z``.

    ``loss = -sum_n log sigmoid(G(x_n)) - sum_m log sigmoid(-G(y_m))`` over the batch and
    ``nu * N`` noise samples ``y_m ~ q``, ``G(u) = -E(u) - log_z - log q(u) - log nu``. At the
    optimum ``exp(-E - log_z)`` is the normalised data density (Gutmann & Hyvarinen 2010,
    theorem 1).

    Args:
        loc: mean of the Gaussian noise (e.g. the data mean).
        scale: its standard deviation (e.g. 1.5x the data spread).
        nu: noise samples per data point.
    """

    name = "nce"

    def __init__(self, loc: Tensor, scale: Tensor, nu: int = 1) -> None:
        if isinstance(nu, bool) or not isinstance(nu, int) or nu < 1:
            raise ProbgenError(f"nu: must be a positive integer, got {nu!r}")
        self.noise = GaussianNoise(loc, scale)
        self.nu = nu
        self.log_z = torch.zeros((), requires_grad=True)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "nu": self.nu}

    def parameters(self) -> list[Tensor]:
        return [self.log_z]

    def modules(self) -> dict[str, nn.Module]:
        return {"noise": self.noise}

    def logit(self, model: Callable, u: Tensor) -> Tensor:
        """``G(u)``: the classifier's log-odds that ``u`` is data."""
        return (-energy_of(model, u) - self.log_z.to(u.device) - self.noise.log_prob(u)
                - math.log(self.nu))

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        x = _batch(guide, batch)
        y = self.noise.sample(self.nu * x.shape[0])
        return -F.logsigmoid(self.logit(model, x)).sum() - F.logsigmoid(
            -self.logit(model, y)).sum()
