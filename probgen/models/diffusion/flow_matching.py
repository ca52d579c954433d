"""Flow matching: regress a velocity field onto the velocities of simple conditional paths.

A velocity network ``v(x, t)`` defines the ODE ``dx/dt = v(x, t)`` from noise ``x0 ~ N(0, I)``
at ``t = 0`` to data at ``t = 1``. Flow matching trains it, without simulating the ODE, on
pairs ``(x0, x1)`` (noise, data), a time ``t ~ U(0, 1)`` and a point ``x_t`` of a path between
them with known velocity ``u_t``:

    L = E_{t, (x0, x1)} || v(x_t, t) - u_t(x_t | x0, x1) ||^2.

A [`FlowMatcher`][probgen.models.diffusion.flow_matching.FlowMatcher] is one path and one
coupling of ``(x0, x1)`` (torchcfm's ``sample_location_and_conditional_flow``); the variants
differ in one method each:

- `GaussianFM` (Lipman et al. 2023, eq. 20-23): ``x_t = (1 - (1 - smin) t) x0 + t x1``,
  ``u_t = x1 - (1 - smin) x0``, independent pairs;
- `OTFM` (Tong et al. 2023, sec. 3.2): ``x_t = t x1 + (1 - t) x0 + sigma e``, ``u_t = x1 - x0``,
  pairs matched by exact optimal transport within each batch;
- `RectifiedFlow` (Liu et al. 2023, eq. 1): ``x_t = t x1 + (1 - t) x0``, ``u_t = x1 - x0``,
  independent pairs, or given ones (reflow).

Reflow (Liu et al. 2023, sec. 2.2) trains a new rectified flow on the pairs
``(x0, ODE_v(x0))`` of the previous one: the coupling becomes deterministic, paths stop crossing
and the flow straightens, so a few Euler steps sample well.
[`straightness`][probgen.models.diffusion.flow_matching.straightness] measures it (eq. 6).

A trained velocity is a continuous normalizing flow:
[`velocity_cnf`][probgen.models.diffusion.flow_matching.velocity_cnf] wraps it as a
[`CNF`][probgen.models.flows.cnf.CNF] whose ``log_prob`` is the exact likelihood of the same
ODE code as FFJORD.

Examples:
    >>> import torch
    >>> from probgen.infer.fit import fit
    >>> from probgen.nn.time_embedding import TimeMLP
    >>> v = TimeMLP(2, hidden=(32, 32), time_scale=1.0)
    >>> res = fit(v, None, torch.randn(256, 2) + 3.0, objective=FlowMatchingLoss(OTFM()),
    ...           steps=5, batch_size=64, progress=False)
    >>> euler_sample(v, torch.randn(5, 2), steps=4).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from probgen.errors import ProbgenError
from probgen.infer.objectives import Objective
from probgen.models.flows.cnf import CNF

__all__ = ["FlowMatcher", "GaussianFM", "OTFM", "RectifiedFlow", "ot_coupling",
           "FlowMatchingLoss", "euler_sample", "ode_sample", "straightness",
           "ReversedVelocity", "velocity_cnf"]

Velocity = Callable[[Tensor, Tensor], Tensor]


def _time(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.dim() - 1)))


class FlowMatcher:
    """A probability path between ``x0`` and ``x1`` and a coupling; default the straight
    path ``x_t = t x1 + (1 - t) x0 + sigma e`` (``u_t = x1 - x0``) and independent pairs."""

    name = "cfm"

    def __init__(self, sigma: float = 0.0) -> None:
        if not sigma >= 0:
            raise ProbgenError(f"sigma: must be >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def couple(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """The pairs to train on (default: as drawn, independent)."""
        return x0, x1

    def sample_location_and_conditional_flow(self, x0: Tensor, x1: Tensor, t: Tensor
                                             ) -> tuple[Tensor, Tensor]:
        """``x_t`` and the conditional velocity ``u_t`` for times ``t`` ``(N,)``."""
        tb = _time(t, x0)
        xt = tb * x1 + (1 - tb) * x0
        if self.sigma > 0:
            xt = xt + self.sigma * torch.randn_like(xt)
        return xt, x1 - x0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


class GaussianFM(FlowMatcher):
    """Lipman et al. 2023's optimal-transport Gaussian path: ``mu_t = t x1``,
    ``sigma_t = 1 - (1 - sigma_min) t`` (eq. 20), so ``x_t = sigma_t x0 + t x1`` and
    ``u_t = x1 - (1 - sigma_min) x0`` (eq. 23).

    Examples:
        >>> xt, ut = GaussianFM(0.0).sample_location_and_conditional_flow(
        ...     torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.25]))
        >>> xt.tolist(), ut.tolist()
        ([[0.25, 0.25]], [[1.0, 1.0]])
    """

    name = "fm"

    def __init__(self, sigma_min: float = 1e-4) -> None:
        super().__init__(0.0)
        if not 0 <= sigma_min < 1:
            raise ProbgenError(f"sigma_min: must be in [0, 1), got {sigma_min!r}")
        self.sigma_min = float(sigma_min)

    def sample_location_and_conditional_flow(self, x0: Tensor, x1: Tensor, t: Tensor
                                             ) -> tuple[Tensor, Tensor]:
        tb = _time(t, x0)
        return (1 - (1 - self.sigma_min) * tb) * x0 + tb * x1, x1 - (1 - self.sigma_min) * x0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma_min": self.sigma_min}


def ot_coupling(x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder ``x0`` so that ``(x0[i], x1[i])`` is the exact optimal-transport matching of the
    two batches under squared Euclidean cost (Hungarian algorithm, scipy's
    ``linear_sum_assignment``; Tong et al. 2023, sec. 3.2, with equal batch sizes).

    Examples:
        >>> x0, x1 = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.1], [0.9]])
        >>> ot_coupling(x0, x1)[0].flatten().tolist()
        [0.0, 1.0]
    """
    from scipy.optimize import linear_sum_assignment

    if x0.shape != x1.shape:
        raise ProbgenError(f"x0, x1: OT coupling needs equal shapes, got {tuple(x0.shape)} "
                           f"and {tuple(x1.shape)}")
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()).pow(2)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = np.empty_like(rows)
    order[cols] = rows  # x1[j] is matched with x0[order[j]]
    return x0[torch.as_tensor(order, device=x0.device)], x1


class OTFM(FlowMatcher):
    """OT-CFM (Tong et al. 2023): the straight path with noise ``sigma`` between minibatch
    optimal-transport pairs
    (see [`ot_coupling`][probgen.models.diffusion.flow_matching.ot_coupling]).

    Examples:
        >>> OTFM().config()
        {'name': 'ot', 'sigma': 0.0}
    """

    name = "ot"

    def couple(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        return ot_coupling(x0, x1)


class RectifiedFlow(FlowMatcher):
    """Rectified flow (Liu et al. 2023): the straight path ``x_t = t x1 + (1 - t) x0``,
    ``u_t = x1 - x0`` (eq. 1); trained on given pairs ``(x0, x1)`` it is a reflow step.

    Examples:
        >>> RectifiedFlow().config()
        {'name': 'rectified', 'sigma': 0.0}
    """

    name = "rectified"

    def __init__(self) -> None:
        super().__init__(0.0)


class FlowMatchingLoss(Objective):
    """``sum_i || v(x_t, t) - u_t ||^2`` over a batch (the flow-matching objective).

    The batch is ``(x1,)`` (data; ``x0 ~ N(0, I)`` is drawn and coupled by the matcher) or
    ``(x1, x0)`` (given pairs, e.g. reflow; no re-coupling).

    Args:
        matcher: a [`FlowMatcher`][probgen.models.diffusion.flow_matching.FlowMatcher].

    Examples:
        >>> loss = FlowMatchingLoss(RectifiedFlow())
        >>> v = lambda x, t: torch.ones_like(x)  # the exact velocity when x1 = x0 + 1
        >>> x0 = torch.randn(8, 2)
        >>> abs(loss.loss(v, None, x0 + 1, x0).item()) < 1e-12  # zero up to rounding
        True
    """

    name = "flow_matching"
    #: a batch sum of per-example terms on a plain network (not a Pyro program): the engine
    #: scales a minibatch by N / B without tracing ``model``
    per_example_loss = True

    def __init__(self, matcher: FlowMatcher | None = None) -> None:
        if matcher is not None and not isinstance(matcher, FlowMatcher):
            raise ProbgenError(f"matcher: expected a FlowMatcher, got {type(matcher).__name__}")
        self.matcher = matcher or GaussianFM()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "matcher": self.matcher.config()}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        if guide is not None:
            raise ProbgenError("guide: flow matching takes no guide (pass guide=None)")
        if len(batch) not in (1, 2):
            raise ProbgenError(f"batch: expected (x1,) or (x1, x0), got {len(batch)} tensors")
        x1 = batch[0]
        if len(batch) == 2:
            x0 = batch[1]
            if x0.shape != x1.shape:
                raise ProbgenError(f"batch: x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} differ")
        else:
            x0, x1 = self.matcher.couple(torch.randn_like(x1), x1)
        t = torch.rand(x1.shape[0], device=x1.device, dtype=x1.dtype)
        xt, ut = self.matcher.sample_location_and_conditional_flow(x0, x1, t)
        return (model(xt, t) - ut).pow(2).flatten(1).sum(-1).sum()


def euler_sample(velocity: Velocity, x0: Tensor, steps: int = 100,
                 callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """``steps`` Euler steps of ``dx/dt = v(x, t)`` from ``t = 0`` to ``1``; returns ``x(1)``.

    ``callback(i, t_i, x_i)`` sees every state (``i = 0 .. steps``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ProbgenError(f"steps: must be a positive integer, got {steps!r}")
    x, h = x0, 1.0 / steps
    if callback is not None:
        callback(0, torch.zeros(()), x)
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((x.shape[0],), i * h, dtype=x.dtype, device=x.device)
            x = x + h * velocity(x, t)
            if callback is not None:
                callback(i + 1, torch.tensor((i + 1) * h), x)
    return x


def ode_sample(velocity: Velocity, x0: Tensor, times: Tensor | None = None,
               method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """``x(1)`` by an adaptive torchdiffeq solver, or the states ``(len(times), N, ...)`` at
    ``times`` (increasing from 0)."""
    ts = torch.tensor([0.0, 1.0]) if times is None else torch.as_tensor(times)
    ts = ts.to(x0)
    shape = x0.shape

    def f(t: Tensor, y: Tensor) -> Tensor:
        return velocity(y.reshape(shape), t.expand(shape[0])).reshape(y.shape)

    with torch.no_grad():
        path = odeint(f, x0, ts, method=method, rtol=rtol, atol=atol)
    return path[-1] if times is None else path


def straightness(velocity: Velocity, x0: Tensor, steps: int = 100) -> float:
    """Liu et al. 2023's straightness ``S = int_0^1 E || (Z_1 - Z_0) - v(Z_t, t) ||^2 dt``
    along the simulated flow (``steps`` Euler steps; 0 for perfectly straight paths).

    Examples:
        >>> straightness(lambda x, t: torch.ones_like(x), torch.randn(10, 2)) < 1e-10
        True
    """
    vs: list[Tensor] = []
    x = x0
    h = 1.0 / steps
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((x.shape[0],), i * h, dtype=x.dtype, device=x.device)
            v = velocity(x, t)
            vs.append(v)
            x = x + h * v
        disp = x - x0
        return float(torch.stack([(disp - v).pow(2).flatten(1).sum(-1).mean() for v in vs]
                                 ).mean())


class ReversedVelocity(nn.Module):
    """``f(s, z) = -v(z, 1 - s)``: the noise->data ODE run data->noise in ``s = 1 - t``, the
    direction a [`CNFTransform`][probgen.models.flows.cnf.CNFTransform] scores in."""

    def __init__(self, velocity: nn.Module) -> None:
        super().__init__()
        self.velocity = velocity

    def forward(self, s: Tensor, z: Tensor) -> Tensor:
        t = (1 - s).to(z).expand(z.shape[0])
        return -self.velocity(z, t)


def velocity_cnf(velocity: nn.Module, dim: int, **kwargs: Any) -> CNF:
    """The flow-matching model as a [`CNF`][probgen.models.flows.cnf.CNF] over ``(dim,)``
    vectors (``kwargs``: its solver settings, ``exact_trace``, ``rtol``, ...): ``log_prob`` is
    the exact likelihood by the instantaneous change of variables, ``sample`` runs the ODE.

    Examples:
        >>> from probgen.nn.time_embedding import TimeMLP
        >>> cnf = velocity_cnf(TimeMLP(2, hidden=(8,)), 2)
        >>> cnf.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
    """
    return CNF(dim, dynamics=ReversedVelocity(velocity), **kwargs)
