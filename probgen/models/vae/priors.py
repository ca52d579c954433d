"""Priors ``p(z)`` for the VAE family: modules whose ``forward()`` returns a distribution.

A prior is the CPD of the root node ``z`` of the generative graph, so it is a
[`NeuralCPD`][probgen.graph.cpd.NeuralCPD] module with no parents. Three ship:

- [`StandardPrior`][probgen.models.vae.priors.StandardPrior] — ``N(0, I)``, the VAE of Kingma &
  Welling (2014);
- [`MixturePrior`][probgen.models.vae.priors.MixturePrior] — a learnable mixture of K diagonal
  Gaussians;
- [`VampPrior`][probgen.models.vae.priors.VampPrior] — the "variational mixture of posteriors" of
  Tomczak & Welling (2018): ``p(z) = 1/K sum_k q(z | u_k)`` with K learnable pseudo-inputs ``u_k``
  that go through the VAE's own encoder. It ties the prior to the aggregate posterior.

A flow prior is a transform of [`StandardPrior`][probgen.models.vae.priors.StandardPrior] (see
``probgen.models.flows.flows``).

Examples:
    >>> p = MixturePrior(latent_dim=2, num_components=3)
    >>> d = p()
    >>> d.event_shape, d.log_prob(torch.zeros(5, 2)).shape
    (torch.Size([2]), torch.Size([5]))
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from probgen.errors import ProbgenError

__all__ = ["StandardPrior", "MixturePrior", "VampPrior", "make_prior"]


def _check_dim(latent_dim: int) -> int:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ProbgenError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    return latent_dim


class StandardPrior(nn.Module):
    """``p(z) = N(0, I)`` over ``latent_dim`` dimensions (no parameters).

    Examples:
        >>> round(StandardPrior(3)().log_prob(torch.zeros(3)).item(), 4)  # -1.5 log(2 pi)
        -2.7568
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = _check_dim(latent_dim)
        self.register_buffer("zero", torch.zeros(latent_dim), persistent=False)

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.zero, torch.ones_like(self.zero)).to_event(1)


class MixturePrior(nn.Module):
    """``p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2))`` with learnable pi, mu, sigma.

    Examples:
        >>> MixturePrior(4, 10)().sample((7,)).shape
        torch.Size([7, 4])
    """

    def __init__(self, latent_dim: int, num_components: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.latent_dim = _check_dim(latent_dim)
        if num_components < 1:
            raise ProbgenError(f"num_components must be >= 1, got {num_components!r}")
        gen = torch.Generator().manual_seed(seed)
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim, generator=gen))
        self.raw_scale = nn.Parameter(torch.zeros(num_components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def forward(self) -> dist.Distribution:
        comp = dist.Normal(self.loc, F.softplus(self.raw_scale) + 1e-4).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), comp)


class VampPrior(nn.Module):
    """``p(z) = 1/K sum_k q(z | u_k)``: the encoder applied to K learnable pseudo-inputs.

    Args:
        encoder: the VAE's encoder (shared, not copied); ``encoder(u)`` returns a
            ``Normal(...).to_event(1)`` over z.
        data_shape: shape of one pseudo-input (that of one example).
        num_components: K.
        init: optional examples ``(M, *data_shape)`` in [0, 1] to start the pseudo-inputs
            from (K drawn at random, slightly shrunk towards 0.5), else uniform noise.

    Pseudo-inputs live in [0, 1] (a sigmoid of free parameters), the encoder's input scale.

    Examples:
        >>> from probgen.models.vae.nets import Encoder
        >>> enc = Encoder((4,), 2, hidden=(8,))
        >>> VampPrior(enc, (4,), 5)().log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, encoder: Callable[[torch.Tensor], dist.Distribution],
                 data_shape: tuple[int, ...], num_components: int = 100,
                 init: torch.Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        if num_components < 1:
            raise ProbgenError(f"num_components must be >= 1, got {num_components!r}")
        gen = torch.Generator().manual_seed(seed)
        if init is None:
            u = 0.25 + 0.5 * torch.rand(num_components, *data_shape, generator=gen)
        else:
            init = torch.as_tensor(init, dtype=torch.float32)
            if tuple(init.shape[1:]) != tuple(data_shape):
                raise ProbgenError(f"init: examples have shape {tuple(init.shape[1:])}, "
                                   f"expected {tuple(data_shape)}")
            idx = torch.randint(0, init.shape[0], (num_components,), generator=gen)
            u = 0.05 + 0.9 * init[idx].clamp(0, 1)
        self.pseudo = nn.Parameter(torch.logit(u))
        # a plain attribute would register the encoder twice in state_dict; keep a reference
        self._encoder = [encoder]

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs ``(K, *data_shape)`` in [0, 1]."""
        return torch.sigmoid(self.pseudo)

    def forward(self) -> dist.Distribution:
        q = self._encoder[0](self.pseudo_inputs)  # batch (K,), event (D,)
        base = q.base_dist if isinstance(q, dist.Independent) else q
        comp = dist.Normal(base.loc, base.scale).to_event(1)
        k = self.pseudo.shape[0]
        mix = dist.Categorical(logits=torch.zeros(k, device=self.pseudo.device))
        return dist.MixtureSameFamily(mix, comp)


def make_prior(kind: str, latent_dim: int, *, encoder: Callable | None = None,
               data_shape: tuple[int, ...] | None = None, num_components: int = 100,
               init: torch.Tensor | None = None) -> nn.Module:
    """Build a prior by name: ``"standard"``, ``"mixture"`` or ``"vamp"``.

    Examples:
        >>> type(make_prior("mixture", 2, num_components=3)).__name__
        'MixturePrior'
    """
    if kind == "standard":
        return StandardPrior(latent_dim)
    if kind == "mixture":
        return MixturePrior(latent_dim, num_components)
    if kind == "vamp":
        if encoder is None or data_shape is None:
            raise ProbgenError("prior: 'vamp' needs the encoder and the data_shape")
        return VampPrior(encoder, data_shape, num_components, init)
    raise ProbgenError(f"prior: unknown {kind!r}; choose 'standard', 'mixture' or 'vamp'")

