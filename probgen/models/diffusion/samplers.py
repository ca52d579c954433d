"""Samplers of discrete-time Gaussian diffusion, shared by every model that can say what
``(x_0, eps)`` it predicts at ``x_t`` (a DDPM, a latent DDPM, a diffusers U-Net).

A *denoiser* is a callable ``denoise(x_t, t) -> (x0, eps)`` with ``t`` a ``(N,)`` tensor of
integer steps; ``alpha_bars`` ``(T + 1,)`` are the schedule's cumulative products
(``alpha_bars[0] = 1``). The update rules are stateless functions, the loop
([`sample`][probgen.models.diffusion.samplers.sample]) glues them, as in diffusers:

- [`ddpm_step`][probgen.models.diffusion.samplers.ddpm_step]: ancestral sampling (Ho et al.
  2020, Algorithm 2), ``x_s ~ N(mu~(x_t, x_0), sigma^2)`` with the posterior mean of eq. 7
  and ``sigma^2 = 1 - ab_t / ab_s`` (``"beta"``) or the posterior variance (``"posterior"``);
  between any two steps ``s < t``, so a subsequence of steps works too (Nichol & Dhariwal
  2021, sec. 4, "respacing");
- [`ddim_step`][probgen.models.diffusion.samplers.ddim_step]: DDIM (Song, Meng & Ermon 2021,
  eq. 12), ``x_s = sqrt(ab_s) x_0 + sqrt(1 - ab_s - sigma^2) eps + sigma z`` with
  ``sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s)`` (eq. 16): ``eta = 0`` is
  deterministic, ``eta = 1`` with all steps is the DDPM transition with the posterior
  variance;
- [`timesteps`][probgen.models.diffusion.samplers.timesteps]: the decreasing steps visited.

The last update (to step 0) returns the mean: no noise is added at ``t = 1`` (Algorithm 2).

Examples:
    >>> import torch
    >>> from probgen.models.diffusion.schedules import NoiseSchedule
    >>> ab = NoiseSchedule.make("cosine", 100).alpha_bars
    >>> zero = lambda x, t: (torch.zeros_like(x), x / (1 - ab[t]).sqrt()[:, None])
    >>> x = sample(zero, ab, (5, 2), sampler="ddim", steps=10, seed=0)
    >>> bool(x.abs().max() < 1e-3)  # a denoiser that always says x_0 = 0 ends at 0
    True
    >>> timesteps(1000, 4)
    [1000, 667, 334, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.models.diffusion.schedules import expand_as, posterior

__all__ = ["Denoiser", "SAMPLERS", "timesteps", "ddpm_step", "ddim_mean_var", "ddim_step",
           "sample"]

Denoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
#: the sampler names [`sample`][probgen.models.diffusion.samplers.sample] takes
SAMPLERS = ("ddpm", "ddim")


def timesteps(T: int, steps: int | None = None) -> list[int]:
    """``steps`` decreasing integer steps from ``T`` down to 1, evenly spaced (all ``T``
    steps by default).

    Examples:
        >>> timesteps(10, 3), timesteps(4)
        ([10, 6, 1], [4, 3, 2, 1])
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ProbgenError(f"T: must be a positive int, got {T!r}")
    steps = T if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ProbgenError(f"steps: must be an int in 1..{T}, got {steps!r}")
    if steps == 1:
        return [T]
    grid = torch.linspace(T, 1, steps, dtype=torch.float64).round().long().tolist()
    return list(dict.fromkeys(grid))


def ddpm_step(x_t: Tensor, x0: Tensor, ab_t: Tensor, ab_s: Tensor, noise: Tensor | None,
              variance: str = "beta") -> Tensor:
    """One ancestral step ``x_t -> x_s`` (``s < t``) given the predicted ``x_0``.

    Examples:
        >>> x = ddpm_step(torch.zeros(2), torch.ones(2), torch.tensor(0.5), torch.tensor(1.0),
        ...               None)
        >>> x.tolist()  # s = 0: the posterior mean is x_0 itself
        [1.0, 1.0]
    """
    mean, post_var = posterior(x0, x_t, ab_t, ab_s)
    if noise is None:
        return mean
    if variance == "posterior":
        var = post_var
    elif variance == "beta":
        var = expand_as(1 - ab_t / ab_s, x_t).expand_as(mean)
    else:
        raise ProbgenError(f"variance: 'beta' or 'posterior', got {variance!r}")
    return mean + var.sqrt() * noise


def ddim_mean_var(x_t: Tensor, x0: Tensor, eps: Tensor, ab_t: Tensor, ab_s: Tensor,
                  eta: float) -> tuple[Tensor, Tensor]:
    """Mean and variance of the DDIM transition ``x_t -> x_s`` (Song et al. 2021, eq. 12, 16).

    Examples:
        >>> m, v = ddim_mean_var(torch.zeros(1), torch.ones(1), torch.zeros(1),
        ...                      torch.tensor(0.5), torch.tensor(0.8), eta=0.0)
        >>> round(float(m), 4), float(v)
        (0.8944, 0.0)
    """
    if not eta >= 0:
        raise ProbgenError(f"eta: must be >= 0, got {eta!r}")
    ab_t, ab_s = expand_as(ab_t, x_t), expand_as(ab_s, x_t)
    var = eta ** 2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
    mean = ab_s.sqrt() * x0 + (1 - ab_s - var).clamp(min=0).sqrt() * eps
    return mean, var.expand_as(mean)


def ddim_step(x_t: Tensor, x0: Tensor, eps: Tensor, ab_t: Tensor, ab_s: Tensor,
              eta: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """One DDIM step ``x_t -> x_s``: the mean of
    [`ddim_mean_var`][probgen.models.diffusion.samplers.ddim_mean_var] plus ``sigma * noise``."""
    mean, var = ddim_mean_var(x_t, x0, eps, ab_t, ab_s, eta)
    if noise is None or eta == 0:
        return mean
    return mean + var.sqrt() * noise


@torch.no_grad()
def sample(denoise: Denoiser, alpha_bars: Tensor, shape: Sequence[int], sampler: str = "ddpm",
           steps: int | None = None, eta: float = 0.0, variance: str = "beta",
           clip: float | None = None, seed: int | None = None, x_T: Tensor | None = None,
           device: torch.device | str | None = None,
           callback: Callable[[int, Tensor, Tensor], None] | None = None,
           progress: bool = False) -> Tensor:
    """Run the reverse chain from ``x_T ~ N(0, I)`` (or the given ``x_T``) to ``x_0``.

    Args:
        denoise: ``(x_t, t) -> (x0, eps)``.
        alpha_bars: ``(T + 1,)`` cumulative products, ``alpha_bars[0] = 1``.
        shape: ``(N, ...)`` of the samples.
        sampler: ``"ddpm"`` (ancestral) or ``"ddim"``.
        steps: how many steps to visit (default all ``T``; see
            [`timesteps`][probgen.models.diffusion.samplers.timesteps]).
        eta: DDIM's noise scale (0: deterministic).
        variance: the ancestral sampler's ``sigma^2`` (``"beta"`` or ``"posterior"``).
        clip: clamp the predicted ``x_0`` to ``[-clip, clip]`` (then ``eps`` is recomputed
            from it); ``None``: no clamping.
        seed: seeds a private generator (the global RNG is left alone).
        callback: ``callback(t, x_t, x0_pred)`` after each prediction (trajectories).
    """
    if sampler not in SAMPLERS:
        raise ProbgenError(f"sampler: unknown {sampler!r}; choose one of {list(SAMPLERS)}")
    ab = torch.as_tensor(alpha_bars, dtype=torch.float32)
    T = ab.shape[0] - 1
    ts = timesteps(T, steps)
    device = torch.device(device) if device is not None else (
        x_T.device if x_T is not None else torch.device("cpu"))
    ab = ab.to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2 ** 62, ()).item()))
    shape = tuple(shape)
    x = x_T.to(device) if x_T is not None else torch.randn(shape, generator=gen, device=device)
    it = ts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(ts, desc=f"{sampler} sampling", leave=False)
    for i, t in enumerate(it):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0, eps = denoise(x, tt)
        ab_t, ab_s = ab[t], ab[s]
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        if callback is not None:
            callback(t, x, x0)
        last = s == 0
        noise = None if last else torch.randn(shape, generator=gen, device=device)
        if sampler == "ddpm":
            x = ddpm_step(x, x0, ab_t, ab_s, noise, variance)
        else:
            x = ddim_step(x, x0, eps, ab_t, ab_s, eta, noise)
    return x
