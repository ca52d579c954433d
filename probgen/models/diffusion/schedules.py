"""Noise schedules and parameterisations of Gaussian diffusion, as stateless functions.

The forward (noising) process of DDPM (Ho et al. 2020, eq. 2 and 4) is

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),
    q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
    alpha_bar_t = prod_{s <= t} (1 - beta_s).

So ``x_t = a_t x_0 + s_t eps`` with ``a_t = sqrt(alpha_bar_t)``, ``s_t = sqrt(1 - alpha_bar_t)``
and ``eps ~ N(0, I)``; the signal-to-noise ratio is ``SNR = a^2 / s^2`` (Kingma et al. 2021,
VDM, eq. 2). Everything here is a function of ``alpha_bar`` (as in diffusers' schedulers,
the math lives apart from the network):

- schedules: [`linear_betas`][probgen.models.diffusion.schedules.linear_betas] (Ho et al.
  2020, sec. 4), [`cosine_betas`][probgen.models.diffusion.schedules.cosine_betas] (Nichol &
  Dhariwal 2021, eq. 17),
  [`cosine_snr_alpha_bars`][probgen.models.diffusion.schedules.cosine_snr_alpha_bars] (the
  same cosine, as a log-SNR curve truncated to a finite range, for likelihood), and the
  continuous
  [`alpha_bar`][probgen.models.diffusion.schedules.alpha_bar] for ``t`` in ``[0, 1]``;
  [`NoiseSchedule`][probgen.models.diffusion.schedules.NoiseSchedule] holds one discretised
  schedule (index ``t = 0..T``, ``alpha_bar_0 = 1``);
- [`snr`][probgen.models.diffusion.schedules.snr],
  [`log_snr`][probgen.models.diffusion.schedules.log_snr] and back
  ([`alpha_bar_from_log_snr`][probgen.models.diffusion.schedules.alpha_bar_from_log_snr]);
- [`q_sample`][probgen.models.diffusion.schedules.q_sample] (eq. 4) and
  [`posterior`][probgen.models.diffusion.schedules.posterior], the forward-process posterior
  ``q(x_{t-1} | x_t, x_0)`` (eq. 6-7);
- conversions between the four things a network may predict, ``"epsilon"``, ``"x0"``,
  ``"v"`` (Salimans & Ho 2022, ``v = a eps - s x_0``) and ``"score"``
  (``grad log q(x_t | x_0) = -eps / s``, Song et al. 2021), and for data on a grid of
  levels ``"levels"``, per-pixel logits over the levels
  ([`level_logits`][probgen.models.diffusion.schedules.level_logits]):
  [`to_x0_eps`][probgen.models.diffusion.schedules.to_x0_eps] and
  [`from_x0_eps`][probgen.models.diffusion.schedules.from_x0_eps].

Examples:
    >>> import torch
    >>> sched = NoiseSchedule.make("cosine", 100)
    >>> sched.T, float(sched.alpha_bars[0]), bool(sched.alpha_bars[-1] < 1e-3)
    (100, 1.0, True)
    >>> x0, eps = torch.randn(3, 2), torch.randn(3, 2)
    >>> ab = sched.alpha_bar(torch.tensor([10, 50, 90]))
    >>> xt = q_sample(x0, ab, eps)
    >>> v = from_x0_eps(x0, eps, "v", xt, ab)
    >>> back = to_x0_eps(v, "v", xt, ab)
    >>> torch.allclose(back[0], x0, atol=1e-5), torch.allclose(back[1], eps, atol=1e-5)
    (True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = [
    "PREDICTIONS", "SCHEDULES",
    "linear_betas", "cosine_betas", "cosine_snr_alpha_bars", "alpha_bar", "alpha_bars_from_betas",
    "betas_from_alpha_bars", "snr", "log_snr", "alpha_bar_from_log_snr",
    "NoiseSchedule", "q_sample", "posterior", "level_logits", "to_x0_eps", "from_x0_eps",
    "expand_as",
]

#: what a denoising network may predict
PREDICTIONS = ("epsilon", "x0", "v", "score", "levels")
#: named schedules
SCHEDULES = ("linear", "cosine", "cosine_snr")


def _check_steps(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ProbgenError(f"T: the number of diffusion steps must be a positive int, got {T!r}")
    return T


def linear_betas(T: int, beta_start: float | None = None, beta_end: float | None = None
                 ) -> Tensor:
    """``(T,)`` betas rising linearly (Ho et al. 2020, sec. 4: 1e-4 to 0.02 for T = 1000).

    By default the end points are those of T = 1000 scaled by ``1000 / T`` (at most 0.999),
    so a shorter chain still ends near pure noise (the scaling of Nichol & Dhariwal 2021's
    code).

    Examples:
        >>> b = linear_betas(1000)
        >>> round(float(b[0]), 6), round(float(b[-1]), 6)
        (0.0001, 0.02)
    """
    T = _check_steps(T)
    scale = 1000.0 / T
    lo = min(1e-4 * scale, 0.999) if beta_start is None else float(beta_start)
    hi = min(0.02 * scale, 0.999) if beta_end is None else float(beta_end)
    if not (0 < lo <= hi < 1):
        raise ProbgenError(f"beta_start, beta_end: need 0 < start <= end < 1, got {lo}, {hi}")
    return torch.linspace(lo, hi, T, dtype=torch.float64).float()


def alpha_bar(t: Tensor | float, schedule: str = "cosine", s: float = 0.008) -> Tensor:
    """The continuous ``alpha_bar(t)`` for ``t`` in ``[0, 1]`` (``alpha_bar(0) = 1``).

    ``"cosine"``: ``f(t) / f(0)`` with ``f(t) = cos((t + s) / (1 + s) * pi / 2)^2`` (Nichol &
    Dhariwal 2021, eq. 17). ``"linear"``: the limit of the linear beta schedule,
    ``exp(-(b0 t + (b1 - b0) t^2 / 2))`` with ``b0 = 0.1``, ``b1 = 20`` (the VP SDE of Song et
    al. 2021, eq. 33, whose discretisation is Ho et al.'s schedule with T = 1000).

    Examples:
        >>> round(float(alpha_bar(0.5, "cosine")), 4), round(float(alpha_bar(1.0, "linear")), 6)
        (0.4938, 4.3e-05)
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    if schedule == "cosine":
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (f / math.cos(s / (1 + s) * math.pi / 2) ** 2).clamp(0.0, 1.0).float()
    if schedule == "linear":
        b0, b1 = 0.1, 20.0
        return torch.exp(-(b0 * t + 0.5 * (b1 - b0) * t ** 2)).float()
    raise ProbgenError(f"schedule: unknown {schedule!r}; choose one of {list(SCHEDULES)}")


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """``(T,)`` betas of the cosine schedule: ``beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T)``
    clipped at ``max_beta`` (Nichol & Dhariwal 2021, eq. 17 and the text after it).

    Examples:
        >>> b = cosine_betas(10)
        >>> b.shape, bool((b > 0).all() and (b <= 0.999).all())
        (torch.Size([10]), True)
    """
    T = _check_steps(T)
    grid = torch.arange(T + 1, dtype=torch.float64) / T
    ab = alpha_bar(grid, "cosine", s).double()
    return (1 - ab[1:] / ab[:-1]).clamp(max=max_beta).float()


def cosine_snr_alpha_bars(T: int, log_snr_min: float = -10.0, log_snr_max: float = 7.0
                          ) -> Tensor:
    """``(T + 1,)`` alpha_bars of the cosine schedule truncated in log-SNR: ``alpha_bar_0 = 1``
    and, for ``t = 1..T``, ``log SNR_t = -2 log tan(theta_t)`` with ``theta_t`` evenly spaced
    from ``atan(exp(-log_snr_max / 2))`` (step 1) to ``atan(exp(-log_snr_min / 2))`` (step T).

    Nichol & Dhariwal's cosine (``s = 0``) is ``log SNR(u) = -2 log tan(pi u / 2)``, which runs
    from ``+inf`` to ``-inf``; its last step has ``beta_T`` clipped at 0.999, i.e. a jump of
    ``log 1000`` in SNR within one step, and the ELBO term of that step weighs the network's
    epsilon error by ``(SNR_{T-1} / SNR_T - 1) / 2 ~ 500`` per pixel. Truncated (the "shifted /
    truncated cosine" of Kingma & Gao 2023, sec. 2) every step changes the SNR by a small
    factor, ``L_T = KL(q(x_T | x_0) || N(0, I))`` is about ``sigmoid(log_snr_min) |x_0|^2 / 2``
    (``~1e-3`` nats for 64 pixels at -10), and the first step's noise ``sigmoid(-log_snr_max)
    ^ 1/2`` (0.03 at 7) is a fraction of the 17-level digits' bin width (0.125), so the
    discrete decoder at ``t = 0`` costs little (the range argument of VDM, Kingma et al. 2021,
    sec. 3.3 and app. C).

    Examples:
        >>> ab = cosine_snr_alpha_bars(100)
        >>> [round(float(log_snr(ab[t])), 3) for t in (1, 100)]
        [7.0, -10.0]
        >>> bool((ab[1:] < ab[:-1]).all())
        True
    """
    T = _check_steps(T)
    lo, hi = float(log_snr_min), float(log_snr_max)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ProbgenError(f"log_snr_min, log_snr_max: need finite min < max, got {lo}, {hi}")
    a, b = math.atan(math.exp(-hi / 2)), math.atan(math.exp(-lo / 2))
    u = torch.linspace(0.0, 1.0, T, dtype=torch.float64) if T > 1 else torch.ones(
        1, dtype=torch.float64)
    lam = -2 * torch.log(torch.tan(a + u * (b - a)))
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.sigmoid(lam)]).float()


def alpha_bars_from_betas(betas: Tensor) -> Tensor:
    """``(T,)`` betas -> ``(T + 1,)`` ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` with
    ``alpha_bar_0 = 1`` (index ``t`` is the step, as in the chain ``x_0 .. x_T``)."""
    b = torch.as_tensor(betas, dtype=torch.float64)
    if b.ndim != 1 or not ((b > 0) & (b < 1)).all():
        raise ProbgenError("betas: need a 1-D tensor of values in (0, 1)")
    return torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)]).float()


def betas_from_alpha_bars(alpha_bars: Tensor) -> Tensor:
    """``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}``, the inverse of
    [`alpha_bars_from_betas`][probgen.models.diffusion.schedules.alpha_bars_from_betas]."""
    ab = torch.as_tensor(alpha_bars, dtype=torch.float64)
    return (1 - ab[1:] / ab[:-1]).float()


def snr(alpha_bar_t: Tensor) -> Tensor:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` (VDM, eq. 2)."""
    return alpha_bar_t / (1 - alpha_bar_t)


def log_snr(alpha_bar_t: Tensor) -> Tensor:
    """``log SNR = log alpha_bar - log(1 - alpha_bar)`` (VDM's ``-gamma``)."""
    return torch.log(alpha_bar_t) - torch.log1p(-alpha_bar_t)


def alpha_bar_from_log_snr(lam: Tensor) -> Tensor:
    """``alpha_bar = sigmoid(log SNR)`` (VDM, sec. 3.1: ``alpha^2 = sigmoid(-gamma)``)."""
    return torch.sigmoid(lam)


def expand_as(coef: Tensor, x: Tensor) -> Tensor:
    """A per-example ``(N,)`` coefficient (or a scalar) shaped to broadcast over ``x``."""
    coef = torch.as_tensor(coef, dtype=x.dtype, device=x.device)
    if coef.ndim == 0:
        return coef
    return coef.reshape(coef.shape[0], *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class NoiseSchedule:
    """A discretised schedule: ``betas`` ``(T,)`` and ``alpha_bars`` ``(T + 1,)``, indexed by
    the step ``t = 0..T`` (``beta`` of step ``t`` is ``betas[t - 1]``).

    Examples:
        >>> s = NoiseSchedule.make("linear", 4, beta_start=0.1, beta_end=0.4)
        >>> [round(float(a), 4) for a in s.alpha_bars]
        [1.0, 0.9, 0.72, 0.504, 0.3024]
    """

    betas: Tensor
    alpha_bars: Tensor
    name: str = "custom"

    @staticmethod
    def make(name: str, T: int, **kwargs: float) -> NoiseSchedule:
        """The schedule called ``name`` (``"linear"``, ``"cosine"`` or ``"cosine_snr"``, whose
        keyword arguments are ``log_snr_min`` and ``log_snr_max``) with ``T`` steps."""
        if name == "cosine_snr":
            ab = cosine_snr_alpha_bars(T, **kwargs)
            return NoiseSchedule(betas_from_alpha_bars(ab), ab, name)
        if name == "linear":
            betas = linear_betas(T, **kwargs)
        elif name == "cosine":
            betas = cosine_betas(T, **kwargs)
        else:
            raise ProbgenError(f"schedule: unknown {name!r}; choose one of {list(SCHEDULES)}")
        return NoiseSchedule(betas, alpha_bars_from_betas(betas), name)

    @staticmethod
    def from_betas(betas: Tensor, name: str = "custom") -> NoiseSchedule:
        return NoiseSchedule(torch.as_tensor(betas).float(), alpha_bars_from_betas(betas), name)

    @property
    def T(self) -> int:  # noqa: N802 - the paper's name
        return int(self.betas.shape[0])

    def alpha_bar(self, t: Tensor) -> Tensor:
        """``alpha_bar_t`` for integer steps ``t`` in ``0..T`` (any shape)."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or bool((t < 0).any() or (t > self.T).any()):
            raise ProbgenError(f"t: need integer steps in 0..{self.T}")
        return self.alpha_bars.to(t.device)[t]

    def beta(self, t: Tensor) -> Tensor:
        """``beta_t`` for integer steps ``t`` in ``1..T``."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or bool((t < 1).any() or (t > self.T).any()):
            raise ProbgenError(f"t: need integer steps in 1..{self.T}")
        return self.betas.to(t.device)[t - 1]


def q_sample(x0: Tensor, alpha_bar_t: Tensor, noise: Tensor) -> Tensor:
    """``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise`` (Ho et al. 2020, eq. 4);
    ``alpha_bar_t`` is a scalar or one value per example."""
    ab = expand_as(alpha_bar_t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def posterior(x0: Tensor, x_t: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor
              ) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``q(x_s | x_t, x_0)`` for ``s < t`` (Ho et al. 2020, eq. 6-7 for
    ``s = t - 1``; the general ``s`` is the same algebra with ``alpha_t = ab_t / ab_s``).

    ``mean = sqrt(ab_s) beta / (1 - ab_t) x_0 + sqrt(alpha) (1 - ab_s) / (1 - ab_t) x_t``,
    ``var = (1 - ab_s) / (1 - ab_t) beta`` with ``alpha = ab_t / ab_s``, ``beta = 1 - alpha``.

    Examples:
        >>> m, v = posterior(torch.ones(1), torch.zeros(1), torch.tensor(0.5), torch.tensor(1.0))
        >>> float(m), float(v)  # s = 0: x_0 is known exactly
        (1.0, 0.0)
    """
    ab_t, ab_s = expand_as(alpha_bar_t, x0), expand_as(alpha_bar_s, x0)
    alpha = ab_t / ab_s
    beta = 1 - alpha
    mean = ab_s.sqrt() * beta / (1 - ab_t) * x0 + alpha.sqrt() * (1 - ab_s) / (1 - ab_t) * x_t
    var = (1 - ab_s) / (1 - ab_t) * beta
    return mean, var.expand_as(mean)


def level_logits(pred: Tensor, x_t: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """The posterior logits over ``K`` levels ``c_k`` evenly spaced in ``[-1, 1]`` of each
    pixel of ``x_t``: the network's ``pred`` ``(*x_t.shape, K)`` plus the exact Gaussian
    log-likelihood ``log q(x_t | x_0 = c_k) = -(x_t - a c_k)^2 / (2 s^2) + const``.

    With the likelihood added in closed form the network only supplies the prior of each
    pixel given the others; at high SNR the likelihood term alone rounds ``x_t / a`` to the
    nearest level, which a network that predicts a continuous ``eps`` has to learn as a
    sawtooth (the per-pixel Bayes posterior of the categorical score interpolation of Dieleman
    et al. 2022, CDCD, sec. 3, and VDM's discrete decoder, Kingma et al. 2021, app. C).

    Examples:
        >>> lg = level_logits(torch.zeros(1, 1, 3), torch.tensor([[0.98]]), torch.tensor(0.99))
        >>> int(lg.argmax(-1))  # x_t / a ~ 0.985 is nearest the level +1
        2
    """
    k = pred.shape[-1]
    if k < 2 or pred.shape[:-1] != x_t.shape:
        raise ProbgenError(f"pred: 'levels' needs shape {(*x_t.shape, 'K')} with K >= 2, got "
                           f"{tuple(pred.shape)}")
    ab = expand_as(alpha_bar_t, x_t)[..., None]
    c = torch.linspace(-1.0, 1.0, k, dtype=x_t.dtype, device=x_t.device)
    return pred - (x_t[..., None] - ab.sqrt() * c) ** 2 / (2 * (1 - ab))


def _check_prediction(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise ProbgenError(f"prediction: unknown {kind!r}; choose one of {list(PREDICTIONS)}")


def to_x0_eps(pred: Tensor, kind: str, x_t: Tensor, alpha_bar_t: Tensor
              ) -> tuple[Tensor, Tensor]:
    """A network output ``pred`` of type ``kind`` -> the implied ``(x_0, eps)`` at ``x_t``.

    ``epsilon``: ``x_0 = (x_t - s eps) / a`` (Ho et al. 2020, eq. 15); ``x0``:
    ``eps = (x_t - a x_0) / s``; ``v``: ``x_0 = a x_t - s v``, ``eps = s x_t + a v`` (Salimans &
    Ho 2022, sec. 4 and app. D); ``score``: ``eps = -s score`` (the score of
    ``q(x_t | x_0)``, Song et al. 2021, eq. 7); ``levels``: ``x_0`` is the mean of the level
    posterior of [`level_logits`][probgen.models.diffusion.schedules.level_logits] (``pred``
    has one more trailing dimension, the levels), ``eps = (x_t - a x_0) / s``.
    """
    _check_prediction(kind)
    ab = expand_as(alpha_bar_t, x_t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if kind == "levels":
        w = torch.softmax(level_logits(pred, x_t, alpha_bar_t), -1)
        c = torch.linspace(-1.0, 1.0, pred.shape[-1], dtype=x_t.dtype, device=x_t.device)
        x0 = (w * c).sum(-1)
        return x0, (x_t - a * x0) / s
    if kind == "epsilon":
        return (x_t - s * pred) / a, pred
    if kind == "x0":
        return pred, (x_t - a * pred) / s
    if kind == "v":
        return a * x_t - s * pred, s * x_t + a * pred
    eps = -s * pred
    return (x_t - s * eps) / a, eps


def from_x0_eps(x0: Tensor, eps: Tensor, kind: str, x_t: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """The target of type ``kind`` for a known ``(x_0, eps)`` (the inverse of
    [`to_x0_eps`][probgen.models.diffusion.schedules.to_x0_eps]; ``"levels"`` has none: its
    target is the level itself)."""
    _check_prediction(kind)
    if kind == "levels":
        raise ProbgenError("prediction: 'levels' predicts a distribution over levels; its "
                           "target is the level (cross-entropy), not a tensor like x_t")
    ab = expand_as(alpha_bar_t, x_t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if kind == "epsilon":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return a * eps - s * x0
    return -eps / s
