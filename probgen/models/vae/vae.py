"""The VAE family as two Bayesian networks: generative ``z -> x``, inference ``x -> z``.

A [`VAE`][probgen.models.vae.vae.VAE] builds

- the generative graph (``graphs/vae.yaml``): ``z ~ p(z)`` (a prior module from
  [`probgen.models.vae.priors`][probgen.models.vae.priors]), ``x ~ p(x | z)`` (a decoder from
  [`probgen.models.vae.nets`][probgen.models.vae.nets], or the autoregressive one of
  [`probgen.models.vae.pixel_decoder`][probgen.models.vae.pixel_decoder]); a conditional VAE adds a
  label ``y`` as an observed parent of ``x`` (an input: given, not modelled);
- the inference graph ``x -> z`` (and ``y -> z``) whose CPD is the encoder ``q(z | x)``,

and compiles both with [`probgen.program.Program`][probgen.program.compile.Program]: ``vae.model``
and ``vae.guide`` are ordinary Pyro programs, trained by
[`probgen.infer.fit.fit`][probgen.infer.fit.fit] with the ELBO, the beta-ELBO (beta-VAE, Higgins et
al. 2017) or IWAE (Burda et al. 2016). Helpers cover reconstruction, sampling, latent interpolation,
traversals and attribute vectors.

The VAE family of the command line (``probgen train vae``: config, training, evaluation,
run folders) is in [`probgen.models.vae.train`][probgen.models.vae.train].

Examples:
    >>> import pyro
    >>> from probgen.infer.fit import fit
    >>> pyro.clear_param_store()
    >>> vae = VAE((64,), latent_dim=4, likelihood="categorical", num_levels=17, hidden=(32,))
    >>> x = torch.randint(0, 17, (32, 64))
    >>> res = fit(vae, None, x, steps=5, batch_size=16, progress=False)
    >>> vae.sample(3).shape, vae.reconstruct(x[:2]).shape
    (torch.Size([3, 64]), torch.Size([2, 64]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from probgen.errors import ProbgenError
from probgen.graph import BayesNet, NeuralCPD
from probgen.infer.objectives import ELBO, IWAE, Objective
from probgen.models.vae.nets import LIKELIHOODS, Decoder, Encoder
from probgen.models.vae.pixel_decoder import PixelDecoder
from probgen.models.vae.priors import make_prior
from probgen.program import Program

__all__ = ["VAE", "WarmupELBO", "make_objective"]


class WarmupELBO(ELBO):
    """The (beta-)ELBO with a KL warm-up: the KL weight ramps linearly from ``beta / warmup`` to
    ``beta`` over the first ``warmup`` training steps (Bowman et al. 2016; Sonderby et al. 2016),
    so that the code is in use before the KL prices it. An ``l1`` (Laplace) decoder is trained as
    a Gaussian of the same scale during the warm-up: it predicts the per-pixel *median*, which on
    sparse images (a small shape on black) stays black until the code locates the shape, so
    without a mean-seeking start it never leaves the all-black, z-ignoring optimum (measured on
    ``--data shapes``: KL 0.09 nats, all-black decodes; with the start: KL 24). Validation
    (``training()`` false) scores the full objective. The ramp counts the engine's steps
    (``before_step``): a resumed run ramps again.

    Examples:
        >>> obj = WarmupELBO(beta=4.0, warmup=10)
        >>> _ = obj.before_step(None, None); obj.weight(), obj.config()["kl_warmup"]
        (0.1, 10)
    """

    def __init__(self, num_particles: int = 1, beta: float = 1.0, warmup: int = 0,
                 training: Callable[[], bool] | None = None) -> None:
        super().__init__(num_particles=num_particles, beta=beta)
        if isinstance(warmup, bool) or int(warmup) != warmup or warmup < 0:
            raise ProbgenError(f"kl_warmup: must be an integer >= 0, got {warmup!r}")
        self.warmup, self._steps = int(warmup), 0
        self._training = training or (lambda: True)

    def weight(self) -> float:
        """The current KL weight factor in (0, 1] (1 after the warm-up)."""
        return 1.0 if not self.warmup else min(1.0, self._steps / self.warmup)

    def before_step(self, model: Callable, guide: Callable | None,
                    *batch: torch.Tensor) -> dict[str, float]:
        self._steps += 1
        return {"kl_weight": self.weight()} if self.warmup else {}

    def _particle(self, g: Any, m: Any) -> torch.Tensor:
        w = self.weight() if self._training() else 1.0
        if w == 1.0:
            return super()._particle(g, m)
        return self.beta * w * (g.latent_log_prob - m.latent_log_prob) - m.observed_log_prob

    def config(self) -> dict[str, Any]:
        return {**super().config(), "kl_warmup": self.warmup}


def make_objective(kind: str = "elbo", beta: float = 1.0, num_samples: int = 1,
                   kl_warmup: int = 0, training: Callable[[], bool] | None = None) -> Objective:
    """``"elbo"`` (``num_samples`` particles, beta-weighted KL, optionally a KL warm-up of
    ``kl_warmup`` steps: [`WarmupELBO`][probgen.models.vae.vae.WarmupELBO]) or ``"iwae"``
    (K samples).

    Examples:
        >>> make_objective("iwae", num_samples=10).config()["num_samples"]
        10
    """
    if kind == "elbo":
        if kl_warmup:
            return WarmupELBO(num_samples, beta, kl_warmup, training)
        return ELBO(num_particles=num_samples, beta=beta)
    if kind == "iwae":
        if beta != 1.0:
            raise ProbgenError("beta: IWAE has no beta weighting; use objective='elbo'")
        if kl_warmup:
            raise ProbgenError("kl_warmup: IWAE has no KL weighting; use objective='elbo'")
        return IWAE(num_samples)
    raise ProbgenError(f"objective: unknown {kind!r}; choose 'elbo' or 'iwae'")


class GivenInput:
    """The CPD module of an input node: Program reads its values and never samples it."""

    def __call__(self, *_: torch.Tensor) -> None:
        raise ProbgenError("an input node of a VAE program is given, never sampled")


def _given(node: str) -> NeuralCPD:
    return NeuralCPD(node, GivenInput())


def _image_shape(data_shape: tuple[int, ...]) -> tuple[int, int]:
    side = math.isqrt(data_shape[0]) if len(data_shape) == 1 else 0
    if len(data_shape) != 1 or side * side != data_shape[0]:
        raise ProbgenError(f"data_shape: likelihood 'pixelcnn' models flat square images "
                           f"(H*W,) of integer levels, got {data_shape}")
    return side, side


class VAE(nn.Module):
    """A variational autoencoder compiled from a generative and an inference BayesNet.

    Args:
        data_shape: shape of one example: ``(64,)`` for flat digits, ``(C, H, W)`` for images.
        latent_dim: size of z.
        likelihood: the decoder's reconstruction distribution (``"categorical"``,
            ``"bernoulli"``, ``"bce"``, ``"gaussian"``, ``"mse"``, ``"l1"``), or
            ``"pixelcnn"``: integer levels modelled autoregressively given ``z``
            ([`PixelDecoder`][probgen.models.vae.pixel_decoder.PixelDecoder]; flat square images).
        num_levels: levels of integer data (17 for digits).
        arch: ``"mlp"`` or ``"conv"`` for encoder and decoder.
        hidden: hidden widths (MLP) or base width (conv).
        prior: ``"standard"``, ``"mixture"`` or ``"vamp"``; ``num_components`` its size and
            ``prior_init`` examples in [0, 1] to start VampPrior pseudo-inputs from.
        num_classes: > 0 makes a conditional VAE ``p(x | z, y)``, ``q(z | x, y)``.
        objective: the training objective, see
            [`make_objective`][probgen.models.vae.vae.make_objective].
        beta: the KL weight (beta > 1: beta-VAE).
        num_samples: samples per example for IWAE.
        dropout: dropout in encoder and decoder.
        scale: the scale of mse / l1 (``None``: learned, see
            [`probgen.models.vae.nets`][probgen.models.vae.nets]).
        pixelcnn: settings of the ``"pixelcnn"`` decoder (``left``, ``up``, ``channels``,
            ``cond_channels``, ``layers``, ``net``).
        kl_warmup: steps of KL warm-up (see [`WarmupELBO`][probgen.models.vae.vae.WarmupELBO]).

    ``vae.model(x[, y])`` and ``vae.guide(x[, y])`` are the compiled programs; the family
    protocol of [`fit`][probgen.infer.fit.fit] (``objective``, ``data_shape``, ``sample``)
    lets ``fit(vae, None, data)`` train it (``data = (x, y)`` for a conditional VAE).
    """

    def __init__(self, data_shape: Sequence[int] = (64,), latent_dim: int = 16, *,
                 likelihood: str = "categorical", num_levels: int | None = 17,
                 arch: str = "mlp", hidden: Sequence[int] = (256, 256),
                 prior: str = "standard", num_components: int = 100,
                 prior_init: torch.Tensor | None = None, num_classes: int = 0,
                 objective: str = "elbo", beta: float = 1.0, num_samples: int = 1,
                 dropout: float = 0.0, scale: float | None = 0.1,
                 pixelcnn: dict[str, int] | None = None, kl_warmup: int = 0) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ProbgenError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if num_classes < 0:
            raise ProbgenError(f"num_classes must be >= 0, got {num_classes!r}")
        if prior == "vamp" and num_classes:
            raise ProbgenError("prior: 'vamp' is for unconditional VAEs (num_classes=0)")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim, self.num_classes, self.likelihood = latent_dim, num_classes, likelihood
        self.num_levels = num_levels
        self.config = {k: v for k, v in locals().items()
                       if k not in ("self", "prior_init", "__class__")}
        self.config["data_shape"] = list(self.data_shape)
        self.config["hidden"] = list(hidden)
        self.encoder = Encoder(self.data_shape, latent_dim, arch=arch, hidden=hidden,
                               num_levels=num_levels, num_classes=num_classes, dropout=dropout)
        if likelihood not in (*LIKELIHOODS, "pixelcnn"):
            raise ProbgenError(f"likelihood: unknown {likelihood!r}; choose one of "
                               f"{(*LIKELIHOODS, 'pixelcnn')}")
        self.decoder: nn.Module
        if likelihood == "pixelcnn":
            self.decoder = PixelDecoder(_image_shape(self.data_shape), latent_dim,
                                        num_levels=num_levels, num_classes=num_classes,
                                        hidden=hidden, dropout=dropout, **(pixelcnn or {}))
        else:
            self.decoder = Decoder(self.data_shape, latent_dim, arch=arch, hidden=hidden,
                                   likelihood=likelihood, num_levels=num_levels,
                                   num_classes=num_classes, dropout=dropout, scale=scale)
        self.prior = make_prior(prior, latent_dim, encoder=self.encoder,
                                data_shape=self.data_shape, num_components=num_components,
                                init=prior_init)
        self.objective = make_objective(objective, beta, num_samples, kl_warmup,
                                        lambda: self.training)
        if kl_warmup and likelihood == "l1":  # fit the mean first, then the median
            self.decoder.warming = lambda: self.training and self.objective.weight() < 1
        self.generative, self.inference = self._graphs()
        cond = ["y"] if num_classes else []
        # a tuple keeps the programs out of this module's state_dict: their networks are
        # already registered here as encoder / decoder / prior
        self._programs = (
            Program(self.generative, observed=["x"], inputs=cond, name="vae_model"),
            Program(self.inference, observed=[], inputs=["x", *cond], name="vae_guide"),
        )

    def _graphs(self) -> tuple[BayesNet, BayesNet]:
        discrete = self.likelihood in ("categorical", "bernoulli", "pixelcnn")
        event = len(self.data_shape)
        gen = BayesNet.load("vae")  # the z -> x skeleton of graphs/vae.yaml
        parents = ["z"]
        if self.num_classes:
            gen.add_node("y", plate="data", label="y (label)")
            gen.add_edge("y", "x")
            parents.append("y")
        if self.num_classes:
            gen.add_cpds(_given("y"))
        gen.add_cpds(NeuralCPD("z", self.prior, event_dim=1),
                     NeuralCPD("x", self.decoder, parents=parents, event_dim=event,
                               discrete=discrete))
        inf = BayesNet([("x", "z")], name="vae_guide")
        inf.add_node("z", latent=True, plate="data")
        inf.add_node("x", plate="data")
        enc_parents = ["x"]
        if self.num_classes:
            inf.add_node("y", plate="data")
            inf.add_edge("y", "z")
            enc_parents.append("y")
        inf.add_cpds(NeuralCPD("z", self.encoder, parents=enc_parents, event_dim=1),
                     *[_given(n) for n in enc_parents])
        return gen, inf

    # ------------------------------------------------------------------ Pyro programs
    def _labels(self, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if not self.num_classes:
            if y is not None:
                raise ProbgenError("y: this VAE is unconditional (num_classes=0)")
            return {}
        if y is None:
            raise ProbgenError("y: a conditional VAE needs labels y")
        return {"y": y}

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The generative program ``p(z) p(x | z[, y])`` with ``x`` observed."""
        return self._programs[0](x=x, **self._labels(y))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The inference program ``q(z | x[, y])``."""
        return self._programs[1](x=x, **self._labels(y))

    # ------------------------------------------------------------------ helpers
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior means ``E_q[z | x]``, shape ``(N, latent_dim)``."""
        return self.encoder(x.to(self._device()), y).mean

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean images ``E_p[x | z]`` (expected level for categorical data)."""
        return self.decoder.mean(z.to(self._device()), y)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``decode(encode(x))``: the mean reconstruction of each example."""
        return self.decode(self.encode(x, y), y)

    @torch.no_grad()
    def sample_latent(self, n: int) -> torch.Tensor:
        """``n`` draws of ``z`` from the prior."""
        return self.prior().sample((n,))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, mean: bool = False) -> torch.Tensor:
        """``n`` ancestral samples ``z ~ p(z), x ~ p(x | z[, y])`` from the compiled model.

        With ``mean=True`` the decoder means are returned instead of draws of x.
        """
        if mean:
            return self.decode(self.sample_latent(n), y)
        labels = self._labels(y)
        return self._programs[0](num_rows=n, **labels)["x"]

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Map data or decoder means to [0, 1] for pictures (levels / (K-1), clamped)."""
        if self.likelihood in ("categorical", "pixelcnn"):
            return (x.float() / (self.num_levels - 1)).clamp(0, 1)
        return x.float().clamp(0, 1)

    def sample_images(self, n: int) -> torch.Tensor:
        """Decoder means of ``n`` prior samples in [0, 1], shaped for a PNG grid."""
        y = torch.arange(n) % self.num_classes if self.num_classes else None
        return self.to_unit(self.sample(n, y, mean=True))

    @torch.no_grad()
    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, steps: int = 8,
                    y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``(1 - t) z1 + t z2`` for ``t`` in ``linspace(0, 1, steps)`` (one pair).

        ``x1``, ``x2`` are single examples; returns ``(steps, *data_shape)`` mean images.
        """
        z = self.encode(torch.stack([x1, x2]), None if y is None else y.expand(2))
        t = torch.linspace(0, 1, steps, device=z.device)[:, None]
        return self.decode((1 - t) * z[0] + t * z[1], None if y is None else y.expand(steps))

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dim: int, values: torch.Tensor) -> torch.Tensor:
        """Decode the code of one example ``x`` with latent ``dim`` set to each of ``values``."""
        if not 0 <= dim < self.latent_dim:
            raise ProbgenError(f"dim must be in [0, {self.latent_dim}), got {dim!r}")
        z = self.encode(x[None]).repeat(len(values), 1)
        z[:, dim] = values.to(z)
        return self.decode(z)

    @torch.no_grad()
    def attribute_vector(self, x: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        """Mean code of the examples with an attribute minus the mean code of those without.

        Adding it to a code adds the attribute (e.g. turn a cube into a sphere).
        """
        has = torch.as_tensor(has, dtype=torch.bool)
        if has.shape != (x.shape[0],) or bool(has.all()) or not bool(has.any()):
            raise ProbgenError("has: needs one boolean per example, with both values present")
        z = self.encode(x)
        return z[has.to(z.device)].mean(0) - z[~has.to(z.device)].mean(0)

    def extra_repr(self) -> str:
        return (f"data_shape={self.data_shape}, latent_dim={self.latent_dim}, "
                f"likelihood={self.likelihood!r}, prior={type(self.prior).__name__}")
