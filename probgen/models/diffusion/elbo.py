"""The diffusion ELBO term by term, and the objective that trains a
[`DDPM`][probgen.models.diffusion.ddpm.DDPM] through [`fit`][probgen.infer.fit.fit].

With the forward process as the guide, the negative ELBO of the chain splits into closed-form
terms (Ho et al. 2020, eq. 5):

    -ELBO = L_T + sum_{t=2}^{T} L_{t-1} + L_0,
    L_T     = KL(q(x_T | x_0) || p(x_T)),
    L_{t-1} = E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),     (eq. 6-8)
    L_0     = -E_q log p(x_0 | x_1).

Both distributions in each ``L_{t-1}`` are Gaussian, so each KL is exact given ``x_t``; only
``x_t ~ q(x_t | x_0)`` (eq. 4) is sampled. [`elbo_terms`][probgen.models.diffusion.elbo.elbo_terms]
evaluates all ``T + 1`` terms (the test bound); the training estimate
([`sampled_elbo`][probgen.models.diffusion.elbo.sampled_elbo]) draws one step ``t`` uniformly
per example and returns ``L_T + T * L_{t-1}``, unbiased for the same sum. ``weighting="simple"``
is Ho et al.'s ``L_simple`` (eq. 14): the squared error of the network's prediction, i.e. the
``L_{t-1}`` with their weights dropped; it trains better samples but is not a bound.

Examples:
    >>> import torch
    >>> from probgen.nn.time_embedding import TimeMLP
    >>> from probgen.models.diffusion.ddpm import DDPM
    >>> from probgen.models.diffusion.schedules import NoiseSchedule
    >>> ddpm = DDPM(TimeMLP(2, hidden=(16,)), NoiseSchedule.make("cosine", 10), (2,))
    >>> elbo_terms(ddpm, torch.randn(4, 2)).shape  # T + 1 terms per example
    torch.Size([11, 4])
    >>> DiffusionELBO().loss(ddpm.model, ddpm.guide, torch.randn(4, 2)).shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from probgen.errors import ProbgenError
from probgen.infer.objectives import Objective
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.schedules import from_x0_eps, posterior, q_sample
from probgen.nn.ema import EMA

__all__ = ["prior_kl", "term_at", "elbo_terms", "sampled_elbo", "simple_loss",
           "DiffusionELBO", "diffusion_program"]


def _event_sum(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(-1)


def prior_kl(ddpm: DDPM, x0: Tensor) -> Tensor:
    """``L_T = KL(q(x_T | x_0) || N(0, I))`` per example ``(N,)`` (no parameters)."""
    x = ddpm.to_model_space(x0)
    ab = ddpm.alpha_bars[-1]
    q = Normal(ab.sqrt() * x, (1 - ab).sqrt().expand_as(x))
    return _event_sum(kl_divergence(q, Normal(torch.zeros_like(x), torch.ones_like(x))))


def term_at(ddpm: DDPM, x0: Tensor, t: Tensor, y: Tensor | None = None,
            noise: Tensor | None = None) -> Tensor:
    """The term of step ``t`` per example ``(N,)``: ``L_0 = -log p(x_0 | x_1)`` where
    ``t == 1``, ``L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` where ``t >= 2``;
    ``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) noise`` (``noise`` drawn when not given)."""
    x = ddpm.to_model_space(x0)
    t = torch.as_tensor(t, device=x.device).long().expand(x.shape[0])
    if bool((t < 1).any() or (t > ddpm.T).any()):
        raise ProbgenError(f"t: steps must lie in 1..{ddpm.T}")
    noise = torch.randn_like(x) if noise is None else noise
    x_t = q_sample(x, ddpm.ab(t), noise)
    p_mean, p_var = ddpm.p_mean_var(x_t, t, y)
    q_mean, q_var = posterior(x, x_t, ddpm.ab(t), ddpm.ab(t - 1))
    first = t == 1
    # q_var is 0 at t = 1 (x_0 is then known); that row uses the decoder instead
    q_sd = torch.where(first.reshape(-1, *([1] * (x.ndim - 1))), torch.ones_like(q_var), q_var
                       ).sqrt()
    kl = _event_sum(kl_divergence(Normal(q_mean, q_sd), Normal(p_mean, p_var.sqrt())))
    if not bool(first.any()):
        return kl
    if ddpm.prediction == "levels":
        logp = torch.log_softmax(ddpm.level_logits(x_t, t, y), -1)
        dec = logp.gather(-1, x0.long()[..., None]).squeeze(-1)
    elif ddpm.levels:
        from probgen.models.diffusion.decoder import DiscretizedGaussian

        dec = DiscretizedGaussian(p_mean, p_var.sqrt(), ddpm.levels).log_prob(x0)
    else:
        dec = Normal(p_mean, p_var.sqrt()).log_prob(x0.float())
    return torch.where(first, -_event_sum(dec), kl)


def elbo_terms(ddpm: DDPM, x0: Tensor, y: Tensor | None = None) -> Tensor:
    """Every term of the negative ELBO, ``(T + 1, N)``: row ``t - 1`` is the term of step
    ``t`` ([`term_at`][probgen.models.diffusion.elbo.term_at]; row 0 is ``L_0``), the last
    row ``L_T``. Their column sums are ``-ELBO`` per example (one ``x_t`` draw per step)."""
    rows = [term_at(ddpm, x0, torch.tensor(t), y) for t in range(1, ddpm.T + 1)]
    return torch.stack(rows + [prior_kl(ddpm, x0)])


def sampled_elbo(ddpm: DDPM, x0: Tensor, y: Tensor | None = None) -> Tensor:
    """An unbiased per-example estimate of ``-ELBO``, ``(N,)``: ``L_T + T * term_at(t)``
    with ``t ~ Uniform{1..T}`` per example (Ho et al. 2020, sec. 3.4, "sampled t")."""
    t = torch.randint(1, ddpm.T + 1, (x0.shape[0],), device=ddpm.alpha_bars.device)
    return prior_kl(ddpm, x0) + ddpm.T * term_at(ddpm, x0, t, y)


def simple_loss(ddpm: DDPM, x0: Tensor, y: Tensor | None = None) -> Tensor:
    """``L_simple`` per example, ``(N,)``: ``||target - net(x_t, t)||^2`` with
    ``t ~ Uniform{1..T}`` and the target the network's parameterisation of ``(x_0, eps)``
    (eq. 14 for ``"epsilon"``; Salimans & Ho 2022 for ``"v"``). With ``"levels"`` it is the
    cross-entropy of the level posterior at the true levels, unweighted over ``t`` (the
    categorical counterpart, Dieleman et al. 2022, CDCD, sec. 3)."""
    x = ddpm.to_model_space(x0)
    t = torch.randint(1, ddpm.T + 1, (x.shape[0],), device=x.device)
    noise = torch.randn_like(x)
    ab = ddpm.ab(t)
    x_t = q_sample(x, ab, noise)
    if ddpm.prediction == "levels":
        logp = torch.log_softmax(ddpm.level_logits(x_t, t, y), -1)
        return -_event_sum(logp.gather(-1, x0.long()[..., None]).squeeze(-1))
    target = from_x0_eps(x, noise, ddpm.prediction, x_t, ab)
    return _event_sum((ddpm.predict(x_t, t, y) - target) ** 2)


def diffusion_program(model: Any) -> DDPM:
    """The [`DDPM`][probgen.models.diffusion.ddpm.DDPM] behind ``model`` (the module or its
    bound ``model`` method, as [`fit`][probgen.infer.fit.fit] passes it)."""
    owner = model if isinstance(model, DDPM) else getattr(model, "__self__", None)
    if not isinstance(owner, DDPM):
        raise ProbgenError("model: the diffusion ELBO needs a DDPM (or its .model method), "
                           f"got {type(model).__name__}")
    return owner


class DiffusionELBO(Objective):
    """The objective of a diffusion program: its ELBO with a sampled step and closed-form
    KLs (``weighting="elbo"``), or ``L_simple`` (``"simple"``); summed over the batch.

    ``label_dropout`` replaces each label by "no label" with that probability during
    training steps, so one network learns ``p(x | y)`` and ``p(x)`` together (classifier-free
    guidance, Ho & Salimans 2022, sec. 3.2). The guide must be the model's own forward
    process (``None`` or its ``guide`` method). With ``ema`` (an
    [`EMA`][probgen.nn.ema.EMA] of the model's network) the objective owns the average: the
    engine saves and resumes it, and it is updated before every training step (so it lags
    the weights by one step).

    Examples:
        >>> DiffusionELBO("simple", label_dropout=0.1).config()
        {'name': 'diffusion_elbo', 'weighting': 'simple', 'label_dropout': 0.1, 'ema': None}
    """

    name = "diffusion_elbo"

    def __init__(self, weighting: str = "elbo", label_dropout: float = 0.0,
                 ema: EMA | None = None) -> None:
        if weighting not in ("elbo", "simple"):
            raise ProbgenError(f"weighting: 'elbo' or 'simple', got {weighting!r}")
        if not 0.0 <= label_dropout < 1.0:
            raise ProbgenError(f"label_dropout: must be in [0, 1), got {label_dropout!r}")
        self.weighting, self.label_dropout = weighting, float(label_dropout)
        self.ema = ema

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"ema": self.ema} if self.ema is not None else {}

    def before_step(self, model: Callable, guide: Callable | None, *batch: Tensor
                    ) -> dict[str, float]:
        if self.ema is not None:
            self.ema.update(diffusion_program(model).net)
        return {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "weighting": self.weighting,
                "label_dropout": self.label_dropout,
                "ema": None if self.ema is None else self.ema.decay}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        ddpm = diffusion_program(model)
        if guide is not None and getattr(guide, "__self__", None) is not ddpm:
            raise ProbgenError("guide: the diffusion ELBO's guide is the model's own forward "
                               "process (pass None or ddpm.guide)")
        if not batch or len(batch) > 2:
            raise ProbgenError(f"batch: expected (x0,) or (x0, y), got {len(batch)} tensors")
        x0 = batch[0]
        y = batch[1] if len(batch) == 2 else None
        if y is not None and self.label_dropout and torch.is_grad_enabled():
            drop = torch.rand(y.shape, device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, ddpm.num_classes), y)
        fn = sampled_elbo if self.weighting == "elbo" else simple_loss
        return fn(ddpm, x0, y).sum()
