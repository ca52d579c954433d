"""Log-likelihood estimators against closed forms on a linear-Gaussian model."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from probgen.errors import ProbgenError
from probgen.infer.likelihood import elbo_nll, evaluate_nll, exact_nll, importance_nll

# z ~ N(0, 1), x | z ~ N(a z, s^2)  =>  x ~ N(0, a^2 + s^2),  z | x ~ N(a x / v, s^2 / v)
A, S = 1.5, 0.5
V = A * A + S * S


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
        pyro.sample("x", dist.Normal(A * z, S), obs=x)


def exact_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(A * x / V, (S * S / V) ** 0.5))


def poor_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.5 * A * x / V, 0.8))


def marginal(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(0.0, V**0.5), obs=x)


X = torch.randn(40, generator=torch.Generator().manual_seed(0)) * V**0.5
TRUE_NLL = float(-torch.distributions.Normal(0.0, V**0.5).log_prob(X).mean())


def test_exact_matches_closed_form_and_bits_per_dim():
    ll = exact_nll(marginal, X, batch_size=16)
    assert ll.kind == "exact" and ll.num_examples == 40 and ll.dims == 1
    assert ll.nll == pytest.approx(TRUE_NLL, rel=1e-6)
    assert ll.bits_per_dim == pytest.approx(TRUE_NLL / math.log(2), rel=1e-6)
    per = -torch.distributions.Normal(0.0, V**0.5).log_prob(X).double()
    assert ll.stderr == pytest.approx(float(per.std() / math.sqrt(40)), rel=1e-5)


def test_bits_per_dim_uses_values_per_example():
    def coin(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(0.5).expand([2, 3]).to_event(2), obs=x)

    ll = exact_nll(coin, torch.ones(5, 2, 3))
    assert ll.nll == pytest.approx(6 * math.log(2)) and ll.bits_per_dim == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 7])
def test_importance_with_the_exact_posterior_is_exact(k):
    ll = importance_nll(model, exact_guide, X, num_samples=k, batch_size=16)
    assert ll.kind == "importance" and ll.num_samples == k
    assert ll.nll == pytest.approx(TRUE_NLL, abs=1e-4)


def test_bounds_are_ordered_and_tighten_with_k():
    elbo = elbo_nll(model, poor_guide, X, num_samples=200).nll
    # E[bound_K] decreases with K: average the K = 2 bound over seeds
    iw2 = sum(importance_nll(model, poor_guide, X, 2, seed=s).nll for s in range(10)) / 10
    iw2000 = importance_nll(model, poor_guide, X, num_samples=2000).nll
    assert elbo > iw2 > iw2000 > TRUE_NLL - 0.01
    assert abs(iw2000 - TRUE_NLL) < 0.02 < elbo - TRUE_NLL


def test_elbo_matches_closed_form_kl():
    # -ELBO = NLL + KL(q || posterior), both Gaussians
    q_loc, q_scale = 0.5 * A * X / V, 0.8
    p_loc, p_scale = A * X / V, (S * S / V) ** 0.5
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(q_loc, q_scale),
                                           torch.distributions.Normal(p_loc, p_scale))
    ll = elbo_nll(model, poor_guide, X, num_samples=4000, batch_size=40)
    assert ll.nll == pytest.approx(TRUE_NLL + float(kl.mean()), abs=0.02)


def test_estimates_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = importance_nll(model, poor_guide, X, num_samples=5, seed=1)
    after = torch.rand(1)
    b = importance_nll(model, poor_guide, X, num_samples=5, seed=1)
    assert a == b and torch.equal(before, after)


def test_dispatch_and_errors():
    assert evaluate_nll(marginal, None, X).kind == "exact"
    assert evaluate_nll(model, exact_guide, X, num_samples=3).kind == "importance"
    assert evaluate_nll(model, exact_guide, X, kind="elbo").kind == "elbo"
    with pytest.raises(ProbgenError, match="latent"):
        exact_nll(model, X)
    with pytest.raises(ProbgenError, match="kind"):
        evaluate_nll(model, exact_guide, X, kind="bogus")
    with pytest.raises(ProbgenError, match="num_samples"):
        importance_nll(model, exact_guide, X, num_samples=0)
    with pytest.raises(ProbgenError, match="NaN"):
        exact_nll(marginal, torch.tensor([0.0, float("nan")]))


def test_sites_outside_the_data_plate_are_rejected():
    def global_latent(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ProbgenError, match="plate"):
        importance_nll(global_latent, guide, X, num_samples=2)
