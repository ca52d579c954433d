"""The probability-flow ODE of a score SDE: deterministic sampling and exact likelihood.

Every forward SDE has an ODE with the same marginals ``p_t`` (Song et al. 2021, eq. 13):

    dx/dt = f(x, t) - g(t)^2 score(x, t) / 2.

With a learned score it is a continuous normalizing flow from ``p_eps`` (data) to the prior at
``T``, so the instantaneous change of variables (Chen et al. 2018, thm. 1; Song et al. 2021,
eq. 39) gives the log-likelihood

    log p_eps(x) = log p_T(x(T)) + int_eps^T tr(d f_ode / dx)(x(t), t) dt,

solved by the CNF's own [`integrate_with_trace`][probgen.models.flows.cnf.integrate_with_trace]
(torchdiffeq; the exact trace in low dimension, Hutchinson's estimate above).

Examples:
    >>> import torch
    >>> from probgen.models.diffusion.sde import VPSDE
    >>> sde = VPSDE()
    >>> true_score = lambda x, t: -x  # data N(0, I): every p_t is N(0, I)
    >>> lp = pf_ode_log_prob(sde, true_score, torch.zeros(1, 2))
    >>> round(lp.item(), 4)  # log N(0; 0, I) in 2-D
    -1.8379
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from probgen.errors import ProbgenError
from probgen.models.diffusion.sde import SDE
from probgen.models.flows.cnf import integrate_with_trace

__all__ = ["ProbabilityFlow", "pf_ode_sample", "pf_ode_log_prob"]

Score = Callable[[Tensor, Tensor], Tensor]


class ProbabilityFlow(nn.Module):
    """The right-hand side ``f(t, x) = f(x, t) - g(t)^2 score(x, t) / 2`` in torchdiffeq's
    argument order (``x`` flat ``(N, D)``; ``shape`` the score's example shape).

    Adaptive solvers probe times just outside ``[eps, T]`` (torchdiffeq's first-step guess,
    and dopri5 steps past the end and interpolates back), where ``s(t)`` is undefined: ``t``
    is clamped to ``[eps, T]``.

    Examples:
        >>> from probgen.models.diffusion.sde import VPSDE
        >>> f = ProbabilityFlow(VPSDE(), lambda x, t: -x)
        >>> # N(0, I) is stationary: the drift is 0 up to rounding
        >>> f(torch.tensor(0.5), torch.ones(3, 2)).abs().max().item() < 1e-6
        True
    """

    def __init__(self, sde: SDE, score: Score, shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.sde, self.score, self.shape = sde, score, shape
        if isinstance(score, nn.Module):
            self.score_module = score  # registered, so its parameters are the flow's

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        y = x if self.shape is None else x.reshape(-1, *self.shape)
        tt = t.to(y).clamp(self.sde.eps, self.sde.T).expand(y.shape[0])
        return self.sde.ode_drift(y, tt, self.score(y, tt)).reshape(x.shape)


def pf_ode_sample(sde: SDE, score: Score, x: Tensor, steps: int | None = None,
                  method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                  times: Tensor | None = None) -> Tensor:
    """Integrate the probability-flow ODE from prior draws ``x`` at ``T`` down to ``eps``.

    Args:
        sde: the forward SDE.
        score: ``score(x, t)``.
        x: prior draws ``(N, ...)``.
        steps: fixed steps (``method`` then defaults to Euler); ``None``: adaptive ``method``.
        method: a torchdiffeq solver.
        rtol: relative tolerance (adaptive solvers).
        atol: absolute tolerance (adaptive solvers).
        times: return the states at these times (from ``T`` down), ``(len(times), N, ...)``,
            instead of the final state.

    Examples:
        >>> from probgen.models.diffusion.sde import VPSDE
        >>> x = pf_ode_sample(VPSDE(), lambda x, t: -x, torch.ones(2, 2), steps=10)
        >>> torch.allclose(x, torch.ones(2, 2))
        True
    """
    f = ProbabilityFlow(sde, score, tuple(x.shape[1:]))
    ts = torch.tensor([sde.T, sde.eps], dtype=x.dtype, device=x.device) if times is None \
        else torch.as_tensor(times, dtype=x.dtype, device=x.device)
    options = None
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ProbgenError(f"steps: must be a positive integer or None, got {steps!r}")
        method = "euler" if method == "dopri5" else method
        options = {"step_size": (sde.T - sde.eps) / steps}
    with torch.no_grad():
        path = odeint(f, x.flatten(1), ts, method=method, rtol=rtol, atol=atol,
                      options=options)
    path = path.reshape(len(ts), *x.shape)
    return path[-1] if times is None else path


def pf_ode_log_prob(sde: SDE, score: Score, x: Tensor, exact_trace: bool | None = None,
                    noise: str = "rademacher", method: str = "dopri5", rtol: float = 1e-5,
                    atol: float = 1e-5) -> Tensor:
    """``log p_eps(x)`` per example ``(N,)`` in nats by the probability-flow ODE.

    Args:
        sde: the forward SDE (its ``prior_log_prob`` scores ``x(T)``).
        score: ``score(x, t)``.
        x: data ``(N, ...)``.
        exact_trace: the exact Jacobian trace (default when ``x`` has at most 2 coordinates
            per example) or Hutchinson's estimate (one probe per call: unbiased, so averaging
            calls tightens it).
        noise: Hutchinson probe, ``"rademacher"`` or ``"gaussian"``.
        method: a torchdiffeq solver.
        rtol: relative tolerance.
        atol: absolute tolerance.
    """
    shape = tuple(x.shape[1:])
    flat = x.flatten(1)
    exact = flat.shape[1] <= 2 if exact_trace is None else bool(exact_trace)
    f = ProbabilityFlow(sde, score, shape)
    with torch.no_grad():
        z, acc = integrate_with_trace(f, flat, sde.eps, sde.T, exact_trace=exact, noise=noise,
                                      method=method, rtol=rtol, atol=atol,
                                      )
    return sde.prior_log_prob(z.reshape(x.shape)) + acc
