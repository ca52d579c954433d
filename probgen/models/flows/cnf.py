"""Continuous normalizing flow (FFJORD) on torchdiffeq's ODE solvers.

Data ``x`` at time 0 flows to the base variable ``z`` at time ``t1`` along
``dz/dt = f(z, t)``; the change of variables becomes an integral of the Jacobian trace
(Chen et al. 2018, "Neural ODEs", thm. 1; Grathwohl et al. 2019, FFJORD, eq. 4):

    log p(x) = log N(z(t1); 0, I) + int_0^t1 tr(df/dz(z(t), t)) dt

The trace is exact (``dim`` backward passes) for small ``dim`` and Hutchinson's unbiased
estimate ``eps^T (df/dz) eps`` otherwise (FFJORD, eq. 7), with one ``eps`` per solve.

[`CNFTransform`][probgen.models.flows.cnf.CNFTransform] is a Pyro ``TransformModule`` (base -> data
is ``_call``), so a CNF is a [`Flow`][probgen.models.flows.flows.Flow] like any other:
[`CNF`][probgen.models.flows.cnf.CNF] builds one. Its dynamics default to
[`ODEDynamics`][probgen.models.flows.cnf.ODEDynamics]; any ``f(t, z)`` module may replace it (a
flow-matching velocity, the probability-flow ODE of a score SDE), and
[`integrate_with_trace`][probgen.models.flows.cnf.integrate_with_trace] is the one solve of
``(z, int tr)`` they all share.

Examples:
    >>> import torch
    >>> flow = CNF(2, hidden=(16,))
    >>> flow.log_prob(torch.randn(5, 2)).shape
    torch.Size([5])
    >>> flow.sample((3,)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS

from probgen.models.flows.flows import Flow

__all__ = ["CNF", "CNFTransform", "ODEDynamics", "integrate_with_trace"]


class ODEDynamics(nn.Module):
    """``f(z, t)``: an MLP with softplus activations that sees ``t`` at every layer.

    Examples:
        >>> f = ODEDynamics(2, hidden=(8,))
        >>> f(torch.tensor(0.5), torch.randn(3, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        sizes = [dim, *hidden, dim]
        self.layers = nn.ModuleList(nn.Linear(a + 1, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        tt = t.to(z).expand(*z.shape[:-1], 1)
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([h, tt], dim=-1))
            if i < len(self.layers) - 1:
                h = nn.functional.softplus(h)
        return h


class _Augmented(nn.Module):
    """Right-hand side of the augmented ODE ``d(z, a)/dt = (f, tr df/dz)``."""

    def __init__(self, f: nn.Module, exact: bool) -> None:
        super().__init__()
        self.f = f
        self.exact = exact
        self.eps: Tensor | None = None  # Hutchinson noise, fixed for one solve
        self.nfe = 0

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        self.nfe += 1
        z = state[0]
        create_graph = torch.is_grad_enabled()  # False in eval / adjoint forward pass
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.f(t, z)
            if self.exact:
                tr = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
                for i in range(z.shape[-1]):
                    g = torch.autograd.grad(dz[..., i].sum(), z, create_graph=create_graph,
                                            retain_graph=True)[0]
                    tr = tr + g[..., i]
            else:
                vjp = torch.autograd.grad(dz, z, self.eps, create_graph=create_graph)[0]
                tr = (vjp * self.eps).sum(-1)
        if not create_graph:
            dz, tr = dz.detach(), tr.detach()
        return dz, tr


def integrate_with_trace(
    dynamics: nn.Module,
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    exact_trace: bool,
    noise: Literal["rademacher", "gaussian"] = "rademacher",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    options: dict[str, object] | None = None,
    adjoint: bool = False,
    func: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """Solve ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` with ``a(t0) = 0``, ``da/dt = tr df/dy``.

    Returns ``(y(t1), a(t1))``: ``a = int_t0^t1 tr(df/dy) dt`` per example, exact
    (``dim`` backward passes) or Hutchinson's ``eps^T (df/dy) eps`` with one probe ``eps``
    per solve (Rademacher or Gaussian). If ``y`` runs from data (``t0``) to a base density
    (``t1``), ``log p_data(y0) = log p_base(y(t1)) + a(t1)`` (Chen et al. 2018, thm. 1).

    Args:
        dynamics: a module ``f(t, y)`` with ``t`` a scalar tensor and ``y`` ``(..., dim)``.
        y0: the start ``(..., dim)``.
        t0: start time.
        t1: end time (before or after ``t0``).
        exact_trace: exact Jacobian trace, else Hutchinson.
        noise: the Hutchinson probe.
        method: a torchdiffeq solver name.
        rtol: relative tolerance.
        atol: absolute tolerance.
        options: torchdiffeq solver options (e.g. ``{"step_size": 0.05}``).
        adjoint: back-propagate by the adjoint method.
        func: a prepared augmented right-hand side (CNFTransform passes its own to count
            evaluations); default one built around ``dynamics``.

    Examples:
        >>> class Linear(nn.Module):  # dy/dt = -y: tr = -dim
        ...     def forward(self, t, y):
        ...         return -y
        >>> y1, a = integrate_with_trace(Linear(), torch.ones(1, 3), 0.0, 2.0, exact_trace=True)
        >>> round(a.item(), 4), round(y1[0, 0].item(), 4)
        (-6.0, 0.1353)
    """
    if method not in SOLVERS:
        raise ValueError(f"method must be a torchdiffeq solver {sorted(SOLVERS)}, got {method!r}")
    if noise not in ("rademacher", "gaussian"):
        raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
    aug = func if func is not None else _Augmented(dynamics, exact_trace)
    aug.exact = bool(exact_trace)
    if not aug.exact:
        eps = torch.randn_like(y0)
        aug.eps = eps.sign() if noise == "rademacher" else eps
    times = torch.tensor([t0, t1], dtype=y0.dtype, device=y0.device)
    acc0 = torch.zeros(y0.shape[:-1], dtype=y0.dtype, device=y0.device)
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    if adjoint:
        ys, accs = odeint_adjoint(aug, (y0, acc0), times,
                                  adjoint_params=tuple(aug.parameters()), **kwargs)
    else:
        ys, accs = odeint(aug, (y0, acc0), times, **kwargs)
    return ys[-1], accs[-1]


class CNFTransform(TransformModule):
    """A continuous-time bijection on vectors ``(..., dim)`` (FFJORD).

    Args:
        dim: data dimension.
        hidden: hidden sizes of the dynamics MLP.
        exact_trace: exact Jacobian trace; default ``dim <= 2``, else Hutchinson.
        t1: integration time.
        method: a torchdiffeq solver name (``"dopri5"``, ``"rk4"``, ...).
        rtol: the solver's relative tolerance.
        atol: the solver's absolute tolerance.
        adjoint: back-propagate with the adjoint method (memory O(1) in the steps).
        noise: Hutchinson probe distribution.
        options: solver options for torchdiffeq, e.g. ``{"step_size": 0.1}`` for ``"rk4"``.
        dynamics: a module ``f(t, z)`` to use instead of an
            [`ODEDynamics`][probgen.models.flows.cnf.ODEDynamics] MLP (``hidden`` is then unused).
        t0: the data end of the time interval (base at ``t1``).

    Examples:
        >>> t = CNFTransform(2, hidden=(8,))
        >>> x = t(torch.randn(4, 2))
        >>> t.log_abs_det_jacobian(torch.randn(4, 2), x).shape
        torch.Size([4])
    """

    bijective = True
    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        exact_trace: bool | None = None,
        t1: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
        noise: Literal["rademacher", "gaussian"] = "rademacher",
        options: dict[str, object] | None = None,
        dynamics: nn.Module | None = None,
        t0: float = 0.0,
    ) -> None:
        super().__init__(cache_size=1)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if method not in SOLVERS:
            raise ValueError(
                f"method must be a torchdiffeq solver {sorted(SOLVERS)}, got {method!r}")
        if noise not in ("rademacher", "gaussian"):
            raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
        if not t1 > t0:
            raise ValueError(f"t1 must exceed t0={t0!r}, got {t1!r}")
        self.dim = dim
        self.exact_trace = dim <= 2 if exact_trace is None else bool(exact_trace)
        self.t0, self.t1 = float(t0), float(t1)
        self.method, self.rtol, self.atol = method, rtol, atol
        self.adjoint, self.noise = adjoint, noise
        self.options = dict(options) if options else None
        f = ODEDynamics(dim, hidden) if dynamics is None else dynamics
        self.func = _Augmented(f, self.exact_trace)
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # (z, x, log|det dx/dz|)

    @property
    def nfe(self) -> int:
        """Dynamics evaluations so far (reset it with ``t.func.nfe = 0``)."""
        return self.func.nfe

    def clear_cache(self) -> None:
        """Forget the last solve (see
        [`clear_transform_caches`][probgen.nn.flow_layers.clear_transform_caches])."""
        self._last = None

    def _solve(self, y0: Tensor, t0: float, t1: float) -> tuple[Tensor, Tensor]:
        """Integrate ``(y, a)`` from ``t0`` to ``t1``; ``a`` accumulates the trace."""
        if y0.shape[-1] != self.dim:
            raise ValueError(f"input: last dim {y0.shape[-1]} must equal dim={self.dim}")
        return integrate_with_trace(
            self.func.f, y0, t0, t1, exact_trace=self.exact_trace, noise=self.noise,
            method=self.method, rtol=self.rtol, atol=self.atol, options=self.options,
            adjoint=self.adjoint, func=self.func)

    def _call(self, z: Tensor) -> Tensor:
        x, acc = self._solve(z, self.t1, self.t0)  # acc = -int_t0^t1 tr = log|det dx/dz|
        self._last = (z, x, acc)
        return x

    def _inverse(self, x: Tensor) -> Tensor:
        z, acc = self._solve(x, self.t0, self.t1)  # acc = int_t0^t1 tr = log|det dz/dx|
        self._last = (z, x, -acc)
        return z

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        if self._last is not None and self._last[0] is z and self._last[1] is x:
            return self._last[2]
        return self._solve(z, self.t1, self.t0)[1]


class CNF(Flow):
    """A continuous normalizing flow over ``(dim,)`` vectors: a
    [`Flow`][probgen.models.flows.flows.Flow] whose only transform is a
    [`CNFTransform`][probgen.models.flows.cnf.CNFTransform] (same arguments).

    Examples:
        >>> flow = CNF(2, hidden=(8,))
        >>> d = flow()
        >>> d.log_prob(d.sample((4,))).shape
        torch.Size([4])
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), **kwargs: object) -> None:
        super().__init__([CNFTransform(dim, hidden, **kwargs)], event_shape=(dim,))

    @property
    def transform(self) -> CNFTransform:
        """The single CNF transform."""
        return self.transforms[0]
