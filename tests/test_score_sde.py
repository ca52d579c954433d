"""Score SDEs: the forward processes, the integrators, the DSM loss through fit, sampling and the
probability-flow likelihood, each against closed forms of Gaussian data."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from probgen.errors import ProbgenError
from probgen.infer.fit import fit
from probgen.models.diffusion.pf_ode import pf_ode_log_prob, pf_ode_sample
from probgen.models.diffusion.score_sde import ScoreMatchingSDE, ScoreModel
from probgen.models.diffusion.sde import VESDE, VPSDE, OrnsteinUhlenbeck, SubVPSDE
from probgen.models.diffusion.sde_sampling import (
    euler_maruyama,
    predictor_corrector_sample,
    reverse_sde_sample,
    torchsde_integrate,
)
from probgen.nn.time_embedding import TimeMLP

SIGMA = torch.tensor([[2.0, 0.8], [0.8, 0.5]], dtype=torch.float64)  # data covariance


def gaussian_score(sde, cov=SIGMA):
    """The exact score of p_t when the data are N(0, cov): -(a^2 cov + s^2 I)^{-1} x."""
    def score(x, t):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        a, s = sde.mean_coeff(t), sde.std(t)
        cov_t = a[:, None, None] ** 2 * cov.to(x) + s[:, None, None] ** 2 * torch.eye(2).to(x)
        return -torch.linalg.solve(cov_t, x[..., None])[..., 0]
    return score


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), OrnsteinUhlenbeck(2.0, 1.5)])
def test_kernel_variance_solves_its_ode(sde):
    # for an affine drift -c(t) x: d s^2/dt = -2 c s^2 + g^2 and d a / dt = -c a
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-5
    v = lambda t: sde.std(t) ** 2  # noqa: E731
    dv = (v(t + h) - v(t - h)) / (2 * h)
    da = (sde.mean_coeff(t + h) - sde.mean_coeff(t - h)) / (2 * h)
    c = -da / sde.mean_coeff(t)
    assert torch.allclose(dv, -2 * c * v(t) + sde.diffusion(t) ** 2, rtol=1e-5, atol=1e-6)
    one = torch.ones(7, 1, dtype=torch.float64)
    assert torch.allclose(sde.drift(one, t)[:, 0], -c, rtol=1e-5, atol=1e-7)


def test_euler_maruyama_and_torchsde_agree_on_an_ornstein_uhlenbeck_marginal():
    ou = OrnsteinUhlenbeck(theta=1.5, sigma=1.0)
    n, x0 = 6000, 1.0
    ts = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
    start = torch.full((n, 1), x0, dtype=torch.float64)
    torch.manual_seed(0)
    em = euler_maruyama(ou.drift, ou.diffusion, start, ts)[:, 0]
    torch.manual_seed(1)
    ts_euler = torchsde_integrate(ou.drift, ou.diffusion, start, ts, method="euler")[:, 0]
    torch.manual_seed(2)
    ts_srk = torchsde_integrate(ou.drift, ou.diffusion, start, ts, method="srk")[:, 0]
    mean = x0 * math.exp(-1.5)
    std = math.sqrt((1 - math.exp(-3.0)) / 3.0)
    for x in (em, ts_euler, ts_srk):
        assert abs(x.mean().item() - mean) < 4 * std / math.sqrt(n)
        assert abs(x.std().item() / std - 1) < 4 * math.sqrt(2 / n)
        assert stats.kstest(x.numpy(), stats.norm(mean, std).cdf).pvalue > 1e-3
    assert stats.ks_2samp(em.numpy(), ts_euler.numpy()).pvalue > 1e-3
    assert stats.ks_2samp(em.numpy(), ts_srk.numpy()).pvalue > 1e-3


def test_integrators_run_in_reverse_time():
    # the reverse-time SDE with the exact score carries p_T back to the data law N(0, SIGMA)
    sde = VPSDE()
    score = gaussian_score(sde)
    torch.manual_seed(0)
    prior = sde.prior_sample((4000, 2)).double()
    for method in ("em", "euler"):
        x = reverse_sde_sample(sde, score, prior, steps=400, method=method)
        assert torch.allclose(torch.cov(x.T), SIGMA, atol=0.12), method
    x = pf_ode_sample(sde, score, prior)
    assert torch.allclose(torch.cov(x.T), SIGMA, atol=0.12)


def test_predictor_corrector_samples_the_data_law():
    sde = VPSDE()
    torch.manual_seed(0)
    prior = sde.prior_sample((4000, 2)).double()
    x = predictor_corrector_sample(sde, gaussian_score(sde), prior, steps=100, corrector_steps=1)
    assert torch.allclose(torch.cov(x.T), SIGMA, atol=0.12)


def test_grids_must_be_monotone():
    ou = OrnsteinUhlenbeck()
    with pytest.raises(ProbgenError, match="ts"):
        euler_maruyama(ou.drift, ou.diffusion, torch.zeros(2, 1), torch.tensor([0.0, 1.0, 0.5]))


def test_pf_ode_log_likelihood_matches_the_closed_form():
    sde = VPSDE()
    torch.manual_seed(0)
    x = torch.distributions.MultivariateNormal(torch.zeros(2), SIGMA.float()).sample((8,))
    x = torch.cat([x.double(), torch.tensor([[3.0, -1.0]], dtype=torch.float64)])
    lp = pf_ode_log_prob(sde, gaussian_score(sde), x, rtol=1e-9, atol=1e-9)
    t = torch.tensor(sde.eps, dtype=torch.float64)
    cov = sde.mean_coeff(t) ** 2 * SIGMA + sde.std(t) ** 2 * torch.eye(2, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)
    assert (lp - exact.log_prob(x)).abs().max().item() < 1e-3


def test_hutchinson_agrees_with_the_exact_trace_within_its_standard_error():
    sde = VPSDE()
    score = gaussian_score(sde)
    x = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    exact = pf_ode_log_prob(sde, score, x, exact_trace=True, rtol=1e-7, atol=1e-7)
    torch.manual_seed(0)
    k = 400  # one probe per row
    for noise in ("rademacher", "gaussian"):
        est = pf_ode_log_prob(sde, score, x.expand(k, 2), exact_trace=False, noise=noise,
                              rtol=1e-7, atol=1e-7)
        se = est.std().item() / math.sqrt(k)
        assert se > 1e-3  # a real estimate with its own noise, not the exact trace again
        assert abs(est.mean().item() - exact.item()) < 3 * se, noise


def test_dsm_through_fit_learns_the_gaussian_score():
    sde = VPSDE()
    torch.manual_seed(0)
    data = torch.distributions.MultivariateNormal(torch.zeros(2), SIGMA.float()).sample((4096,))
    model = ScoreModel(TimeMLP(2, hidden=(64, 64)), sde)
    fit(model, None, data, objective=ScoreMatchingSDE(), steps=300, batch_size=256, lr=3e-3,
        progress=False)
    x = torch.randn(512, 2)
    t = torch.full((512,), 0.5)
    with torch.no_grad():
        learned = model(x, t)
    true = gaussian_score(sde, SIGMA.float())(x, t)
    assert (learned - true).norm() / true.norm() < 0.1


def test_score_matching_checks_its_model():
    with pytest.raises(ProbgenError, match="ScoreModel"):
        ScoreMatchingSDE().loss(lambda x, t: x, None, torch.zeros(2, 2))
    with pytest.raises(ProbgenError, match="weighting"):
        ScoreMatchingSDE("uniform")
