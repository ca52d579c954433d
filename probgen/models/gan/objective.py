"""The adversarial objective: a discriminator it owns trains the implicit program.

An implicit model has no density, so [`Adversarial`][probgen.models.gan.objective.Adversarial]
trains it through the engine's objective protocol
(see [`probgen.infer.objectives`][probgen.infer.objectives]):

- ``before_step`` updates the discriminator ``D`` (``n_critic`` steps of its own optimizer) on the
  batch's real examples against fresh fakes;
- ``loss`` is the generator's loss on new fakes (summed over the batch), which the engine's main
  optimizer minimises;
- ``modules()`` returns ``D`` (and the EMA copy of the generator), ``optimizers()`` the
  discriminator's optimizer, so a run folder saves, restores and resumes both players exactly.

Fakes are read from a trace of the model: the value of its sample site ``site`` (``"x"``), drawn
for the batch's rows; extra tensors of the batch (labels ``y``, or the source image of pix2pix)
are passed to the model and, as its condition, to ``D(x, *cond)``. ``D``'s parameters are frozen
(``requires_grad=False``) outside its own update, so the generator's loss puts no gradient in them
and the engine, which trains the parameters that require gradients, never steps them.

Losses (``loss=``; ``l`` is ``D``'s score, a logit for the first three):

=========== ================================================ ===============================
name        discriminator minimises                           generator minimises
=========== ================================================ ===============================
``ns``      ``softplus(-l_real) + softplus(l_fake)``          ``softplus(-l_fake)``
``minimax`` the same                                          ``-softplus(l_fake)``
``hinge``   ``relu(1 - l_real) + relu(1 + l_fake)``           ``-l_fake``
``lsgan``   ``(l_real - 1)^2 / 2 + l_fake^2 / 2``             ``(l_fake - 1)^2 / 2``
``wgan_gp`` ``l_fake - l_real + gp (|grad l(x_hat)| - 1)^2``  ``-l_fake``
=========== ================================================ ===============================

``ns`` and ``minimax`` are Goodfellow et al. (2014): minimax is the game's value
``log(1 - D(G(z)))`` itself, whose gradient vanishes while ``D`` rejects the fakes confidently
(it saturates); the non-saturating loss ``-log D(G(z))`` has the same fixed point and strong
gradients there (sec. 3). Hinge: Lim & Ye (2017), Miyato et al. (2018). Least squares: Mao et al.
(2017, eq. 2 with a=0, b=c=1). WGAN-GP: Gulrajani et al. (2017, eq. 3; ``x_hat`` on random
segments between real and fake, ``n_critic = 5``, ``gp = 10``). Stabilisers, each an option:
``r1`` the R1 penalty ``r1/2 * |grad l(x_real)|^2`` (Mescheder et al. 2018, eq. 9);
``instance_noise`` Gaussian noise on both players' inputs to ``D`` (Sønderby et al. 2017; it
also hides the lattice of quantised data such as the 17-level digits); ``ema`` an exponential
moving average of the generator's weights used for sampling (Yazici et al. 2019), updated at the
start of every step (so it averages the generator after steps ``0..s-1``) with the warm-up of
TensorFlow's ``ExponentialMovingAverage`` (decay ``min(ema, (1 + n) / (10 + n))`` after ``n``
updates, so a short run is not dominated by the initial weights); ``lr`` / ``betas`` of
``D`` apart from the generator's: the two time-scale update rule (TTUR; Heusel et al. 2017).
Spectral normalisation is a property of the network
([`spectral_norm`][probgen.nn.dcgan.spectral_norm]). pix2pix adds ``l1 * mean |G(a) - b|``, the
mean absolute error per pixel (Isola et al. 2017, eq. 4, where lambda = 100 assumes that scale;
a patch discriminator's per-example term is likewise its mean over the patches); under
``torch.no_grad`` (the engine's validation) the loss is then
that L1 term alone, since the adversarial term scores against a moving ``D``.

Examples:
    >>> import pyro, pyro.distributions as dist
    >>> from torch import nn
    >>> G, D = nn.Linear(2, 2), nn.Linear(2, 1)
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    ...         pyro.deterministic("x", G(z), event_dim=1)
    >>> obj = Adversarial(lambda x: D(x).squeeze(-1), loss="hinge")
    Traceback (most recent call last):
    ...
    probgen.errors.ProbgenError: discriminator: expected a torch.nn.Module, got function
    >>> obj = Adversarial(nn.Sequential(D, nn.Flatten(0)), loss="hinge")
    >>> logs = obj.before_step(model, None, torch.randn(8, 2))
    >>> sorted(logs), obj.loss(model, None, torch.randn(8, 2)).shape
    (['d_fake', 'd_loss', 'd_real'], torch.Size([]))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.infer.objectives import Objective

__all__ = ["Adversarial", "LOSSES", "generated", "discriminator_loss", "generator_loss",
           "gradient_penalty", "r1_penalty", "update_ema", "ema_copy"]

#: the adversarial losses of [`Adversarial`][probgen.models.gan.objective.Adversarial]
LOSSES = ("ns", "minimax", "hinge", "lsgan", "wgan_gp")


def discriminator_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """Mean discriminator loss of scores ``real`` (B,) and ``fake`` (B,) (table above, no
    penalty).

    Examples:
        >>> round(discriminator_loss("ns", torch.zeros(3), torch.zeros(3)).item(), 4)  # 2 log 2
        1.3863
    """
    if kind in ("ns", "minimax"):
        return (F.softplus(-real) + F.softplus(fake)).mean()
    if kind == "hinge":
        return (F.relu(1 - real) + F.relu(1 + fake)).mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2) + fake.pow(2)).mean()
    if kind == "wgan_gp":
        return (fake - real).mean()
    raise ProbgenError(f"loss: unknown {kind!r}; choose one of {', '.join(LOSSES)}")


def generator_loss(kind: str, fake: Tensor) -> Tensor:
    """Per-example generator loss of the scores ``fake`` (B,) (table above).

    Examples:
        >>> generator_loss("minimax", torch.tensor([-20.0])).abs().item() < 1e-8  # saturated
        True
    """
    if kind == "ns":
        return F.softplus(-fake)
    if kind == "minimax":
        return -F.softplus(fake)
    if kind in ("hinge", "wgan_gp"):
        return -fake
    if kind == "lsgan":
        return 0.5 * (fake - 1).pow(2)
    raise ProbgenError(f"loss: unknown {kind!r}; choose one of {', '.join(LOSSES)}")


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP's ``E (|grad critic(x_hat)|_2 - 1)^2`` at ``x_hat = e real + (1 - e) fake``,
    ``e ~ U(0, 1)`` per example (Gulrajani et al. 2017, eq. 3).

    Examples:
        >>> w = torch.tensor([3.0, 4.0])
        >>> gradient_penalty(lambda x: x @ w, torch.zeros(5, 2), torch.ones(5, 2)).item()  # (5-1)^2
        16.0
    """
    e = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device)
    x_hat = (e * real + (1 - e) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """``E |grad critic(x_real)|^2`` (Mescheder et al. 2018, eq. 9 without the 1/2 * gamma).

    Examples:
        >>> r1_penalty(lambda x: (x ** 2).sum(1), torch.ones(4, 3)).item()  # |2x|^2
        12.0
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()


@torch.no_grad()
def update_ema(ema: nn.Module, source: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * source`` for parameters; buffers copied by name.

    Examples:
        >>> a, b = nn.Linear(1, 1), nn.Linear(1, 1)
        >>> update_ema(a, b, 0.0); torch.equal(a.weight, b.weight)
        True
    """
    for pe, ps in zip(ema.parameters(), source.parameters()):
        pe.lerp_(ps.detach(), 1.0 - decay)
    mine = dict(ema.named_buffers())
    for name, b in source.named_buffers():
        mine[name].copy_(b)


def ema_copy(generator: nn.Module) -> nn.Module:
    """A frozen copy of ``generator`` with an ``ema_updates`` counter (saved with its state).

    Examples:
        >>> int(ema_copy(nn.Linear(1, 1)).ema_updates)
        0
    """
    ema = copy.deepcopy(generator).requires_grad_(False)
    ema.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
    return ema


def generated(model: Callable, batch: Sequence[Tensor], site: str = "x") -> Tensor:
    """The value of sample site ``site`` in one run of ``model(*batch)``: the fakes.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     pyro.deterministic("x", 2 * x)
        >>> generated(model, (torch.ones(2),)).tolist()
        [2.0, 2.0]
    """
    tr = poutine.trace(model).get_trace(*batch)
    if site not in tr.nodes:
        raise ProbgenError(f"site: the model has no sample site {site!r} (sites: "
                           f"{[n for n, s in tr.nodes.items() if s['type'] == 'sample']})")
    return tr.nodes[site]["value"]


def _positive(name: str, value: float, allow_zero: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ProbgenError(f"{name}: must be a finite number {'>=' if allow_zero else '>'} 0, "
                           f"got {value!r}")
    return float(value)


class Adversarial(Objective):
    """A GAN objective owning its discriminator and the discriminator's optimizer.

    Args:
        discriminator: ``D(x, *cond) -> (B,)`` scores, an ``nn.Module``.
        loss: one of ``LOSSES`` (module docstring).
        lr: the discriminator's Adam learning rate (TTUR: set it apart from the generator's).
        betas: the discriminator's Adam betas (DCGAN (0.5, 0.999); WGAN-GP (0.0, 0.9)).
        n_critic: discriminator steps per generator step (default 5 for ``wgan_gp``, else 1).
        gp: gradient-penalty weight of ``wgan_gp`` (default 10; 0 is not allowed there).
        r1: R1 penalty weight ``gamma`` (0: off).
        instance_noise: std of Gaussian noise added to every input of ``D`` (0: off).
        l1: weight of ``|fake - real|_1`` in the generator's loss (pix2pix's lambda; 0: off).
        adversarial: ``False`` drops the adversarial term (L1-only training; needs ``l1``).
        generator: the generator module, needed for ``ema``.
        ema: decay of the generator's EMA copy (0: off; e.g. 0.999).
        site: the model's sample site holding the generated examples.
        augment: a random transformation of a training batch (e.g. pix2pix's paired jitter,
            [`paired_augment`][probgen.data.paired.paired_augment]); drawn once per step in
            ``before_step`` and used by both players' updates of that step (not in validation).

    Examples:
        >>> from torch import nn
        >>> obj = Adversarial(nn.Linear(2, 1), loss="wgan_gp")
        >>> obj.n_critic, obj.gp, sorted(obj.modules()), sorted(obj.optimizers())
        (5, 10.0, ['discriminator'], ['discriminator'])
    """

    name = "adversarial"

    def __init__(self, discriminator: nn.Module, loss: str = "ns", *, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), n_critic: int | None = None,
                 gp: float | None = None, r1: float = 0.0, instance_noise: float = 0.0,
                 l1: float = 0.0, adversarial: bool = True, generator: nn.Module | None = None,
                 ema: float = 0.0, site: str = "x",
                 augment: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] | None = None
                 ) -> None:
        if not isinstance(discriminator, nn.Module):
            raise ProbgenError(f"discriminator: expected a torch.nn.Module, got "
                               f"{type(discriminator).__name__}")
        if loss not in LOSSES:
            raise ProbgenError(f"loss: unknown {loss!r}; choose one of {', '.join(LOSSES)}")
        wgan = loss == "wgan_gp"
        n_critic = (5 if wgan else 1) if n_critic is None else n_critic
        if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
            raise ProbgenError(f"n_critic: must be a positive integer, got {n_critic!r}")
        self.gp = _positive("gp", (10.0 if wgan else 0.0) if gp is None else gp, not wgan)
        if self.gp and not wgan:
            raise ProbgenError(f"gp: the gradient penalty belongs to loss 'wgan_gp', not {loss!r}"
                               " (use r1 for a penalty on other losses)")
        self.r1 = _positive("r1", r1)
        self.instance_noise = _positive("instance_noise", instance_noise)
        self.l1 = _positive("l1", l1)
        if not adversarial and not self.l1:
            raise ProbgenError("adversarial: without the adversarial term the loss needs l1 > 0")
        if not 0.0 <= ema < 1.0:
            raise ProbgenError(f"ema: the decay must be in [0, 1), got {ema!r}")
        if ema and generator is None:
            raise ProbgenError("generator: an EMA copy (ema > 0) needs the generator module")
        self.kind, self.n_critic, self.adversarial = loss, n_critic, bool(adversarial)
        self.lr, self.betas, self.site, self.decay = float(lr), tuple(betas), site, float(ema)
        self.discriminator = discriminator.requires_grad_(False)  # see the module docstring
        self.optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=self.betas)
        self.generator, self.augment = generator, augment
        self._augmented: tuple[Tensor, ...] | None = None
        self.ema = None
        if ema:
            self.ema = ema_copy(generator)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.kind, "lr": self.lr, "betas": list(self.betas),
                "n_critic": self.n_critic, "gp": self.gp, "r1": self.r1,
                "instance_noise": self.instance_noise, "l1": self.l1,
                "adversarial": self.adversarial, "ema": self.decay, "site": self.site,
                "augment": getattr(self.augment, "__name__", type(self.augment).__name__)
                if self.augment is not None else None}

    def modules(self) -> dict[str, nn.Module]:
        out = {"discriminator": self.discriminator}
        if self.ema is not None:
            out["ema"] = self.ema
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"discriminator": self.optimizer}

    def _score(self, x: Tensor, cond: tuple[Tensor, ...]) -> Tensor:
        if self.instance_noise:
            x = x + self.instance_noise * torch.randn_like(x)
        return self.discriminator(x, *cond)

    def before_step(self, model: Callable, guide: Callable | None, *batch: Tensor
                    ) -> dict[str, float]:
        """Update the EMA copy, then take ``n_critic`` steps of the discriminator."""
        if self.ema is not None:  # warm-up: decay min(d, (1 + n) / (10 + n)) after n updates
            n = int(self.ema.ema_updates)
            update_ema(self.ema, self.generator, min(self.decay, (1 + n) / (10 + n)))
            self.ema.ema_updates += 1
        if self.augment is not None:
            batch = self._augmented = tuple(self.augment(tuple(batch)))
        if not self.adversarial:
            return {}
        real, cond = batch[0], tuple(batch[1:])
        self.discriminator.requires_grad_(True)
        try:
            for _ in range(self.n_critic):
                with torch.no_grad():
                    fake = generated(model, batch, self.site)
                s_real, s_fake = self._score(real, cond), self._score(fake, cond)
                d_loss = discriminator_loss(self.kind, s_real, s_fake)
                total = d_loss
                if self.gp:
                    total = total + self.gp * gradient_penalty(
                        lambda x: self._score(x, cond), real, fake)
                if self.r1:
                    total = total + 0.5 * self.r1 * r1_penalty(
                        lambda x: self._score(x, cond), real)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.discriminator.requires_grad_(False)
        return {"d_loss": d_loss.item(), "d_real": float(s_real.detach().mean()),
                "d_fake": float(s_fake.detach().mean())}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        """The generator's loss on fresh fakes, summed over the batch (plus ``l1``)."""
        if self._augmented is not None and torch.is_grad_enabled():
            batch, self._augmented = self._augmented, None  # this step's draw
        fake = generated(model, batch, self.site)
        real, cond = batch[0], tuple(batch[1:])
        l1 = (fake - real).abs().flatten(1).mean(1) if self.l1 else None  # per example
        if l1 is not None and (not torch.is_grad_enabled() or not self.adversarial):
            return self.l1 * l1.sum()
        g = generator_loss(self.kind, self._score(fake, cond))
        g = g.flatten(1).mean(1) if g.dim() > 1 else g  # a PatchGAN: mean over the patches
        return g.sum() if l1 is None else (g + self.l1 * l1).sum()
