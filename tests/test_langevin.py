"""Langevin samplers and HMC/NUTS on an energy, checked against closed-form Gaussians."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.errors import ProbgenError
from probgen.infer.hmc import energy_mcmc
from probgen.infer.langevin import (
    annealed_langevin,
    energy_score,
    geometric_sigmas,
    langevin,
    langevin_step,
    langevin_trajectory,
    mala,
    parallel_tempering,
    tempering_betas,
)

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
PREC = torch.linalg.inv(COV)


def gauss_energy(x: torch.Tensor) -> torch.Tensor:
    d = x - MEAN
    return 0.5 * ((d @ PREC) * d).sum(-1)


def test_energy_score_is_minus_gradient():
    x = torch.randn(6, 2)
    expected = -(x - MEAN) @ PREC
    assert torch.allclose(energy_score(gauss_energy)(x), expected, atol=1e-6)


def test_langevin_step_closed_form_with_fixed_noise():
    x = torch.randn(4, 2)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = langevin_step(energy_score(gauss_energy), x, 0.2, generator=g1)
    z = torch.randn(x.shape, generator=g2)
    expected = x - 0.2 * (x - MEAN) @ PREC + math.sqrt(0.4) * z
    assert torch.allclose(out, expected, atol=1e-6)


def test_ula_matches_its_exact_stationary_law():
    # ULA on N(0, 1) with step eps is the AR(1) x' = (1 - eps) x + sqrt(2 eps) z,
    # stationary variance 2 eps / (1 - (1 - eps)^2) = 1 / (1 - eps / 2)
    eps = 0.2
    x = langevin(lambda x: -x, torch.zeros(20000, 1), eps, 150,
                 generator=torch.Generator().manual_seed(0))
    assert abs(x.var().item() - 1 / (1 - eps / 2)) < 0.04
    assert abs(x.mean().item()) < 0.03


def test_mala_targets_the_gaussian_exactly():
    res = mala(gauss_energy, torch.zeros(4000, 2), 0.05, 300,
               generator=torch.Generator().manual_seed(0))
    assert 0.3 < res.acceptance_rate < 1.0
    assert res.chain_acceptance.shape == (4000,)
    x = res.samples
    assert torch.allclose(x.mean(0), MEAN, atol=0.06)
    assert torch.allclose(torch.cov(x.T), COV, atol=0.06)


# two well-separated Gaussians (sd 0.5, centres 8 apart): weights 0.3 / 0.7
MODES = torch.tensor([[-4.0, 0.0], [4.0, 0.0]])
LOG_W = torch.tensor([0.3, 0.7]).log()


def mixture_energy(x: torch.Tensor) -> torch.Tensor:
    d2 = ((x.unsqueeze(1) - MODES) ** 2).sum(-1)  # (N, 2)
    return -torch.logsumexp(LOG_W - d2 / (2 * 0.25), dim=1)


def test_parallel_tempering_finds_the_mode_weights_mala_does_not():
    start = MODES[0].expand(1000, 2).clone()  # every chain starts in the light mode
    plain = mala(mixture_energy, start, 0.2, 400, generator=torch.Generator().manual_seed(0))
    assert (plain.samples[:, 0] < 0).float().mean() > 0.95  # stuck: 1.0 against 0.3
    res = parallel_tempering(mixture_energy, start, tempering_betas(0.01, 8), 0.2, 400,
                             generator=torch.Generator().manual_seed(0))
    x = res.samples
    assert x.shape == (1000, 2)
    assert abs(float((x[:, 0] < 0).float().mean()) - 0.3) < 0.05
    heavy = x[x[:, 0] > 0]
    assert torch.allclose(heavy.mean(0), MODES[1], atol=0.06)
    assert torch.allclose(heavy.std(0), torch.tensor([0.5, 0.5]), atol=0.05)
    assert res.acceptance.shape == (8,) and res.swap_acceptance.shape == (7,)
    assert (res.swap_acceptance > 0.2).all() and (res.acceptance > 0.3).all()


def test_parallel_tempering_one_level_is_mala_on_the_gaussian():
    res = parallel_tempering(gauss_energy, torch.zeros(4000, 2), [1.0], 0.05, 300,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(res.samples.mean(0), MEAN, atol=0.06)
    assert torch.allclose(torch.cov(res.samples.T), COV, atol=0.06)


def test_annealed_langevin_on_blurred_gaussians():
    # data N(MEAN, COV); noised by sigma: N(MEAN, COV + sigma^2 I), score closed form
    def score(x, sigma):
        cov = COV + sigma[:, None, None] ** 2 * torch.eye(2)
        return -torch.linalg.solve(cov, (x - MEAN).unsqueeze(-1)).squeeze(-1)

    sig = geometric_sigmas(3.0, 0.1, 5)
    x = annealed_langevin(score, 3 * torch.randn(4000, 2), sig, 0.01, 300,
                          generator=torch.Generator().manual_seed(1))
    assert torch.allclose(x.mean(0), MEAN, atol=0.08)
    assert torch.allclose(torch.cov(x.T), COV + 0.1 ** 2 * torch.eye(2), atol=0.08)


def test_trajectory_shape_and_start():
    x0 = torch.randn(3, 2)
    path = langevin_trajectory(lambda x: -x, x0, 0.1, 5)
    assert path.shape == (6, 3, 2) and torch.equal(path[0], x0)


@pytest.mark.parametrize("call", [
    lambda: langevin(lambda x: -x, torch.zeros(2, 2), -0.1, 3),
    lambda: langevin_step(lambda x: -x, torch.zeros(2, 2), 0.0),
    lambda: langevin_step(lambda x, s: -x, torch.zeros(2, 2), 0.1, sigma=-1.0),
    lambda: mala(gauss_energy, torch.zeros(2, 2), float("nan"), 3),
    lambda: annealed_langevin(lambda x, s: -x, torch.zeros(2, 2), [1.0, -0.5], 0.1, 2),
    lambda: annealed_langevin(lambda x, s: -x, torch.zeros(2, 2), [0.1, 1.0], 0.1, 2),
    lambda: geometric_sigmas(1.0, -0.1, 4),
    lambda: langevin(lambda x: -x, torch.tensor([[float("nan"), 0.0]]), 0.1, 3),
    lambda: langevin(lambda x: -x[:, :1], torch.zeros(2, 2), 0.1, 3),
    lambda: energy_mcmc(gauss_energy, torch.zeros(2, 2), step_size=-1.0),
    lambda: parallel_tempering(gauss_energy, torch.zeros(2, 2), [0.5, 0.1], 0.1, 3),
    lambda: parallel_tempering(gauss_energy, torch.zeros(2, 2), [1.0, -0.1], 0.1, 3),
    lambda: tempering_betas(2.0, 4),
    lambda: tempering_betas(0.1, 0),
])
def test_bad_arguments_one_line_error(call):
    with pytest.raises(ProbgenError) as info:
        call()
    assert "\n" not in str(info.value)


def test_nuts_on_energy_rhat_and_moments():
    az = pytest.importorskip("arviz")
    init = torch.tensor([[4.0, 2.0], [-3.0, -5.0], [3.0, -6.0], [-2.0, 1.0]])
    idata = energy_mcmc(gauss_energy, init, num_samples=150, warmup_steps=100,
                        max_tree_depth=5, seed=0)
    assert idata.posterior["x"].shape == (4, 150, 2)
    rhat = az.rhat(idata)["x"].values
    assert (rhat < 1.05).all(), rhat
    assert (az.ess(idata)["x"].values > 100).all()
    x = torch.as_tensor(idata.posterior["x"].values.reshape(-1, 2))
    assert torch.allclose(x.mean(0).float(), MEAN, atol=0.15)
    assert torch.allclose(torch.cov(x.T).float(), COV, atol=0.15)


def test_hmc_kernel_runs():
    idata = energy_mcmc(gauss_energy, torch.zeros(2, 2), kernel="hmc", num_samples=50,
                        warmup_steps=30, num_steps=5, seed=0)
    assert idata.posterior["x"].shape == (2, 50, 2)
    assert idata.posterior.attrs["kernel"] == "hmc"
