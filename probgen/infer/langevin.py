"""Langevin samplers on a score or an energy: stateless functions shared by every family.

A *score* is a callable ``score(x) -> grad_x log p(x)`` of the same shape as ``x``; a
noise-conditional score takes the noise level too, ``score(x, sigma)``, with ``sigma`` a
``(N,)`` tensor (one level per row). An *energy* ``energy(x) -> (N,)`` defines
``p(x) ∝ exp(-E(x))``; [`energy_score`][probgen.infer.langevin.energy_score] turns it into the
score ``-grad_x E(x)`` by autograd.

- [`langevin_step`][probgen.infer.langevin.langevin_step]: one step of the unadjusted Langevin
  algorithm (ULA; Roberts & Tweedie 1996, eq. 1.3 discretised; Welling & Teh 2011, eq. 4),

      x' = x + eps * score(x) + sqrt(2 eps) * z,   z ~ N(0, I);

  the predictor-corrector sampler of Song et al. (2021, Alg. 4) uses it as its corrector.
- [`langevin`][probgen.infer.langevin.langevin] /
  [`langevin_trajectory`][probgen.infer.langevin.langevin_trajectory]: ``num_steps`` of them
  (the last point / every point).
- [`mala`][probgen.infer.langevin.mala]: the Metropolis-adjusted Langevin algorithm (Roberts &
  Tweedie 1996, sec. 1.4): a ULA proposal accepted with probability
  ``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``, so the chain targets ``exp(-E)`` exactly;
  returns the samples and the acceptance rate.
- [`parallel_tempering`][probgen.infer.langevin.parallel_tempering]: replica exchange with
  MALA moves on a ladder ``exp(-beta_k E)``
  ([`tempering_betas`][probgen.infer.langevin.tempering_betas]), neighbours swapping states
  by the Metropolis rule; its ``beta = 1`` chain targets ``exp(-E)`` and, unlike one MALA
  chain, moves between well-separated modes;
- [`annealed_langevin`][probgen.infer.langevin.annealed_langevin]: annealed Langevin dynamics of
  NCSN (Song & Ermon 2019, Alg. 1): for each ``sigma_i`` from largest to smallest,
  ``T`` steps with ``alpha_i = eps * sigma_i^2 / sigma_L^2`` of
  ``x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z``.

Examples:
    >>> import torch
    >>> score = lambda x: -x  # the standard normal
    >>> x = langevin(score, torch.zeros(20000, 2), step_size=0.1, num_steps=200,
    ...              generator=torch.Generator().manual_seed(0))
    >>> # ULA's stationary variance is 1 / (1 - eps / 2) = 1.053, not the target's 1
    >>> # (40,000 draws: a standard error of 0.0075)
    >>> abs(x.var().item() - 1 / (1 - 0.1 / 2)) < 0.025
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = ["energy_score", "langevin_step", "langevin", "langevin_trajectory", "mala",
           "MALAResult", "annealed_langevin", "geometric_sigmas", "parallel_tempering",
           "TemperingResult", "tempering_betas"]

Score = Callable[..., Tensor]
Energy = Callable[[Tensor], Tensor]


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ProbgenError(f"{name}: must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ProbgenError(f"{name}: must be a finite number {need}, got {value!r}")
    return v


def _steps(num_steps: int) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ProbgenError(f"num_steps: must be an integer >= 0, got {num_steps!r}")
    return num_steps


def _start(x0: Tensor) -> Tensor:
    if not isinstance(x0, Tensor) or x0.dim() < 1 or not x0.is_floating_point():
        raise ProbgenError(f"x0: must be a floating tensor (N, ...), got {type(x0).__name__}"
                           + (f" of shape {tuple(x0.shape)}" if isinstance(x0, Tensor) else ""))
    if not torch.isfinite(x0).all():
        raise ProbgenError("x0: holds non-finite values (nan or inf)")
    return x0.detach()


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def energy_score(energy: Energy) -> Callable[[Tensor], Tensor]:
    """The score ``x -> -grad_x E(x)`` of ``p ∝ exp(-E)`` (autograd; the result is detached).

    Examples:
        >>> s = energy_score(lambda x: 0.5 * (x ** 2).sum(-1))
        >>> s(torch.tensor([[1.0, -2.0]]))
        tensor([[-1.,  2.]])
    """

    def score(x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
        return -grad.detach()

    return score


def _call(score: Score, x: Tensor, sigma: float | Tensor | None) -> Tensor:
    if sigma is None:
        s = score(x)
    else:
        if not isinstance(sigma, Tensor):
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
        s = score(x, sigma)
    if s.shape != x.shape:
        raise ProbgenError(f"score: returned shape {tuple(s.shape)} for x of shape "
                           f"{tuple(x.shape)}")
    return s.detach()


def langevin_step(score: Score, x: Tensor, step_size: float, sigma: float | Tensor | None = None,
                  *, noise_scale: float = 1.0, generator: torch.Generator | None = None
                  ) -> Tensor:
    """One ULA step ``x + eps * score(x) + noise_scale * sqrt(2 eps) * z``.

    Args:
        score: ``score(x)``, or ``score(x, sigma)`` when ``sigma`` is given.
        x: current points ``(N, ...)``.
        step_size: ``eps > 0``.
        sigma: the noise level passed to a noise-conditional score (a number, broadcast to
            ``(N,)``, or an ``(N,)`` tensor); ``None`` calls ``score(x)``.
        noise_scale: multiplies the injected noise (1: the exact Langevin discretisation;
            below 1 as in the short-run chains of Du & Mordatch 2019).
        generator: a ``torch.Generator`` for reproducible noise.

    Examples:
        >>> x = torch.ones(3, 2)
        >>> langevin_step(lambda x: -x, x, 0.5, noise_scale=0.0)  # x - 0.5 x
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    eps = _positive("step_size", step_size)
    ns = _positive("noise_scale", noise_scale, allow_zero=True)
    if sigma is not None and not isinstance(sigma, Tensor):
        _positive("sigma", sigma)
    x = x.detach()
    out = x + eps * _call(score, x, sigma)
    if ns:
        out = out + ns * math.sqrt(2 * eps) * _noise(x, generator)
    return out


def langevin_trajectory(score: Score, x0: Tensor, step_size: float, num_steps: int, *,
                        sigma: float | Tensor | None = None, noise_scale: float = 1.0,
                        generator: torch.Generator | None = None) -> Tensor:
    """Every point of ``num_steps`` ULA steps from ``x0``: shape ``(num_steps + 1, *x0.shape)``.

    Examples:
        >>> langevin_trajectory(lambda x: -x, torch.zeros(4, 2), 0.1, 10).shape
        torch.Size([11, 4, 2])
    """
    x = _start(x0)
    _positive("step_size", step_size)
    path = [x]
    for _ in range(_steps(num_steps)):
        x = langevin_step(score, x, step_size, sigma, noise_scale=noise_scale,
                          generator=generator)
        path.append(x)
    return torch.stack(path)


def langevin(score: Score, x0: Tensor, step_size: float, num_steps: int, *,
             sigma: float | Tensor | None = None, noise_scale: float = 1.0,
             generator: torch.Generator | None = None) -> Tensor:
    """``num_steps`` ULA steps from ``x0``; returns the last point (each step is a
    [`langevin_step`][probgen.infer.langevin.langevin_step]). For an energy pass
    ``energy_score(E)``.

    Examples:
        >>> x = langevin(energy_score(lambda x: (x ** 2).sum(-1)), torch.zeros(5, 2), 0.1, 3)
        >>> x.shape
        torch.Size([5, 2])
    """
    x = _start(x0)
    _positive("step_size", step_size)
    for _ in range(_steps(num_steps)):
        x = langevin_step(score, x, step_size, sigma, noise_scale=noise_scale,
                          generator=generator)
    return x


@dataclass
class MALAResult:
    """What [`mala`][probgen.infer.langevin.mala] returns."""

    #: the last state of every chain ``(N, ...)``
    samples: Tensor
    #: the fraction of accepted proposals over all chains and steps
    acceptance_rate: float
    #: per-chain acceptance rates ``(N,)``
    chain_acceptance: Tensor


def mala(energy: Energy, x0: Tensor, step_size: float, num_steps: int, *,
         generator: torch.Generator | None = None) -> MALAResult:
    """Metropolis-adjusted Langevin on ``p ∝ exp(-energy)``: ``N`` independent chains.

    The proposal is ``x' = x - eps grad E(x) + sqrt(2 eps) z``, i.e.
    ``q(x' | x) = N(x - eps grad E(x), 2 eps I)``; it is accepted with probability
    ``min(1, exp(E(x) - E(x') + log q(x | x') - log q(x' | x)))``.

    Examples:
        >>> res = mala(lambda x: 0.5 * (x ** 2).sum(-1), torch.zeros(500, 2), 0.5, 100,
        ...            generator=torch.Generator().manual_seed(0))
        >>> 0.5 < res.acceptance_rate < 1.0, round(res.samples.var().item(), 1)
        (True, 1.0)
    """
    x = _start(x0)
    eps = _positive("step_size", step_size)
    n = x.shape[0]
    dims = tuple(range(1, x.dim()))

    def e_and_grad(y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            e = energy(y)
            if e.shape != (n,):
                raise ProbgenError(f"energy: must return shape ({n},), got {tuple(e.shape)}")
            (g,) = torch.autograd.grad(e.sum(), y)
        return e.detach(), g.detach()

    def log_q(to: Tensor, frm: Tensor, grad_frm: Tensor) -> Tensor:
        return -((to - frm + eps * grad_frm) ** 2).sum(dims) / (4 * eps)

    e, g = e_and_grad(x)
    accepted = torch.zeros(n, device=x.device)
    for _ in range(_steps(num_steps)):
        prop = x - eps * g + math.sqrt(2 * eps) * _noise(x, generator)
        e_p, g_p = e_and_grad(prop)
        log_a = e - e_p + log_q(x, prop, g_p) - log_q(prop, x, g)
        u = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)
        ok = torch.log(u) < log_a
        shape = (n,) + (1,) * (x.dim() - 1)
        x = torch.where(ok.view(shape), prop, x)
        g = torch.where(ok.view(shape), g_p, g)
        e = torch.where(ok, e_p, e)
        accepted += ok.float()
    per_chain = accepted / max(num_steps, 1)
    return MALAResult(x, float(per_chain.mean()), per_chain)


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """``num_levels`` noise levels from ``sigma_max`` down to ``sigma_min`` in geometric
    progression (NCSN, Song & Ermon 2019, sec. 4.2).

    Examples:
        >>> geometric_sigmas(1.0, 0.01, 3)
        tensor([1.0000, 0.1000, 0.0100])
    """
    hi, lo = _positive("sigma_max", sigma_max), _positive("sigma_min", sigma_min)
    if lo > hi:
        raise ProbgenError(f"sigma_min: must be <= sigma_max, got {sigma_min} > {sigma_max}")
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ProbgenError(f"num_levels: must be a positive integer, got {num_levels!r}")
    if num_levels == 1:
        return torch.tensor([hi])
    return torch.exp(torch.linspace(math.log(hi), math.log(lo), num_levels))


def annealed_langevin(score: Score, x0: Tensor, sigmas: Sequence[float] | Tensor,
                      step_size: float, steps_per_level: int, *, denoise: bool = False,
                      generator: torch.Generator | None = None) -> Tensor:
    """Annealed Langevin dynamics (NCSN; Song & Ermon 2019, Alg. 1).

    For ``sigma_1 > ... > sigma_L``: ``alpha_i = step_size * sigma_i^2 / sigma_L^2`` and
    ``steps_per_level`` updates ``x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) z``
    (a [`langevin_step`][probgen.infer.langevin.langevin_step] with ``eps = alpha_i / 2``).

    Args:
        score: the noise-conditional score ``score(x, sigma)`` (``sigma`` an ``(N,)`` tensor).
        x0: starting points, e.g. uniform noise (Alg. 1) or ``N(0, sigma_1^2 I)``.
        sigmas: decreasing positive noise levels.
        step_size: ``eps`` of Alg. 1 (the step at the smallest level is ``eps / 2``).
        steps_per_level: ``T`` of Alg. 1.
        denoise: finish with one noise-free step ``x + sigma_L^2 score(x, sigma_L)``
            (Tweedie's formula; Jolicoeur-Martineau et al. 2021, "denoising jump").

    Examples:
        >>> s = lambda x, sigma: -x / (1.0 + sigma[:, None] ** 2)  # N(0, I) blurred by sigma
        >>> x = annealed_langevin(s, 3 * torch.randn(3000, 2), [3.0, 1.0, 0.1], 0.05, 100,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> round(x.var().item(), 1)
        1.0
    """
    x = _start(x0)
    eps = _positive("step_size", step_size)
    sig = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, Tensor) else sigmas)]
    if not sig:
        raise ProbgenError("sigmas: need at least one noise level")
    for s in sig:
        _positive("sigmas", s)
    if any(b > a for a, b in zip(sig, sig[1:])):
        raise ProbgenError(f"sigmas: must be decreasing, got {sig[:4]}...")
    _steps(steps_per_level)
    last = sig[-1]
    for s in sig:
        alpha = eps * s ** 2 / last ** 2
        for _ in range(steps_per_level):
            x = langevin_step(score, x, alpha / 2, s, generator=generator)
    if denoise:
        x = x + last ** 2 * _call(score, x, last)
    return x


@dataclass
class TemperingResult:
    """What [`parallel_tempering`][probgen.infer.langevin.parallel_tempering] returns."""

    #: the last state of every chain at ``beta = 1`` ``(N, ...)``
    samples: Tensor
    #: MALA acceptance rate per temperature ``(K,)``, coldest first
    acceptance: Tensor
    #: swap acceptance rate per adjacent pair of temperatures ``(K - 1,)``
    swap_acceptance: Tensor


def tempering_betas(beta_min: float, num_levels: int) -> Tensor:
    """``num_levels`` inverse temperatures from 1 down to ``beta_min`` in geometric progression.

    Examples:
        >>> [round(b, 4) for b in tempering_betas(0.01, 3).tolist()]
        [1.0, 0.1, 0.01]
    """
    beta_min = _positive("beta_min", beta_min)
    if beta_min > 1:
        raise ProbgenError(f"beta_min: must be <= 1, got {beta_min}")
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ProbgenError(f"num_levels: must be an integer >= 1, got {num_levels!r}")
    if num_levels == 1:
        return torch.ones(1)
    return torch.logspace(0.0, math.log10(beta_min), num_levels)


def parallel_tempering(energy: Energy, x0: Tensor, betas: Sequence[float] | Tensor,
                       step_size: float, num_steps: int, *,
                       generator: torch.Generator | None = None) -> TemperingResult:
    """Replica exchange (parallel tempering; Swendsen & Wang 1986, Geyer 1991) with MALA moves.

    Each of the ``N`` chains is a ladder of ``K`` replicas, replica ``k`` targeting
    ``p_k ∝ exp(-beta_k E)`` with ``betas[0] = 1`` (the target) and the rest decreasing. Every
    step, each replica makes one MALA move on its own target with step ``step_size / beta_k``
    (the proposal ``x - eps grad E(x) + sqrt(2 eps / beta_k) z``: hot replicas take wider
    steps across low-density gaps), then neighbouring replicas propose to swap states,
    even pairs ``(0, 1), (2, 3), ...`` on even steps and odd pairs on odd steps, accepted
    with the Metropolis probability ``min(1, exp((beta_k - beta_{k+1}) (E_k - E_{k+1})))``.
    Both moves leave the product ``prod_k p_k`` invariant, so the ``beta = 1`` replica is an
    exact MCMC chain of ``exp(-E)``; states found by the hot replicas, which cross between
    modes, travel down the ladder, so the cold chain's mass per mode converges where a single
    MALA chain stays in the basin it starts in. All ``K`` replicas start at ``x0``.

    Examples:
        >>> res = parallel_tempering(lambda x: 0.5 * (x ** 2).sum(-1), torch.zeros(500, 2),
        ...                          [1.0, 0.5], 0.5, 100,
        ...                          generator=torch.Generator().manual_seed(0))
        >>> round(res.samples.var().item(), 1), res.swap_acceptance.shape
        (1.0, torch.Size([1]))
    """
    x = _start(x0)
    eps = _positive("step_size", step_size)
    b = torch.as_tensor(betas, dtype=x.dtype, device=x.device).flatten()
    if b.numel() < 1 or not torch.isfinite(b).all() or (b <= 0).any() or (b > 1).any():
        raise ProbgenError("betas: must be numbers in (0, 1], got "
                           f"{[round(v, 4) for v in b.tolist()]}")
    if float(b[0]) != 1.0:
        raise ProbgenError(f"betas: the first must be 1 (the target), got {float(b[0])}")
    n_steps = _steps(num_steps)
    k, n = b.numel(), x.shape[0]
    rest = tuple(x.shape[1:])
    dims = tuple(range(2, x.dim() + 1))
    view = (k, 1) + (1,) * len(rest)
    beta = b.view(view)
    step = (eps / b).view(view)  # per-replica MALA step on beta_k E

    def e_and_grad(y: Tensor) -> tuple[Tensor, Tensor]:
        flat = y.reshape(k * n, *rest)
        with torch.enable_grad():
            flat = flat.detach().requires_grad_(True)
            e = energy(flat)
            if e.shape != (k * n,):
                raise ProbgenError(f"energy: must return shape ({k * n},), got "
                                   f"{tuple(e.shape)}")
            (g,) = torch.autograd.grad(e.sum(), flat)
        return e.detach().view(k, n), g.detach().view(k, n, *rest)

    def log_q(to: Tensor, frm: Tensor, grad_frm: Tensor) -> Tensor:
        # q(to | frm) = N(frm - step beta grad E, 2 step I), step beta = eps
        return -((to - frm + eps * grad_frm) ** 2 / (4 * step)).sum(dims)

    state = x.unsqueeze(0).expand(k, *x.shape).clone()
    e, g = e_and_grad(state)
    accepted = torch.zeros(k, device=x.device)
    swaps = torch.zeros(max(k - 1, 0), device=x.device)
    tries = torch.zeros(max(k - 1, 0), device=x.device)
    for t in range(n_steps):
        noise = torch.randn(state.shape, generator=generator, device=x.device, dtype=x.dtype)
        prop = state - eps * g + torch.sqrt(2 * step) * noise
        e_p, g_p = e_and_grad(prop)
        log_a = (beta.view(k, 1) * (e - e_p) + log_q(state, prop, g_p)
                 - log_q(prop, state, g))
        u = torch.rand((k, n), generator=generator, device=x.device, dtype=x.dtype)
        ok = torch.log(u) < log_a
        okv = ok.view(k, n, *(1,) * len(rest))
        state = torch.where(okv, prop, state)
        g = torch.where(okv, g_p, g)
        e = torch.where(ok, e_p, e)
        accepted += ok.float().mean(1)
        if k < 2:
            continue
        lo = torch.arange(t % 2, k - 1, 2, device=x.device)
        if lo.numel() == 0:
            continue
        hi = lo + 1
        log_s = (b[lo] - b[hi]).unsqueeze(1) * (e[lo] - e[hi])
        us = torch.rand(log_s.shape, generator=generator, device=x.device, dtype=x.dtype)
        sw = torch.log(us) < log_s  # (pairs, N)
        swaps[lo] += sw.float().mean(1)
        tries[lo] += 1
        swv = sw.view(-1, n, *(1,) * len(rest))
        for buf in (state, g):
            a, c = buf[lo].clone(), buf[hi].clone()
            buf[lo] = torch.where(swv, c, a)
            buf[hi] = torch.where(swv, a, c)
        a, c = e[lo].clone(), e[hi].clone()
        e[lo] = torch.where(sw, c, a)
        e[hi] = torch.where(sw, a, c)
    return TemperingResult(state[0].clone(), accepted / max(n_steps, 1),
                           swaps / tries.clamp(min=1))
