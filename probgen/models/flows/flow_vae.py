"""Flows inside a VAE: an IAF posterior (guide) and a flow prior, trained by ``fit``.

A small VAE on binarised digits (``x`` in {0, 1}^64):

    model:  z ~ p(z),  x | z ~ Bernoulli(logits = decoder(z))
    guide:  z ~ q(z | x)

with three choices for the two distributions over ``z``:

- ``guide="mean_field"``: ``q(z|x) = N(mu(x), diag sigma(x)^2)``;
- ``guide="iaf"``: the same Gaussian pushed through ``num_flows`` inverse autoregressive
  steps ``z <- mu_k(z, h) + sigma_k(z, h) * z`` conditioned on an encoder summary ``h(x)``
  (Kingma et al. 2016, eq. 10-11); Pyro's conditional affine autoregressive transform, whose
  forward pass (sampling) is one network call and whose ``log_prob`` of its own samples is
  read from the cache, so the ELBO never inverts it;
- ``prior="standard"`` (``N(0, I)``) or ``prior="flow"``: a MAF over ``z``
  ([`maf`][probgen.models.flows.flows.maf]), which scores ``z`` in one pass.

Every variant is a ``(model, guide)`` pair trained by
[`probgen.infer.fit.fit`][probgen.infer.fit.fit] with the ELBO objective;
[`compare_vae_guides`][probgen.models.flows.flow_vae.compare_vae_guides] trains several and reports
test figures.

Examples:
    >>> import torch
    >>> vae = FlowVAE(latent_dim=2, hidden=16, guide="iaf", prior="flow", num_flows=1)
    >>> vae.posterior(torch.zeros(3, 64)).rsample().shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.models.flows.flows import Flow, maf
from probgen.nn.flow_layers import Permutation

__all__ = ["FlowVAE", "GUIDES", "PRIORS", "train_flow_vae", "compare_vae_guides",
           "elbo_gain"]

GUIDES = ("mean_field", "iaf")
PRIORS = ("standard", "flow")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class FlowVAE(nn.Module):
    """A Bernoulli VAE on flat binary images whose guide and prior may be flows.

    Args:
        data_dim: pixels per image (64 for digits).
        latent_dim: size of ``z``.
        hidden: width of the encoder/decoder hidden layers (two each).
        guide: ``"mean_field"`` or ``"iaf"`` (see the module docstring).
        prior: ``"standard"`` or ``"flow"``.
        num_flows: IAF steps (guide) and MAF layers (prior).
        context_dim: size of the encoder summary ``h(x)`` that conditions the IAF steps.

    Examples:
        >>> vae = FlowVAE(latent_dim=2, hidden=8)
        >>> vae.sample(4).shape
        torch.Size([4, 64])
    """

    def __init__(self, data_dim: int = 64, latent_dim: int = 8, hidden: int = 128, *,
                 guide: str = "mean_field", prior: str = "standard", num_flows: int = 2,
                 context_dim: int = 32) -> None:
        super().__init__()
        if guide not in GUIDES:
            raise ProbgenError(f"guide must be one of {GUIDES}, got {guide!r}")
        if prior not in PRIORS:
            raise ProbgenError(f"prior must be one of {PRIORS}, got {prior!r}")
        for name, v in (("data_dim", data_dim), ("latent_dim", latent_dim), ("hidden", hidden),
                        ("num_flows", num_flows), ("context_dim", context_dim)):
            if not isinstance(v, int) or v < 1:
                raise ProbgenError(f"{name} must be a positive int, got {v!r}")
        if latent_dim < 2 and (guide == "iaf" or prior == "flow"):
            raise ProbgenError("latent_dim must be >= 2 for an IAF guide or a flow prior")
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.guide_kind, self.prior_kind = guide, prior
        self.config = {"data_dim": data_dim, "latent_dim": latent_dim, "hidden": hidden,
                       "guide": guide, "prior": prior, "num_flows": num_flows,
                       "context_dim": context_dim}
        # encoder: x -> (mu, log sigma, h)
        self.encoder = _mlp([data_dim, hidden, hidden, 2 * latent_dim + context_dim])
        self.decoder = _mlp([latent_dim, hidden, hidden, data_dim])
        self.iaf = nn.ModuleList()
        self.perms = nn.ModuleList()
        if guide == "iaf":
            for i in range(num_flows):
                self.iaf.append(T.conditional_affine_autoregressive(
                    latent_dim, context_dim, hidden_dims=[hidden, hidden]))
                if i:  # alternate the autoregressive order between steps
                    self.perms.append(Permutation(torch.arange(latent_dim - 1, -1, -1)))
        self.prior_flow: Flow | None = (
            maf(latent_dim, num_layers=num_flows, hidden=(hidden, hidden))
            if prior == "flow" else None)
        self.context_dim = context_dim

    def prior(self) -> dist.Distribution:
        """``p(z)`` with batch shape ``()`` and event shape ``(latent_dim,)``."""
        if self.prior_flow is not None:
            return self.prior_flow()
        zero = self.decoder[0].weight.new_zeros(self.latent_dim)
        return dist.Normal(zero, 1.0).to_event(1)

    def posterior(self, x: Tensor) -> dist.Distribution:
        """``q(z | x)``: batch shape ``(B,)``, event shape ``(latent_dim,)``."""
        out = self.encoder(x.to(self.decoder[0].weight.dtype))
        loc, log_scale, h = out.split([self.latent_dim, self.latent_dim, self.context_dim], -1)
        base = dist.Normal(loc, nn.functional.softplus(log_scale) + 1e-4).to_event(1)
        if self.guide_kind == "mean_field":
            return base
        steps: list[Any] = [self.iaf[0].condition(h)]
        for t, p in zip(self.iaf[1:], self.perms):
            steps += [p, t.condition(h)]
        return dist.TransformedDistribution(base, steps)

    def model(self, x: Tensor) -> None:
        pyro.module("flow_vae", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.module("flow_vae", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Pixel probabilities of ``n`` images decoded from prior samples, ``(n, data_dim)``."""
        z = self.prior().sample((n,))
        return torch.sigmoid(self.decoder(z))


def _binary_digits() -> tuple[Tensor, Tensor, Tensor]:
    from probgen.data.digits import load_digits

    return tuple(load_digits(s, "binary") for s in ("train", "val", "test"))  # type: ignore


def train_flow_vae(vae: FlowVAE, steps: int = 3000, *, batch_size: int = 100, lr: float = 1e-3,
                   seed: int = 0, patience: int = 10, val_every: int = 50,
                   eval_samples: int = 100, progress: bool = False) -> dict[str, Any]:
    """Train ``vae`` on binarised digits by ``fit`` (ELBO, early stopping on validation).

    Returns the engine's figures and the test ``test_neg_elbo`` (10 guide samples averaged)
    and ``test_nll`` (importance-sampled with ``eval_samples`` guide samples), nats/image.

    Examples:
        >>> m = train_flow_vae(FlowVAE(latent_dim=2, hidden=8), steps=5, eval_samples=2)
        >>> m["test_nll"] <= m["test_neg_elbo"] + 1.0
        True
    """
    from probgen.infer.fit import fit
    from probgen.infer.likelihood import elbo_nll, importance_nll

    x, xv, xt = _binary_digits()
    pyro.clear_param_store()
    res = fit(vae, None, x, objective="elbo", steps=steps, batch_size=batch_size, lr=lr,
              seed=seed, progress=progress, val_data=xv, val_every=val_every,
              patience=patience, log_every=val_every)
    vae.eval()
    with torch.no_grad():
        elbo = elbo_nll(vae.model, vae.guide, xt, num_samples=10, batch_size=512, seed=seed)
        iw = importance_nll(vae.model, vae.guide, xt, eval_samples, batch_size=512, seed=seed)
    return {**res.final, "test_neg_elbo": elbo.nll, "test_neg_elbo_stderr": elbo.stderr,
            "test_nll": iw.nll, "nll_kind": f"importance (K={eval_samples})",
            "test_bpd": iw.bits_per_dim}


def compare_vae_guides(variants: tuple[str, ...] = ("mean_field", "iaf", "iaf+flow_prior"),
                       steps: int = 3000, *, latent_dim: int = 8, hidden: int = 128,
                       num_flows: int = 2, seed: int = 0, eval_samples: int = 100,
                       fast: bool = False, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Train the same VAE with different guides/priors on binarised digits; test figures.

    Variants: ``"mean_field"``, ``"iaf"`` (IAF guide) and ``"<guide>+flow_prior"`` (a MAF
    prior). Every variant starts from the same seed and stops early on its validation ELBO.
    Returns ``{variant: metrics}``, each with ``test_neg_elbo`` (lower is better; the ELBO
    gain of a guide is the drop of this number) and ``test_nll`` (importance-sampled).

    Examples:
        >>> r = compare_vae_guides(("mean_field", "iaf"), fast=True)
        >>> sorted(r), "test_neg_elbo" in r["iaf"]
        (['iaf', 'mean_field'], True)
    """
    if fast:
        steps, hidden, eval_samples = min(steps, 20), min(hidden, 16), min(eval_samples, 4)
    results: dict[str, dict[str, Any]] = {}
    for v in variants:
        guide, _, prior = v.partition("+")
        if guide not in GUIDES or prior not in ("", "flow_prior"):
            raise ProbgenError(f"variants: unknown {v!r}; use a guide {GUIDES} optionally "
                               "followed by '+flow_prior'")
        torch.manual_seed(seed)
        vae = FlowVAE(64, latent_dim, hidden, guide=guide,
                      prior="flow" if prior else "standard", num_flows=num_flows)
        m = train_flow_vae(vae, steps, seed=seed, eval_samples=eval_samples,
                           val_every=10 if fast else 50, progress=progress)
        m["num_params"] = sum(p.numel() for p in vae.parameters())
        results[v] = m
    return results


def elbo_gain(results: dict[str, dict[str, Any]], base: str = "mean_field") -> dict[str, float]:
    """Test-ELBO gain in nats/image of each variant of
    [`compare_vae_guides`][probgen.models.flows.flow_vae.compare_vae_guides] over ``base``
    (positive: a higher ELBO than ``base``).

    Examples:
        >>> elbo_gain({"mean_field": {"test_neg_elbo": 40.0}, "iaf": {"test_neg_elbo": 38.5}})
        {'mean_field': 0.0, 'iaf': 1.5}
    """
    if base not in results:
        raise ProbgenError(f"base: {base!r} is not among the results {sorted(results)}")
    ref = results[base]["test_neg_elbo"]
    return {k: ref - v["test_neg_elbo"] for k, v in results.items()}
