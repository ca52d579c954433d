"""Training objectives: one protocol for every family trained by
[`probgen.infer.fit.fit`][probgen.infer.fit.fit].

The Objective protocol
----------------------
An objective is any object with

``loss(model, guide, *batch) -> Tensor``
    a differentiable scalar to *minimise* for one minibatch (summed over the batch,
    as Pyro's ELBOs do). ``guide`` may be ``None`` for objectives that need none.

and, optionally, these hooks (the base class [`Objective`][probgen.infer.objectives.Objective] gives
empty defaults):

``parameters() -> list[Tensor]``
    extra tensors the *main* optimizer trains together with the model and guide
    (e.g. the log normaliser of noise-contrastive estimation).
``modules() -> dict[str, nn.Module]``
    modules the objective owns (a discriminator, a noise model); the engine moves them
    to the device, saves and restores them with the run.
``optimizers() -> dict[str, Optimizer]``
    optimizers the objective owns and steps itself; saved and restored with the run.
``before_step(model, guide, *batch) -> dict[str, float]``
    called by the engine before each main step; an adversarial objective updates its
    discriminator here. Returned numbers are logged.
``differentiable: bool`` and ``loss_and_grads(model, guide, *batch) -> float``
    an objective with ``differentiable = False`` back-propagates itself: the engine calls
    ``loss_and_grads`` (gradients into ``.grad``, the loss returned) instead of
    ``loss(...).backward()``; Pyro's ``TraceGraph_ELBO`` and ``RenyiELBO`` work this way.

The engine multiplies the gradients for minibatch scaling and ``reduction="mean"`` (see
[`probgen.infer.scaling`][probgen.infer.scaling]).

Pyro ``ELBO`` objects are wrapped by [`PyroELBO`][probgen.infer.objectives.PyroELBO]. Strings
accepted by [`resolve_objective`][probgen.infer.objectives.resolve_objective]: ``"elbo"``,
``"elbo_kl"`` (analytic KL), ``"iwae"``, ``"likelihood"``.

Fast path. [`ELBO`][probgen.infer.objectives.ELBO], [`IWAE`][probgen.infer.objectives.IWAE] and
[`Likelihood`][probgen.infer.objectives.Likelihood] run the guide and the model under one light Pyro
handler ([`SiteRecorder`][probgen.infer.sites.SiteRecorder]) that records sampled values and
accumulates ``log_prob`` sums, instead of building full Pyro traces. That is what keeps the engine
within a few percent of a hand-written PyTorch loop.

Examples:
    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
    >>> loss = Likelihood().loss(model, None, torch.zeros(4))
    >>> round(loss.item(), 4)  # 4 * 0.5 * log(2 pi)
    3.6758
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro.infer
import torch
from torch.distributions import kl_divergence

from probgen.errors import ProbgenError
from probgen.infer.sites import (
    SiteRecorder,
    apply_mask,
    check_batch,
    find_data_plate,
    per_example_log_weights,
    require_observed,
    run_guide,
    run_model,
)

__all__ = [
    "Objective",
    "ELBO",
    "BetaELBO",
    "IWAE",
    "Likelihood",
    "PyroELBO",
    "SiteRecorder",
    "per_example_log_weights",
    "resolve_objective",
]


class Objective:
    """Base class of the objective protocol (see the module docstring); subclasses set ``loss``.

    Examples:
        >>> class Zero(Objective):
        ...     def loss(self, model, guide, *batch):
        ...         return torch.zeros((), requires_grad=True)
        >>> Zero().modules()
        {}
    """

    name: str = "objective"

    def loss(self, model: Callable, guide: Callable | None, *batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def parameters(self) -> list[torch.Tensor]:
        return []

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def before_step(
        self, model: Callable, guide: Callable | None, *batch: torch.Tensor
    ) -> dict[str, float]:
        return {}

    def config(self) -> dict[str, Any]:
        """JSON-able description stored in a run's config."""
        return {"name": self.name}


class ELBO(Objective):
    """Single- or multi-sample ELBO, optionally beta-weighted and with analytic KL terms.

    ``loss = -(log p(x|z) - beta * (log q(z|x) - log p(z)))`` summed over the batch and
    averaged over ``num_particles`` guide samples. With ``analytic_kl`` the latent terms use
    ``kl_divergence(q, p)`` per site where registered (mean-field guides), else the sample.
    Guides with non-reparameterised sites are delegated to Pyro's ``Trace_ELBO``
    (score-function gradients) when ``beta == 1``.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> loss = ELBO(analytic_kl=True).loss(model, guide, torch.tensor(0.0))
        >>> loss.shape
        torch.Size([])
    """

    name = "elbo"

    def __init__(self, num_particles: int = 1, beta: float = 1.0, analytic_kl: bool = False,
                 max_plate_nesting: int | None = None):
        if int(num_particles) != num_particles or num_particles < 1:
            raise ProbgenError(f"num_particles must be a positive integer, got {num_particles!r}")
        if not math.isfinite(beta) or beta < 0:
            raise ProbgenError(f"beta must be a finite number >= 0, got {beta!r}")
        self.num_particles = int(num_particles)
        self.beta = float(beta)
        self.analytic_kl = bool(analytic_kl)
        self.max_plate_nesting = _check_nesting(max_plate_nesting)
        self._delegate: pyro.infer.ELBO | None = None

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_particles": self.num_particles,
            "beta": self.beta,
            "analytic_kl": self.analytic_kl,
            **({} if self.max_plate_nesting is None
               else {"max_plate_nesting": self.max_plate_nesting}),
        }

    def loss(self, model: Callable, guide: Callable | None, *batch: torch.Tensor) -> torch.Tensor:
        if guide is None:
            raise ProbgenError("guide: the ELBO needs a guide; use Likelihood() for none")
        check_batch(batch)
        if self._delegate is not None:
            return self._delegated(model, guide, batch)
        total: Any = 0.0
        for _ in range(self.num_particles):
            g = run_guide(guide, batch, None, self.analytic_kl)
            if g.not_reparameterized:
                return self._fallback(g.not_reparameterized, g, g, model, guide, batch)
            m = run_model(model, batch, g.values, None, self.analytic_kl)
            unguided = [n for n in m.enumerated if n not in g.values]
            if unguided:
                return self._fallback(unguided, g, m, model, guide, batch)
            total = total + self._particle(g, m)
        if self.num_particles > 1:
            total = total / self.num_particles
        return total

    def _particle(self, g: SiteRecorder, m: SiteRecorder) -> torch.Tensor:
        kl = g.latent_log_prob - m.latent_log_prob if not self.analytic_kl else _mean_field_kl(g, m)
        if self.beta == 1.0:
            return kl - m.observed_log_prob
        return self.beta * kl - m.observed_log_prob

    def _fallback(self, sites: list[str], g: SiteRecorder, m: SiteRecorder, model: Callable,
                  guide: Callable, batch: tuple) -> torch.Tensor:
        """Hand discrete latents to Pyro: enumerated ones to ``TraceEnum_ELBO``, others to
        ``Trace_ELBO`` (score-function gradients); used from then on."""
        if self.beta != 1.0:
            raise ProbgenError(
                f"objective: sites {sites} are discrete or not reparameterised; beta-ELBO "
                "needs reparameterised guides (use PyroELBO(TraceGraph_ELBO()))"
            )
        if g.enumerated or m.enumerated:
            nesting = self.max_plate_nesting
            if nesting is None:  # every plate of the model and guide, observed sites too
                nesting = max(g.plate_nesting, m.plate_nesting)
            self._delegate = pyro.infer.TraceEnum_ELBO(
                max_plate_nesting=nesting, num_particles=self.num_particles)
        elif self.analytic_kl:
            self._delegate = pyro.infer.TraceMeanField_ELBO(num_particles=self.num_particles)
        else:
            self._delegate = pyro.infer.Trace_ELBO(num_particles=self.num_particles)
        return self._delegated(model, guide, batch)

    def _delegated(self, model: Callable, guide: Callable, batch: tuple) -> torch.Tensor:
        assert self._delegate is not None
        if torch.is_grad_enabled():
            return self._delegate.differentiable_loss(model, guide, *batch)
        return torch.tensor(self._delegate.loss(model, guide, *batch))  # e.g. validation


def _mean_field_kl(g: SiteRecorder, m: SiteRecorder) -> Any:
    """``KL(q || p)`` of the latents as Pyro's ``TraceMeanField_ELBO`` computes it: analytic
    per site where registered (scaled and masked as the guide site), else ``log q - log p``
    at the sample; the guide's auxiliary sites (an AutoGuide's joint latent) add ``log q``."""
    kl: Any = 0.0
    sampled_p: Any = 0.0
    for name in m.latent_names:
        p_fn, p_scale, p_mask, _ = m.fns[name]
        entry = g.fns.get(name)
        term = None
        if entry is not None:
            try:
                term = kl_divergence(entry[0], p_fn)
            except NotImplementedError:
                term = None
        if term is None:
            sampled_p = sampled_p + _scaled(p_fn.log_prob(m.values[name]), p_scale, p_mask)
            if entry is not None:
                kl = kl + _scaled(entry[0].log_prob(g.values[name]), entry[1], entry[2])
        else:
            kl = kl + _scaled(term, entry[1], entry[2])  # type: ignore[index]
    for name in g.latent_names:
        if name not in m.fns:  # auxiliary: in the guide only
            q_fn, q_scale, q_mask, _ = g.fns[name]
            kl = kl + _scaled(q_fn.log_prob(g.values[name]), q_scale, q_mask)
    return kl - sampled_p


def _check_nesting(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
        raise ProbgenError(f"max_plate_nesting must be an integer >= 0, got {value!r}")
    return None if value is None else int(value)


def _scaled(lp: torch.Tensor, scale: Any, mask: Any) -> torch.Tensor:
    return (apply_mask(lp, mask) * scale).sum()


class BetaELBO(ELBO):
    """The beta-weighted ELBO of beta-VAE (Higgins et al. 2017): the KL term times ``beta``.

    Examples:
        >>> BetaELBO(4.0).config()["beta"]
        4.0
    """

    name = "beta_elbo"

    def __init__(self, beta: float, num_particles: int = 1, analytic_kl: bool = False):
        super().__init__(num_particles=num_particles, beta=beta, analytic_kl=analytic_kl)


class IWAE(ELBO):
    """The importance-weighted bound (Burda et al. 2016) with ``num_samples`` samples.

    ``loss = -sum_i log (1/K) sum_k w_ik`` with ``w_ik = p(x_i, z_ik) / q(z_ik | x_i)``;
    equal to the ELBO for ``K = 1``. Needs every site inside the data plate.

    Examples:
        >>> IWAE(5).config()
        {'name': 'iwae', 'num_samples': 5, 'plate': None}
    """

    name = "iwae"

    def __init__(self, num_samples: int = 5, plate: str | None = None):
        if int(num_samples) != num_samples or num_samples < 1:
            raise ProbgenError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = int(num_samples)
        self.plate = plate
        self._plate: str | None = plate

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "num_samples": self.num_samples, "plate": self.plate}

    def loss(self, model: Callable, guide: Callable | None, *batch: torch.Tensor) -> torch.Tensor:
        if guide is None:
            raise ProbgenError("guide: IWAE needs a guide; use Likelihood() for none")
        check_batch(batch)
        if self._plate is None:
            self._plate = find_data_plate(model, guide, batch)
        logw = per_example_log_weights(model, guide, batch, self.num_samples, self._plate)
        bound = torch.logsumexp(logw, 0) - math.log(self.num_samples)
        return -bound.sum()


class Likelihood(Objective):
    """Exact negative log-likelihood of a model with no guide.

    For autoregressive models, flows and Bayesian networks: every latent site must be a
    discrete site marked ``infer={"enumerate": "parallel"}``, summed out exactly (Pyro's
    ``TraceEnum_ELBO`` with an empty guide); a model without latents is scored directly.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     pyro.sample("x", dist.Bernoulli(0.5), obs=x)
        >>> round(Likelihood().loss(model, None, torch.tensor(1.0)).item(), 4)
        0.6931
    """

    name = "likelihood"

    def __init__(self, max_plate_nesting: int | None = None):
        self.max_plate_nesting = _check_nesting(max_plate_nesting)
        # per model: its TraceEnum_ELBO once the first call found enumerated latents, or None
        # for a fully observed model; later calls skip the look at the model's sites
        self._enum: dict[int, tuple[Callable, pyro.infer.TraceEnum_ELBO | None]] = {}

    def loss(self, model: Callable, guide: Callable | None, *batch: torch.Tensor) -> torch.Tensor:
        if guide is not None:
            raise ProbgenError("guide: the exact likelihood takes no guide (pass guide=None)")
        check_batch(batch)
        cached = self._enum.get(id(model))
        if cached is not None and cached[0] is model and cached[1] is not None:
            return self._enumerated(cached[1], model, batch)
        m = run_model(model, batch, {}, None, False)
        if m.latent_names and set(m.latent_names) == set(m.enumerated):
            # discrete latents marked for enumeration are summed out exactly
            nesting = self.max_plate_nesting
            if nesting is None:  # every plate of the model, observed sites too
                nesting = max(m.plate_nesting, 1)
            elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=nesting)
            self._enum[id(model)] = (model, elbo)
            return self._enumerated(elbo, model, batch)
        require_observed(m)
        return -m.observed_log_prob

    @staticmethod
    def _enumerated(elbo: pyro.infer.TraceEnum_ELBO, model: Callable,
                    batch: tuple) -> torch.Tensor:
        if not torch.is_grad_enabled():  # e.g. the engine's parameter discovery
            return torch.tensor(elbo.loss(model, _empty_guide, *batch))
        return elbo.differentiable_loss(model, _empty_guide, *batch)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **({} if self.max_plate_nesting is None
                                      else {"max_plate_nesting": self.max_plate_nesting})}


def _empty_guide(*args: Any, **kwargs: Any) -> None:
    """The guide of a model whose latents are all enumerated: nothing to sample."""


class PyroELBO(Objective):
    """Wraps any Pyro ``ELBO`` as an objective, with the gradients Pyro's ``SVI`` takes.

    ``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO`` and ``TraceTMC_ELBO`` have a
    ``differentiable_loss`` with ``SVI``'s gradients: ``loss`` returns it. ``TraceGraph_ELBO``
    and ``RenyiELBO`` only back-propagate themselves (``loss_and_grads``, a surrogate loss with
    score-function terms and baselines), and so do the ``JitTrace*`` variants here: for them
    ``differentiable`` is ``False`` and the engine calls
    [`loss_and_grads`][probgen.infer.objectives.PyroELBO.loss_and_grads] instead of
    ``loss(...).backward()``, exactly what ``SVI.step`` does. Without gradients (parameter
    discovery, validation) every ELBO's plain ``loss`` is used. ``guide=None`` stands for an
    empty guide (a model whose latents are all enumerated).

    Examples:
        >>> PyroELBO(pyro.infer.Trace_ELBO()).config()["name"]
        'pyro:Trace_ELBO'
        >>> PyroELBO(pyro.infer.RenyiELBO()).differentiable
        False
    """

    def __init__(self, elbo: pyro.infer.ELBO):
        if not isinstance(elbo, pyro.infer.ELBO):
            raise ProbgenError(f"elbo must be a pyro.infer.ELBO, got {type(elbo).__name__}")
        self.elbo = elbo
        self.name = f"pyro:{type(elbo).__name__}"
        jit = (pyro.infer.JitTrace_ELBO, pyro.infer.JitTraceGraph_ELBO,
               pyro.infer.JitTraceEnum_ELBO, pyro.infer.JitTraceMeanField_ELBO)
        # JitTrace_ELBO.differentiable_loss differentiates loss + surrogate (twice the
        # gradient of its loss_and_grads on reparameterised sites): the JIT variants go
        # through loss_and_grads, as in SVI
        self.differentiable = (callable(getattr(elbo, "differentiable_loss", None))
                               and not isinstance(elbo, jit))

    def loss(self, model: Callable, guide: Callable | None, *batch: torch.Tensor) -> torch.Tensor:
        guide = _empty_guide if guide is None else guide
        if not torch.is_grad_enabled():
            return torch.as_tensor(float(self.elbo.loss(model, guide, *batch)))
        if not self.differentiable:
            raise ProbgenError(
                f"objective: {type(self.elbo).__name__} has no differentiable_loss; call "
                "loss_and_grads (as fit does) or loss under torch.no_grad()")
        return self.elbo.differentiable_loss(model, guide, *batch)

    def loss_and_grads(self, model: Callable, guide: Callable | None,
                       *batch: torch.Tensor) -> float:
        """Back-propagate the ELBO's surrogate loss into ``.grad``; return the loss."""
        return float(self.elbo.loss_and_grads(model, _empty_guide if guide is None else guide,
                                              *batch))


_NAMED: dict[str, Callable[[], Objective]] = {
    "elbo": ELBO,
    "elbo_kl": lambda: ELBO(analytic_kl=True),
    "iwae": IWAE,
    "likelihood": Likelihood,
}


def resolve_objective(objective: Any) -> Objective:
    """Turn a name, a Pyro ``ELBO`` or an objective object into an objective.

    Examples:
        >>> type(resolve_objective("iwae")).__name__
        'IWAE'
    """
    if isinstance(objective, str):
        if objective not in _NAMED:
            raise ProbgenError(
                f"objective: unknown name {objective!r}; choose one of {sorted(_NAMED)}"
            )
        return _NAMED[objective]()
    if isinstance(objective, pyro.infer.ELBO):
        return PyroELBO(objective)
    if callable(getattr(objective, "loss", None)):
        return objective
    raise ProbgenError(
        f"objective must be a name, a pyro ELBO or an object with .loss(), got {objective!r}"
    )
