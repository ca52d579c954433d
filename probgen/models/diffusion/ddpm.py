"""DDPM as a Pyro program (Ho et al. 2020): a hierarchical VAE whose guide is fixed.

The generative model is the chain of ``graphs/diffusion.yaml``, ``x_T -> ... -> x_1 -> x_0``:

    p(x_T) = N(0, I),   p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I),   p(x_0 | x_1)

with ``mu_theta`` the mean of the forward-process posterior ``q(x_{t-1} | x_t, x_0)`` at the
network's guess of ``x_0`` (eq. 7 and 11), ``sigma_t^2 = beta_t`` (``variance="beta"``) or the
posterior variance ``beta~_t`` (``"posterior"``; Ho et al. found both alike, sec. 3.2), and
``p(x_0 | x_1)`` the discrete decoder of eq. 13
([`DiscretizedGaussian`][probgen.models.diffusion.decoder.DiscretizedGaussian]) for integer
data, a Gaussian for real vectors. The guide is the forward process itself,
``q(x_{1:T} | x_0) = prod_t N(sqrt(1 - beta_t) x_{t-1}, beta_t I)`` (eq. 2): it has no
parameters, so the ELBO trains the model alone.

[`DDPM.model`][probgen.models.diffusion.ddpm.DDPM.model] and
[`DDPM.guide`][probgen.models.diffusion.ddpm.DDPM.guide] are those two Pyro programs, one
sample site per step (``x_T``, ``x_{T-1}``, ..., ``x_1``, observed ``x_0``): any Pyro ELBO
on them is the diffusion ELBO. Training uses the same ELBO rewritten with a sampled step and
closed-form Gaussian KLs ([`DiffusionELBO`][probgen.models.diffusion.elbo.DiffusionELBO]).

Examples:
    >>> import torch, pyro
    >>> from probgen.nn.time_embedding import TimeMLP
    >>> from probgen.models.diffusion.schedules import NoiseSchedule
    >>> ddpm = DDPM(TimeMLP(2, hidden=(16,)), NoiseSchedule.make("linear", 3), (2,))
    >>> tr = pyro.poutine.trace(ddpm.guide).get_trace(torch.zeros(5, 2))
    >>> [n for n in tr.nodes if n.startswith("x_")]
    ['x_1', 'x_2', 'x_T']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.models.diffusion.decoder import DiscretizedGaussian, levels_to_unit_interval
from probgen.models.diffusion.schedules import (
    PREDICTIONS,
    NoiseSchedule,
    expand_as,
    level_logits,
    posterior,
    to_x0_eps,
)

__all__ = ["DDPM", "site_name"]


def site_name(t: int, T: int) -> str:
    """The Pyro site of ``x_t``: ``"x_T"`` for the top, else ``"x_{t}"``."""
    return "x_T" if t == T else f"x_{t}"


class DDPM(nn.Module):
    """A denoising network, a noise schedule and the reverse-process choices.

    Args:
        net: ``net(x, t, y) -> prediction`` with ``t = step / T`` in ``(0, 1]`` (e.g.
            [`UNet`][probgen.nn.unet.UNet] or [`TimeMLP`][probgen.nn.time_embedding.TimeMLP]).
        schedule: the discretised noise schedule (``T`` steps).
        data_shape: shape of one example (``(64,)`` for digits).
        net_shape: the shape the network sees (``(1, 8, 8)`` for digits; default
            ``data_shape``).
        prediction: what the network predicts: ``"epsilon"`` (Ho et al.), ``"x0"``, ``"v"``,
            or (integer-level data) ``"levels"``: per-pixel logits over the levels, to which
            the exact likelihood of ``x_t`` is added
            ([`level_logits`][probgen.models.diffusion.schedules.level_logits]); the network
            then has ``levels`` outputs per pixel (channels for a U-Net) and the decoder
            ``p(x_0 | x_1)`` is that categorical posterior.
        variance: ``"beta"`` or ``"posterior"`` for ``sigma_t^2``.
        levels: integer levels of discrete data (the decoder of eq. 13); ``None`` for real
            vectors (a Gaussian decoder; the ELBO then bounds a density).
        num_classes: labels the network is conditioned on (0: none).
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, data_shape: Sequence[int],
                 net_shape: Sequence[int] | None = None, prediction: str = "epsilon",
                 variance: str = "beta", levels: int | None = None,
                 num_classes: int = 0) -> None:
        super().__init__()
        kinds = ("epsilon", "x0", "v", "levels")
        if prediction not in kinds:
            raise ProbgenError(f"prediction: choose one of {list(kinds)}, got {prediction!r}")
        if prediction == "levels" and not levels:
            raise ProbgenError("prediction: 'levels' needs integer-level data (levels=...)")
        assert set(kinds) <= set(PREDICTIONS)
        if variance not in ("beta", "posterior"):
            raise ProbgenError(f"variance: 'beta' or 'posterior', got {variance!r}")
        self.net, self.schedule = net, schedule
        self.data_shape = tuple(int(d) for d in data_shape)
        self.net_shape = tuple(net_shape) if net_shape is not None else self.data_shape
        if math.prod(self.net_shape) != math.prod(self.data_shape):
            raise ProbgenError(f"net_shape: {self.net_shape} does not hold {self.data_shape}")
        self.prediction, self.variance = prediction, variance
        self.levels, self.num_classes = levels, int(num_classes)
        self.register_buffer("alpha_bars", schedule.alpha_bars.clone(), persistent=False)
        self.register_buffer("betas", schedule.betas.clone(), persistent=False)

    @property
    def T(self) -> int:  # noqa: N802 - the paper's name
        return self.schedule.T

    def extra_repr(self) -> str:
        return (f"T={self.T}, schedule={self.schedule.name!r}, prediction={self.prediction!r}, "
                f"variance={self.variance!r}, levels={self.levels}")

    # -- scales ------------------------------------------------------------------------------
    def to_model_space(self, x0: Tensor) -> Tensor:
        """Data as the chain sees it: integer levels -> ``[-1, 1]``; vectors unchanged."""
        return levels_to_unit_interval(x0, self.levels) if self.levels else x0.float()

    def ab(self, t: Tensor) -> Tensor:
        """``alpha_bar_t`` for integer steps ``t`` (on this module's device)."""
        return self.alpha_bars[t]

    def sigma2(self, t: Tensor) -> Tensor:
        """The reverse-process variance ``sigma_t^2`` for ``t >= 1``. At ``t = 1`` the
        posterior variance is 0, so ``beta_1`` is used (as in Ho et al.'s code)."""
        beta = self.betas[t - 1]
        if self.variance == "beta":
            return beta
        tilde = (1 - self.alpha_bars[t - 1]) / (1 - self.alpha_bars[t]) * beta
        return torch.where(t == 1, beta, tilde)

    def _labels(self, y: Tensor | None) -> Tensor | None:
        if y is None or self.num_classes == 0:
            if y is not None:
                raise ProbgenError("y: this diffusion model has no label input")
            return None
        y = torch.as_tensor(y, device=self.alpha_bars.device).long()
        if bool((y < 0).any() or (y > self.num_classes).any()):
            raise ProbgenError(f"y: labels must lie in 0..{self.num_classes - 1} "
                               f"({self.num_classes}: no label)")
        return y

    # -- the network -------------------------------------------------------------------------
    def predict(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The raw network output at ``x_t`` ``(N, *data_shape)``, step(s) ``t``."""
        n = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device).long().expand(n)
        out = self.net(x_t.reshape(n, *self.net_shape), t.float() / self.T, self._labels(y))
        if self.prediction != "levels":
            return out.reshape(x_t.shape)
        k = int(self.levels or 0)
        if len(self.net_shape) > 1:  # channels first: (N, K, H, W) -> (N, H, W, K)
            out = out.reshape(n, k, *self.net_shape[1:]).movedim(1, -1)
        return out.reshape(*x_t.shape, k)

    def level_logits(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``(N, *data_shape, levels)`` logits of ``p(x_0 | x_t)`` per pixel (``"levels"``)."""
        if self.prediction != "levels":
            raise ProbgenError("prediction: level logits need prediction='levels'")
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
        return level_logits(self.predict(x_t, t, y), x_t, self.ab(t))

    def denoise(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x_0, eps)`` implied by the network at ``x_t``, step(s) ``t``."""
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
        return to_x0_eps(self.predict(x_t, t, y), self.prediction, x_t, self.ab(t))

    def p_mean_var(self, x_t: Tensor, t: Tensor, y: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``p(x_{t-1} | x_t)``: eq. 6-7 at the predicted ``x_0``."""
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
        x0, _ = self.denoise(x_t, t, y)
        mean, _ = posterior(x0, x_t, self.ab(t), self.ab(t - 1))
        return mean, expand_as(self.sigma2(t), x_t).expand_as(mean)

    def decoder(self, x_1: Tensor, y: Tensor | None = None) -> torch.distributions.Distribution:
        """``p(x_0 | x_1)`` as a distribution over one example per row (``to_event``): the
        discretised Gaussian of eq. 13, or with ``"levels"`` the network's categorical
        posterior over the levels."""
        if self.prediction == "levels":
            one = torch.ones((), dtype=torch.long)
            return dist.Categorical(logits=self.level_logits(x_1, one, y)).to_event(
                len(self.data_shape))
        mean, var = self.p_mean_var(x_1, torch.ones((), dtype=torch.long), y)
        if self.levels:
            d = DiscretizedGaussian(mean, var.sqrt(), self.levels)
        else:
            d = dist.Normal(mean, var.sqrt())
        return dist.Independent(d, len(self.data_shape)) if self.levels else d.to_event(
            len(self.data_shape))

    # -- the Pyro programs -------------------------------------------------------------------
    def model(self, x0: Tensor, y: Tensor | None = None) -> None:
        """``p(x_T) prod_t p(x_{t-1} | x_t)``, ``x_0`` observed (one site per step)."""
        n, k = x0.shape[0], len(self.data_shape)
        with pyro.plate("data", n):
            x = pyro.sample(site_name(self.T, self.T), dist.Normal(
                x0.new_zeros((n, *self.data_shape), dtype=torch.float),
                1.0).to_event(k))
            for t in range(self.T, 1, -1):
                mean, var = self.p_mean_var(x, torch.tensor(t), y)
                x = pyro.sample(site_name(t - 1, self.T), dist.Normal(mean, var.sqrt())
                                .to_event(k))
            pyro.sample("x_0", self.decoder(x, y), obs=x0)

    def guide(self, x0: Tensor, y: Tensor | None = None) -> None:
        """The forward process ``q(x_{1:T} | x_0) = prod_t q(x_t | x_{t-1})`` (eq. 2)."""
        n, k = x0.shape[0], len(self.data_shape)
        x = self.to_model_space(x0)
        with pyro.plate("data", n):
            for t in range(1, self.T + 1):
                beta = self.betas[t - 1]
                x = pyro.sample(site_name(t, self.T), dist.Normal(
                    (1 - beta).sqrt() * x, beta.sqrt().expand_as(x)).to_event(k))
