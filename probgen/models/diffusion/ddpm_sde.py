"""A trained DDPM sampled through the VP SDE it discretises (Song et al. 2021, sec. 3.4 and
appendix B): the discrete chain and the continuous-time machinery are one model.

DDPM's forward chain ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z`` is Euler-Maruyama
on the VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` with ``beta_i ~ beta(i / T) / T``.
[`ScheduleVPSDE`][probgen.models.diffusion.ddpm_sde.ScheduleVPSDE] is that SDE for *any*
discrete schedule (linear, cosine, ...): ``log alpha_bar(t)`` is the schedule's
``log alpha_bar_i`` interpolated linearly between the grid times ``t_i = i / T``, so

    alpha_bar(i / T) = alpha_bar_i   exactly, and   beta(t) = -d log alpha_bar / dt
                                                    = T log(alpha_bar_{i-1} / alpha_bar_i)

on ``((i - 1) / T, i / T]`` — the marginals ``p_t(x_t | x_0)`` agree with DDPM's
``q(x_i | x_0)`` at every step. The DDPM's network, asked at the continuous time ``t``
(its time input is already ``t = step / T``), gives the noise ``eps`` of ``x_t``, hence the
score ``-eps / sqrt(1 - alpha_bar(t))``
([`ddpm_score`][probgen.models.diffusion.ddpm_sde.ddpm_score]); any SDE sampler (Euler-
Maruyama, torchsde, predictor-corrector) or the probability-flow ODE then samples the DDPM
([`ddpm_sde_sample`][probgen.models.diffusion.ddpm_sde.ddpm_sde_sample]).

Examples:
    >>> from probgen.models.diffusion.schedules import NoiseSchedule
    >>> s = NoiseSchedule.make("linear", 10)
    >>> sde = ScheduleVPSDE(s)
    >>> a = sde.mean_coeff(torch.tensor([0.3])) ** 2
    >>> bool(torch.allclose(a, s.alpha_bars[3:4], atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.decoder import unit_interval_to_levels
from probgen.models.diffusion.schedules import NoiseSchedule, to_x0_eps
from probgen.models.diffusion.sde import SDE, broadcast_time

__all__ = ["ScheduleVPSDE", "ddpm_score", "ddpm_sde_sample"]


class ScheduleVPSDE(SDE):
    """The VP SDE whose marginals match a discrete schedule's at its grid times.

    Time runs over ``[eps, 1]`` with ``eps = 1 / T`` (the least-noisy DDPM step ``x_1``): the
    reverse-time samplers stop there and the DDPM's ``x_0`` is its denoised guess.

    Args:
        schedule: the DDPM's [`NoiseSchedule`][probgen.models.diffusion.schedules.NoiseSchedule].
    """

    def __init__(self, schedule: NoiseSchedule) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise ProbgenError(f"schedule: expected a NoiseSchedule, got "
                               f"{type(schedule).__name__}")
        ab = schedule.alpha_bars.double()
        if not bool((ab[1:] > 0).all() and (ab[1:] < ab[:-1]).all()):
            raise ProbgenError("schedule: alpha_bar must decrease strictly and stay positive "
                               "(a beta of 1 has no VP SDE)")
        self.T = 1.0
        self.steps = schedule.T
        self.eps = 1.0 / schedule.T
        self.log_ab = ab.log()  # (T + 1,), log_ab[0] = 0
        self.betas_c = (self.log_ab[:-1] - self.log_ab[1:]) * schedule.T  # (T,) beta(t)

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        u = t.double().clamp(0, 1) * self.steps
        i = u.ceil().clamp(1, self.steps).long()  # t in ((i - 1) / T, i / T]
        return i, u

    def _log_mean(self, t: Tensor) -> Tensor:  # log sqrt(alpha_bar(t))
        i, u = self._segment(t)
        log_ab = self.log_ab.to(t.device)
        frac = u - (i - 1)
        return 0.5 * (log_ab[i - 1] + frac * (log_ab[i] - log_ab[i - 1]))

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, piecewise constant on the schedule's grid."""
        i, _ = self._segment(torch.as_tensor(t))
        return self.betas_c.to(i.device)[i - 1].to(torch.as_tensor(t).dtype
                                                    if torch.is_tensor(t) else torch.float)

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(broadcast_time(t, x)).to(x.dtype) * x

    def diffusion(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        return self.beta(t).sqrt().to(t.dtype if t.dtype.is_floating_point else torch.float)

    def mean_coeff(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        return self._log_mean(t).exp().to(t.dtype if t.dtype.is_floating_point else torch.float)

    def std(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        var = -torch.expm1(2 * self._log_mean(t))
        return var.sqrt().to(t.dtype if t.dtype.is_floating_point else torch.float)


def ddpm_score(ddpm: DDPM, sde: ScheduleVPSDE | None = None, y: Tensor | None = None
               ) -> Callable[[Tensor, Tensor], Tensor]:
    """``score(x, t)`` of a DDPM at continuous times, for the samplers of
    [`sde_sampling`][probgen.models.diffusion.sde_sampling] and
    [`pf_ode`][probgen.models.diffusion.pf_ode]: the network's noise guess (whatever it
    predicts: epsilon, x0 or v) divided by ``-sqrt(1 - alpha_bar(t))``.

    Args:
        ddpm: a trained [`DDPM`][probgen.models.diffusion.ddpm.DDPM].
        sde: its [`ScheduleVPSDE`][probgen.models.diffusion.ddpm_sde.ScheduleVPSDE]
            (default: built from ``ddpm.schedule``).
        y: labels of a class-conditional DDPM (one per example).
    """
    sde = ScheduleVPSDE(ddpm.schedule) if sde is None else sde
    labels = ddpm._labels(y)

    def score(x: Tensor, t: Tensor) -> Tensor:
        n = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(n)
        tb = broadcast_time(t, x)
        ab = sde.mean_coeff(tb) ** 2
        pred = ddpm.net(x.reshape(n, *ddpm.net_shape), t, labels).reshape(x.shape)
        _, eps = to_x0_eps(pred, ddpm.prediction, x, ab)
        return -eps / sde.std(tb)

    return score


@torch.no_grad()
def ddpm_sde_sample(ddpm: DDPM, n: int, steps: int = 500,
                    method: Literal["em", "pc", "ode"] | str = "em",
                    y: Tensor | None = None, generator: torch.Generator | None = None
                    ) -> Tensor:
    """``n`` samples of a trained DDPM drawn through its VP SDE, in data space (integer
    levels for discrete data).

    From ``x(1) ~ N(0, I)`` the reverse-time SDE (``"em"``: Euler-Maruyama; ``"pc"``:
    predictor-corrector; a torchsde solver name such as ``"srk"``) or the probability-flow
    ODE (``"ode"``, dopri5 when ``steps`` is 0, else ``steps`` Euler steps) runs to
    ``t = 1 / T``; the last step is the network's denoised ``x_0`` (Tweedie), as the DDPM's
    final mean.

    Args:
        ddpm: a trained [`DDPM`][probgen.models.diffusion.ddpm.DDPM] (eval mode is set here).
        n: how many samples.
        steps: solver steps from ``t = 1`` to ``t = 1 / T`` (need not equal ``T``).
        method: the sampler.
        y: labels of a class-conditional DDPM.
        generator: a torch generator for the prior draw.
    """
    from probgen.models.diffusion.pf_ode import pf_ode_sample
    from probgen.models.diffusion.sde_sampling import (
        predictor_corrector_sample,
        reverse_sde_sample,
    )

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProbgenError(f"n: must be a positive integer, got {n!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 \
            or (steps == 0 and method != "ode"):
        raise ProbgenError(f"steps: must be a positive integer (0 only for method='ode'), "
                           f"got {steps!r}")
    was = ddpm.training
    ddpm.eval()
    try:
        sde = ScheduleVPSDE(ddpm.schedule)
        score = ddpm_score(ddpm, sde, y)
        device = ddpm.alpha_bars.device
        x = torch.randn((n, *ddpm.data_shape), generator=generator).to(device)
        if method == "ode":
            x = pf_ode_sample(sde, score, x, steps=steps or None)
        elif method == "pc":
            x = predictor_corrector_sample(sde, score, x, steps=steps)
        else:
            x = reverse_sde_sample(sde, score, x, steps=steps, method=method)
        one = torch.ones(n, dtype=torch.long, device=device)
        x0, _ = ddpm.denoise(x, one, y)  # t = 1 / T is DDPM's step 1
    finally:
        ddpm.train(was)
    if ddpm.levels:
        return unit_interval_to_levels(x0.clamp(-1, 1), ddpm.levels)
    return x0
