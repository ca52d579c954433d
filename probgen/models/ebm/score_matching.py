"""Score-matching objectives for EBMs and score networks (the objective protocol of
[`probgen.infer.objectives`][probgen.infer.objectives]).

Write ``s(x) = -grad_x E(x)`` for the score of an energy program (read from its ``"energy"``
factor by [`energy_of`][probgen.models.ebm.program.energy_of]). Every loss is summed over the batch.

- [`ScoreMatching`][probgen.models.ebm.score_matching.ScoreMatching]: Hyvarinen (2005), eq. 4,
  ``J = E[tr(grad_x s(x)) + |s(x)|^2 / 2]`` with the trace of the Jacobian computed exactly
  (``D`` extra backward passes: the cost grows with the dimension);
- [`SlicedScoreMatching`][probgen.models.ebm.score_matching.SlicedScoreMatching]: Song et al.
  (2019), eq. 8 (SSM-VR, the variance-reduced form), ``J = E_v E_x[v^T grad_x s(x) v +
  |s(x)|^2 / 2]`` with random projections ``v`` (one Hessian-vector product each);
- [`DenoisingScoreMatching`][probgen.models.ebm.score_matching.DenoisingScoreMatching]: Vincent
  (2011), eq. 11 with a Gaussian kernel, ``J = E |s(x + sigma z) + z / sigma|^2 / 2``;
- [`NCSNLoss`][probgen.models.ebm.score_matching.NCSNLoss]: Song & Ermon (2019), eqs. 5-6, DSM over
  geometric noise levels with weights ``lambda(sigma) = sigma^2`` for a noise-conditional score
  network ``model(x, sigma)``: ``sum_n |sigma_n s(x~_n, sigma_n) + z_n|^2 / 2``, ``sigma_n``
  drawn uniformly from the levels per example.

All of them run under ``torch.enable_grad()`` (they differentiate in ``x``), so the engine's
validation, which runs without gradients, scores them too.

Examples:
    >>> import torch
    >>> from probgen.models.ebm.nets import QuadraticEnergy
    >>> from probgen.models.ebm.program import EnergyProgram
    >>> prog = EnergyProgram(QuadraticEnergy(2))  # N(0, I): J = -2 + |x|^2 / 2 per point
    >>> ScoreMatching().loss(prog.model, None, torch.tensor([[1.0, 1.0]])).item()
    -1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.infer.langevin import geometric_sigmas
from probgen.infer.objectives import Objective
from probgen.models.ebm.program import energy_grad, energy_of
from probgen.nn.ema import EMA

__all__ = ["ScoreMatching", "SlicedScoreMatching", "DenoisingScoreMatching", "NCSNLoss"]


def _energy(model: Callable) -> Callable[[Tensor], Tensor]:
    return lambda x: energy_of(model, x)


def _batch(guide: Any, batch: tuple) -> Tensor:
    if guide is not None:
        raise ProbgenError("guide: EBM objectives take no guide (pass guide=None)")
    if len(batch) != 1:
        raise ProbgenError(f"batch: EBM objectives take one tensor x, got {len(batch)}")
    x = batch[0]
    if not torch.isfinite(x).all():
        raise ProbgenError("x: the batch holds non-finite values (nan or inf)")
    return x.float() if not x.is_floating_point() else x


def _positive(name: str, v: float) -> float:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise ProbgenError(f"{name}: must be a finite number > 0, got {v!r}")
    return float(v)


class ScoreMatching(Objective):
    """Exact (Hyvarinen 2005) score matching: ``sum_n [-lap E(x_n) + |grad E(x_n)|^2 / 2]``.

    Examples:
        >>> ScoreMatching().config()
        {'name': 'score_matching'}
    """

    name = "score_matching"

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        x = _batch(guide, batch)
        with torch.enable_grad():
            x, _, g = energy_grad(_energy(model), x)
            flat = g.reshape(g.shape[0], -1)
            lap = torch.zeros(g.shape[0], device=x.device, dtype=g.dtype)
            for i in range(flat.shape[1]):  # tr(grad_x s) = -sum_i d^2 E / dx_i^2, exactly
                (col,) = torch.autograd.grad(flat[:, i].sum(), x, create_graph=True)
                lap = lap + col.reshape(col.shape[0], -1)[:, i]
            return (-lap + 0.5 * (flat ** 2).sum(-1)).sum()


class SlicedScoreMatching(Objective):
    """Sliced score matching with variance reduction (Song et al. 2019, eq. 8).

    ``sum_n mean_m [-v_m^T (grad^2 E) v_m] + |grad E(x_n)|^2 / 2`` with ``num_projections``
    vectors ``v_m`` per example, Gaussian or Rademacher (both have ``E[v v^T] = I``).

    Examples:
        >>> SlicedScoreMatching(2, "rademacher").config()["projections"]
        'rademacher'
    """

    name = "sliced_score_matching"

    def __init__(self, num_projections: int = 1, projections: str = "gaussian") -> None:
        if isinstance(num_projections, bool) or not isinstance(num_projections, int) \
                or num_projections < 1:
            raise ProbgenError(f"num_projections: must be a positive integer, got "
                               f"{num_projections!r}")
        if projections not in ("gaussian", "rademacher"):
            raise ProbgenError(f"projections: must be 'gaussian' or 'rademacher', got "
                               f"{projections!r}")
        self.num_projections, self.projections = num_projections, projections

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "num_projections": self.num_projections,
                "projections": self.projections}

    def _vectors(self, like: Tensor) -> Tensor:
        v = torch.randn((self.num_projections, *like.shape), device=like.device,
                        dtype=like.dtype)
        return v.sign() if self.projections == "rademacher" else v

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        x = _batch(guide, batch)
        with torch.enable_grad():
            x, _, g = energy_grad(_energy(model), x)
            dims = tuple(range(1, x.dim()))
            vhv = torch.zeros(x.shape[0], device=x.device, dtype=g.dtype)
            for v in self._vectors(x):
                (hv,) = torch.autograd.grad((g * v).sum(), x, create_graph=True)
                vhv = vhv + (hv * v).sum(dims)
            vhv = vhv / self.num_projections
            return (-vhv + 0.5 * (g ** 2).sum(dims)).sum()


class DenoisingScoreMatching(Objective):
    """Denoising score matching at one noise level (Vincent 2011, eq. 11) on an energy:
    ``sum_n |-grad E(x_n + sigma z_n) + z_n / sigma|^2 / 2``.

    The minimiser is the score of the data convolved with ``N(0, sigma^2 I)``.

    Examples:
        >>> DenoisingScoreMatching(0.1).config()
        {'name': 'dsm', 'sigma': 0.1}
    """

    name = "dsm"

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = _positive("sigma", sigma)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        x = _batch(guide, batch)
        z = torch.randn_like(x)
        with torch.enable_grad():
            _, _, g = energy_grad(_energy(model), x + self.sigma * z)
            return 0.5 * ((-g + z / self.sigma) ** 2).reshape(x.shape[0], -1).sum()


class NCSNLoss(Objective):
    """The multi-level NCSN loss (Song & Ermon 2019, eqs. 5-6) for ``model(x, sigma)``.

    ``sum_n sigma_n^2 / 2 |s(x_n + sigma_n z_n, sigma_n) + z_n / sigma_n|^2`` with
    ``sigma_n`` uniform over the levels (``lambda(sigma) = sigma^2``, so every level weighs
    about the same).

    Args:
        sigmas: the noise levels, or ``None`` for ``geometric_sigmas(sigma_max, sigma_min,
            num_levels)``.

    Examples:
        >>> NCSNLoss(sigma_max=1.0, sigma_min=0.01, num_levels=3).sigmas
        tensor([1.0000, 0.1000, 0.0100])
    """

    name = "ncsn"
    #: a batch sum of per-example terms on a plain network (the engine scales it by N / B)
    per_example_loss = True

    def __init__(self, sigmas: Sequence[float] | Tensor | None = None, *,
                 sigma_max: float = 1.0, sigma_min: float = 0.01, num_levels: int = 10,
                 ema_of: nn.Module | None = None, ema_decay: float = 0.999) -> None:
        if sigmas is None:
            self.sigmas = geometric_sigmas(sigma_max, sigma_min, num_levels)
        else:
            self.sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
            for s in self.sigmas.tolist():
                _positive("sigmas", s)
        #: with ``ema_of`` (the trained score network): an [`EMA`][probgen.nn.ema.EMA] of its
        #: weights, updated before every step, to sample with (Song & Ermon 2020, technique 5)
        self.ema = EMA(ema_of, ema_decay) if ema_of is not None else None
        self._source = ema_of

    def modules(self) -> dict[str, nn.Module]:
        return {"ema": self.ema} if self.ema is not None else {}

    def before_step(self, model: Callable, guide: Callable | None, *batch: Tensor
                    ) -> dict[str, float]:
        if self.ema is not None:
            self.ema.update(self._source)
        return {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigmas": [round(s, 6) for s in self.sigmas.tolist()],
                "ema": None if self.ema is None else self.ema.decay}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        x = _batch(guide, batch)
        n = x.shape[0]
        idx = torch.randint(len(self.sigmas), (n,), device=x.device)
        sigma = self.sigmas.to(x.device)[idx]
        shape = (n,) + (1,) * (x.dim() - 1)
        z = torch.randn_like(x)
        with torch.enable_grad():
            s = model(x + sigma.view(shape) * z, sigma)
            if s.shape != x.shape:
                raise ProbgenError(f"model: the score has shape {tuple(s.shape)}, expected "
                                   f"{tuple(x.shape)}")
            return 0.5 * ((sigma.view(shape) * s + z) ** 2).reshape(n, -1).sum()
