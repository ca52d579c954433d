"""The likelihood objective sums out enumerated discrete latents exactly."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from probgen import fit
from probgen.infer.objectives import Likelihood


def _mixture(x):
    w = pyro.param("w", torch.tensor(0.5), constraint=constraints.unit_interval)
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Bernoulli(w), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(torch.tensor([-2.0, 2.0])[c.long()], 1.0), obs=x)


def test_enumerated_likelihood_equals_the_closed_form_marginal():
    pyro.clear_param_store()
    x = torch.tensor([-2.5, 0.3, 1.9, 2.2])
    loss = Likelihood().loss(_mixture, None, x)
    w = 0.5
    n1, n0 = dist.Normal(2.0, 1.0), dist.Normal(-2.0, 1.0)
    exact = torch.log(w * n1.log_prob(x).exp() + (1 - w) * n0.log_prob(x).exp()).sum()
    assert torch.allclose(loss, -exact, atol=1e-5)
    loss.backward()  # differentiable in the mixing weight


def test_fit_learns_the_mixture_weight():
    torch.manual_seed(0)
    c = torch.rand(800) < 0.3
    x = torch.where(c, torch.randn(800) + 2.0, torch.randn(800) - 2.0)
    pyro.clear_param_store()
    fit(_mixture, None, x, steps=150, batch_size=400, lr=0.05, seed=0, progress=False)
    grid = torch.linspace(0.01, 0.99, 99)
    n1, n0 = dist.Normal(2.0, 1.0), dist.Normal(-2.0, 1.0)
    ll = torch.stack([torch.log(w * n1.log_prob(x).exp() + (1 - w) * n0.log_prob(x).exp()).sum()
                      for w in grid])
    assert abs(pyro.param("w").item() - grid[ll.argmax()].item()) < 0.02
