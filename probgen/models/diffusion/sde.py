"""Forward SDEs of score-based diffusion (Song et al. 2021, "Score-based generative modeling
through stochastic differential equations", sec. 3.4 and appendix B).

Every SDE here is ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, T]`` with an *affine* drift, so its
perturbation kernel is Gaussian, ``p_t(x_t | x_0) = N(a(t) x_0, s(t)^2 I)``. One abstract
[`SDE`][probgen.models.diffusion.sde.SDE] holds everything derived from that (the marginal,
the reverse-time drift ``f - g^2 score`` of eq. 6, the probability-flow drift
``f - g^2 score / 2`` of eq. 13); a variant sets four functions:

| SDE | drift ``f(x, t)`` | diffusion ``g(t)`` | prior ``p_T`` |
|---|---|---|---|
| VE (eq. 30) | 0 | ``s(t) sqrt(2 log(smax / smin))`` | ``N(0, smax^2 I)`` |
| VP (eq. 32) | ``-beta(t) x / 2`` | ``sqrt(beta(t))`` | ``N(0, I)`` |
| sub-VP (eq. 34) | ``-beta(t) x / 2`` | ``sqrt(beta(t) (1 - e^{-2 int beta}))`` | ``N(0, I)`` |
| Ornstein-Uhlenbeck | ``-theta x`` | ``sigma`` | ``N(0, sigma^2 / (2 theta) I)`` |

with ``beta(t) = beta_min + t (beta_max - beta_min)`` and ``s(t) = smin (smax/smin)^t``. The VP
SDE is the continuous limit of DDPM's chain (eq. 11 with ``beta_i = beta(i / N) / N``).

Times ``t`` are scalars or ``(N,)`` tensors (one per example); ``x`` is ``(N, ...)``.

Examples:
    >>> import torch
    >>> sde = VPSDE()
    >>> mean, std = sde.marginal(torch.ones(3, 2), torch.tensor([0.0, 0.5, 1.0]))
    >>> # std = sqrt(1 - exp(-int_0^t beta)), int_0^0.5 beta = 0.05 + 19.9 / 8 = 2.5375
    >>> [round(v, 4) for v in std.flatten().tolist()]
    [0.0, 0.9597, 1.0]
    >>> sde.prior_sample((4, 2)).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "OrnsteinUhlenbeck", "broadcast_time"]


def broadcast_time(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` (a scalar or ``(N,)``) shaped ``(N, 1, ..., 1)`` to broadcast against ``x``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ProbgenError(f"t: expected a scalar or shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.dim() - 1)))


class SDE:
    """``dx = f(x, t) dt + g(t) dw`` with Gaussian kernel ``N(a(t) x0, s(t)^2 I)``.

    A subclass defines [`drift`][probgen.models.diffusion.sde.SDE.drift],
    [`diffusion`][probgen.models.diffusion.sde.SDE.diffusion],
    [`mean_coeff`][probgen.models.diffusion.sde.SDE.mean_coeff] (``a``),
    [`std`][probgen.models.diffusion.sde.SDE.std] (``s``) and ``prior_std``.

    Attributes:
        T: the end time (the prior lives there).
        eps: the smallest time used for training and sampling (the score blows up at 0).
    """

    T: float = 1.0
    eps: float = 1e-5
    prior_std: float = 1.0

    # -- what a variant defines ------------------------------------------------------------
    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``f(x, t)``, shaped like ``x``."""
        raise NotImplementedError

    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t)`` for a tensor of times (same shape)."""
        raise NotImplementedError

    def mean_coeff(self, t: Tensor) -> Tensor:
        """``a(t)``: the kernel's mean is ``a(t) x0``."""
        raise NotImplementedError

    def std(self, t: Tensor) -> Tensor:
        """``s(t)``: the kernel's standard deviation."""
        raise NotImplementedError

    # -- derived ---------------------------------------------------------------------------
    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean ``a(t) x0`` (like ``x0``) and std ``s(t)`` (``(N, 1, ...)``) of ``p_t(x|x0)``."""
        tb = broadcast_time(t, x0)
        return self.mean_coeff(tb) * x0, self.std(tb)

    def perturb(self, x0: Tensor, t: Tensor | float, noise: Tensor) -> Tensor:
        """``x_t = a(t) x0 + s(t) noise``: a draw of ``p_t(x|x0)`` given standard ``noise``."""
        mean, std = self.marginal(x0, t)
        return mean + std * noise

    def prior_sample(self, shape: Sequence[int], generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
        """Draws of the prior ``N(0, prior_std^2 I)`` of shape ``shape``."""
        return self.prior_std * torch.randn(tuple(shape), generator=generator, device=device)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """``log N(z; 0, prior_std^2 I)`` summed over all but the first dim: ``(N,)``."""
        d = z[0].numel()
        sq = z.flatten(1).pow(2).sum(-1) / self.prior_std**2
        return -0.5 * (sq + d * math.log(2 * math.pi * self.prior_std**2))

    def reverse_drift(self, x: Tensor, t: Tensor | float, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE ``f - g^2 score`` (Song et al. 2021, eq. 6; Anderson
        1982), integrated with ``dt < 0``."""
        g = self.diffusion(broadcast_time(t, x))
        return self.drift(x, t) - g**2 * score

    def ode_drift(self, x: Tensor, t: Tensor | float, score: Tensor) -> Tensor:
        """Drift of the probability-flow ODE ``f - g^2 score / 2`` (eq. 13): same marginals
        as the SDE, deterministic."""
        g = self.diffusion(broadcast_time(t, x))
        return self.drift(x, t) - 0.5 * g**2 * score

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v:g}" for k, v in vars(self).items() if isinstance(v, float))
        return f"{type(self).__name__}({fields})"


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ProbgenError(f"{name}: must be a positive number, got {v!r}")


class VPSDE(SDE):
    """Variance preserving: ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` (DDPM's limit).

    Examples:
        >>> sde = VPSDE(beta_min=0.1, beta_max=20.0)
        >>> t = torch.tensor(1.0)
        >>> round(sde.std(t).item() ** 2 + sde.mean_coeff(t).item() ** 2, 6)
        1.0
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-5):
        _positive(beta_min=beta_min, beta_max=beta_max, eps=eps)
        self.beta_min, self.beta_max, self.eps = float(beta_min), float(beta_max), float(eps)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean(self, t: Tensor) -> Tensor:  # -int_0^t beta / 2
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(broadcast_time(t, x)) * x

    def diffusion(self, t: Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def mean_coeff(self, t: Tensor) -> Tensor:
        return self._log_mean(t).exp()

    def std(self, t: Tensor) -> Tensor:
        return (-torch.expm1(2 * self._log_mean(t))).sqrt()


class SubVPSDE(VPSDE):
    """Sub-variance preserving: VP's drift, ``g(t)^2 = beta(t) (1 - e^{-2 int_0^t beta})``;
    variance ``(1 - a(t)^2)^2`` below VP's (Song et al. 2021, eq. 34).

    Examples:
        >>> t = torch.tensor(0.3)
        >>> bool(SubVPSDE().std(t) < VPSDE().std(t))
        True
    """

    def diffusion(self, t: Tensor) -> Tensor:
        return (self.beta(t) * -torch.expm1(4 * self._log_mean(t))).sqrt()

    def std(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self._log_mean(t))


class VESDE(SDE):
    """Variance exploding: ``dx = s(t) sqrt(2 log(smax/smin)) dw``, ``s(t) = smin (smax/smin)^t``
    (the continuous NCSN). The kernel's variance is ``s(t)^2 - smin^2`` (zero at ``t = 0``).

    Examples:
        >>> sde = VESDE(sigma_min=0.01, sigma_max=10.0)
        >>> sde.prior_std, round(sde.std(torch.tensor(1.0)).item(), 4)
        (10.0, 10.0)
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0, eps: float = 1e-5):
        _positive(sigma_min=sigma_min, sigma_max=sigma_max, eps=eps)
        if sigma_max <= sigma_min:
            raise ProbgenError(f"sigma_max: must exceed sigma_min={sigma_min}, got {sigma_max}")
        self.sigma_min, self.sigma_max, self.eps = float(sigma_min), float(sigma_max), float(eps)
        self.prior_std = self.sigma_max

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def mean_coeff(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def std(self, t: Tensor) -> Tensor:
        return (self.sigma(t) ** 2 - self.sigma_min**2).clamp_min(0).sqrt()


class OrnsteinUhlenbeck(SDE):
    """``dx = -theta x dt + sigma dw``: kernel ``N(x0 e^{-theta t}, sigma^2 (1 - e^{-2 theta t})
    / (2 theta))``, stationary law ``N(0, sigma^2 / (2 theta))`` (the prior).

    Examples:
        >>> ou = OrnsteinUhlenbeck(theta=2.0, sigma=2.0)
        >>> round(ou.prior_std, 4)
        1.0
    """

    def __init__(self, theta: float = 1.0, sigma: float = 1.0, T: float = 1.0,
                 eps: float = 1e-5):
        _positive(theta=theta, sigma=sigma, T=T, eps=eps)
        self.theta, self.sigma, self.T, self.eps = float(theta), float(sigma), float(T), eps
        self.prior_std = self.sigma / math.sqrt(2 * self.theta)

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        return -self.theta * x

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.sigma)

    def mean_coeff(self, t: Tensor) -> Tensor:
        return torch.exp(-self.theta * t)

    def std(self, t: Tensor) -> Tensor:
        return self.prior_std * (-torch.expm1(-2 * self.theta * t)).sqrt()
